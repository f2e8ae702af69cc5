#!/usr/bin/env -S node --enable-source-maps --max-semi-space-size=64
import { runService } from "@holdfast/runtime";
import { loadReservationServiceConfig } from "./config.js";
import { startReservationService } from "./server.js";

await runService("reservation-service", loadReservationServiceConfig, startReservationService);
