#!/usr/bin/env -S node --enable-source-maps --max-semi-space-size=64
import { runService } from "@holdfast/runtime";
import { loadExpiryWorkerConfig } from "./config.js";
import { startExpiryWorker } from "./server.js";

await runService("expiry-worker", loadExpiryWorkerConfig, startExpiryWorker);
