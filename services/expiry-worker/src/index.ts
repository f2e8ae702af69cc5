export { loadExpiryWorkerConfig, type ExpiryWorkerConfig } from "./config.js";
export { startExpiryWorker, type RunningExpiryWorker } from "./server.js";
export { createExpiryWorkerService, type WorkerDeps } from "./service.js";
