/**
 * @holdfast/core: what every RPC handler of both services follows, whichever
 * transport called it (gRPC or Connect): who the caller is, how input is checked,
 * which business error answers what (errors.proto), how a request_id makes a call
 * idempotent, how pages are tokenised and how stored values become contract values; and the
 * flash-sale fairness metrics (pure functions over rows the report loads).
 */
export * from "./auth.js";
export * from "./call.js";
export * from "./errors.js";
export * from "./validate.js";
export * from "./page-token.js";
export * from "./idempotency.js";
export * from "./proto-values.js";
export * from "./hold-terms.js";
export * from "./fairness.js";
export * from "./clock.js";
export * from "./random.js";
