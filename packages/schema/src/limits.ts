/**
 * The limits of the Holdfast contract that code or the schema's CHECK constraints still
 * need (a client's bad value must be INVALID_ARGUMENT from the service, never a
 * constraint violation surfacing as INTERNAL).
 *
 * proto/ is the source of truth. The static limits of request fields are declared
 * there as protovalidate annotations and enforced from them before an RPC runs
 * (@holdfast/runtime validateService): they are not repeated here unless code needs
 * them for something else (page tokens, policy fields, summed lines, values the
 * server produces) or a CHECK mirrors them. Every value in the first sections is
 * copied from a doc comment or annotation of
 * proto/holdfast/inventory/v1/{resources,service}.proto or
 * proto/holdfast/worker/v1/worker.proto (named on each constant). To change a limit,
 * change the contract first, then this file and the CHECKs in the migrations that
 * name it. Nothing here or in the annotations may be looser than a CHECK: the service
 * must refuse at least everything the database refuses.
 */

// ---------------------------------------------------------------------------------------
// Identifiers (resources.proto, IDENTIFIERS)
// ---------------------------------------------------------------------------------------

/** SKU code: 1..64 characters (skus_code_format). */
export const SKU_CODE_MAX_LENGTH = 64;
/**
 * SKU code: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, case-sensitive (skus_code_format).
 * Never contains '/', ':', ',' or whitespace. SKU order is byte-wise (COLLATE "C"),
 * which for these ASCII codes is JavaScript's default string order.
 */
export const SKU_CODE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** SKU name: 1..200 Unicode characters (code points), not blank (skus_name_valid). */
export const SKU_NAME_MAX_LENGTH = 200;

/** Customer id: 1..128 characters (*_customer_id_format). */
export const CUSTOMER_ID_MAX_LENGTH = 128;
/** Customer id: `^[A-Za-z0-9._:@-]+$` (*_customer_id_format). */
export const CUSTOMER_ID_PATTERN = /^[A-Za-z0-9._:@-]+$/;

/** Reservation, waitlist entry, reconciliation run and snapshot run ids: canonical lowercase UUIDs. */
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// ---------------------------------------------------------------------------------------
// Quantities and stock (resources.proto, service.proto)
// ---------------------------------------------------------------------------------------

/** Per-line quantity after summing lines of one SKU: at most 1,000,000 (each line's own range is annotated). */
export const QUANTITY_MAX = 1_000_000;

// ---------------------------------------------------------------------------------------
// SkuPolicy (resources.proto). Zero = server default / no limit, stored as NULL.
// ---------------------------------------------------------------------------------------

/**
 * Policy durations are whole seconds (a fraction is BAD_REQUEST); stored as
 * milliseconds (skus_policy_durations_whole_seconds).
 */
export const POLICY_DURATION_RESOLUTION_MS = 1_000;
/** max_units_per_customer when set: 1..1,000,000 (skus_max_units_per_customer_range). */
export const MAX_UNITS_PER_CUSTOMER_MAX = 1_000_000;
/** customer_attempt_rate_limit.max_attempts when set: 1..1,000,000. */
export const RATE_LIMIT_MAX_ATTEMPTS_MAX = 1_000_000;
/** customer_attempt_rate_limit.window: 1 s..1 h (skus_rate_limit_window_range). */
export const RATE_LIMIT_WINDOW_MIN_MS = 1_000;
export const RATE_LIMIT_WINDOW_MAX_MS = 3_600_000;
/** max_hold_lifetime when set: from the effective max_hold_ttl to 7 days. */
export const MAX_HOLD_LIFETIME_MAX_MS = 7 * 24 * 3_600_000;
/** stock_buckets when set: 1..256. */
export const STOCK_BUCKETS_MAX = 256;
/** max_waitlist_length when set: 1..1,000,000. */
export const MAX_WAITLIST_LENGTH_MAX = 1_000_000;

// ---------------------------------------------------------------------------------------
// Waitlist, streams, lists (service.proto)
// ---------------------------------------------------------------------------------------

/** heartbeat_interval of WatchAvailability / WatchWaitlist: default 15 s (bounds: annotations). */
export const HEARTBEAT_INTERVAL_DEFAULT_MS = 15_000;

/** Pagination (AIP-158): 0 = 50; above 1000 treated as 1000; negative is INVALID_ARGUMENT. */
export const PAGE_SIZE_DEFAULT = 50;
export const PAGE_SIZE_MAX = 1_000;

/** GetFlashSaleReportRequest: end at most 31 days after start. */
export const FLASH_SALE_WINDOW_MAX_MS = 31 * 24 * 3_600_000;
/** GetFlashSaleReportRequest.timeline_interval: at most 10,000 buckets over the window. */
export const TIMELINE_BUCKETS_MAX = 10_000;
/** GetFlashSaleReportRequest.top_customers_limit: 0 = 10; capped at 100. */
export const TOP_CUSTOMERS_DEFAULT = 10;
export const TOP_CUSTOMERS_MAX = 100;

// ---------------------------------------------------------------------------------------
// Worker (worker.proto)
// ---------------------------------------------------------------------------------------

/** RunReconciliationRequest.skus and TakeSnapshotRequest.skus: 0..10,000 (reconciliation_runs_sku_filter_size). */
export const WORKER_SKUS_MAX = 10_000;
/** RunExpirySweepRequest.batch_size: 0 = the server's batch size, default 500. */
export const SWEEP_BATCH_SIZE_DEFAULT = 500;

// ---------------------------------------------------------------------------------------
// Server settings: defaults the contract documents ("unless configured"). They are
// configuration, not hard limits: nothing in the schema depends on them.
// ---------------------------------------------------------------------------------------

/** CreateHoldRequest.lines: 1 to the server's maximum, default 50 (also CreateAllocation). */
export const LINES_PER_REQUEST_MAX_DEFAULT = 50;
/** Minimum hold TTL: 1 s unless configured. */
export const HOLD_TTL_MIN_DEFAULT_MS = 1_000;
/** Maximum hold TTL: 1 h unless configured. */
export const HOLD_TTL_MAX_DEFAULT_MS = 3_600_000;
/** Default hold TTL: 15 min unless configured (capped at the effective max_hold_ttl). */
export const DEFAULT_HOLD_TTL_DEFAULT_MS = 15 * 60_000;
/** Max hold lifetime: 2 h unless configured (never less than the effective max_hold_ttl). */
export const MAX_HOLD_LIFETIME_DEFAULT_MS = 2 * 3_600_000;
/** Idempotency records are kept for a server window, default 24 h. */
export const IDEMPOTENCY_WINDOW_DEFAULT_MS = 24 * 3_600_000;

// ---------------------------------------------------------------------------------------
// Schema-internal limits (not client input, not in the contract): values the server
// itself produces. Exported so that the code producing them can stay within the CHECKs.
// ---------------------------------------------------------------------------------------

/** Principals ("<role>:<subject>"), actors, worker ids, hosts, versions: 1..256 characters. */
export const INTERNAL_IDENTIFIER_MAX_LENGTH = 256;
/** idempotency_records_status_code_valid: a gRPC status code. */
export const GRPC_STATUS_CODE_MAX = 16;

// ---------------------------------------------------------------------------------------
// Validators (same rules as the CHECKs)
// ---------------------------------------------------------------------------------------

/** True when `code` satisfies skus_code_format. */
export function isValidSkuCode(code: string): boolean {
  return code.length >= 1 && code.length <= SKU_CODE_MAX_LENGTH && SKU_CODE_PATTERN.test(code);
}

/**
 * True when `name` satisfies the contract: 1..200 code points (what PostgreSQL's
 * char_length counts), with at least one non-whitespace character. JavaScript's \s is
 * a superset of the ASCII whitespace skus_name_valid trims, so every name accepted
 * here is accepted by the database. NUL is refused: PostgreSQL text cannot hold it.
 */
export function isValidSkuName(name: string): boolean {
  const codePoints = [...name].length;
  return codePoints >= 1 && codePoints <= SKU_NAME_MAX_LENGTH && /\S/u.test(name) && !name.includes('\u0000');
}

/** True when `id` satisfies the *_customer_id_format constraints. */
export function isValidCustomerId(id: string): boolean {
  return id.length >= 1 && id.length <= CUSTOMER_ID_MAX_LENGTH && CUSTOMER_ID_PATTERN.test(id);
}
