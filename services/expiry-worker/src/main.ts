#!/usr/bin/env node
import { runService } from "@holdfast/runtime";
import { loadExpiryWorkerConfig } from "./config.js";
import { startExpiryWorker } from "./server.js";

await runService("expiry-worker", loadExpiryWorkerConfig, startExpiryWorker);
