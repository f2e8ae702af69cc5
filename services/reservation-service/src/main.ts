#!/usr/bin/env node
import { runService } from "@holdfast/runtime";
import { loadReservationServiceConfig } from "./config.js";
import { startReservationService } from "./server.js";

await runService("reservation-service", loadReservationServiceConfig, startReservationService);
