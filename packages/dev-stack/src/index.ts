export { startEmbeddedPostgres, ensureDatabase, type EmbeddedPostgresOptions, type RunningPostgres } from "./embedded-postgres.js";
export { resolveDatabase, type ResolvedDatabase } from "./database.js";
export { EPHEMERAL_LOOPBACK_PORTS, freePort } from "./ports.js";
export { seedHolds, type SeededHold } from "./seed.js";
export { mintCallerTokens, callerRole, grpcCaller, connectCaller, type CallerTokens } from "./callers.js";
export { metricValue, scrapeMetrics, residentBytes } from "./probe.js";
