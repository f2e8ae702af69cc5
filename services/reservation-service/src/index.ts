export { loadReservationServiceConfig, type ReservationServiceConfig } from "./config.js";
export { startReservationService, type RunningReservationService } from "./server.js";
export { createInventoryReservationService, type ReservationDeps } from "./service.js";
