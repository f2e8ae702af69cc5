/**
 * The business errors of the reservation logic, each with the status code, reason
 * and details that errors.proto promises for it. Transport-independent: thrown as
 * ConnectErrors, which both transports encode the same way.
 */
import { Code, type ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "@holdfast/contracts";
import { BadRequestSchema, PreconditionFailureSchema, QuotaFailureSchema, ResourceInfoSchema } from "@holdfast/contracts/rpc";
import { retryAfter, rpcError } from "@holdfast/runtime";
import { skuOrder } from "@holdfast/schema";

const SKU_RESOURCE = "holdfast.inventory.v1.Sku";
const RESERVATION_RESOURCE = "holdfast.inventory.v1.Reservation";
const RECONCILIATION_RUN_RESOURCE = "holdfast.worker.v1.ReconciliationRun";

const precondition = (violations: { type: string; subject: string; description: string }[]) => ({
  desc: PreconditionFailureSchema,
  value: { violations },
});

const badRequestField = (field: string, description: string) => ({
  desc: BadRequestSchema,
  value: { fieldViolations: [{ field, description }] },
});

/**
 * At most this many items are named by one error (errors.proto, LISTS IN ERRORS):
 * gRPC carries details in trailers, and clients refuse trailers beyond a few KiB
 * (8 KiB by default in C-core), which a 1000-SKU request could otherwise exceed.
 */
const LISTED_MAX = 20;

/** The first LISTED_MAX items, and metadata saying how many were left out. */
function listed<T>(items: readonly T[]): { shown: T[]; omitted: Record<string, string>; more: string } {
  const shown = items.slice(0, LISTED_MAX);
  const left = items.length - shown.length;
  return left > 0 ? { shown, omitted: { omitted: String(left) }, more: ` and ${left} more` } : { shown, omitted: {}, more: "" };
}

export function skuNotFound(codes: readonly string[]): ConnectError {
  const sorted = skuOrder(codes);
  const { shown, omitted, more } = listed(sorted);
  return rpcError(Code.NotFound, ErrorReason.SKU_NOT_FOUND, `unknown SKU${sorted.length > 1 ? "s" : ""}: ${shown.join(", ")}${more}`, {
    metadata: { sku: shown.join(","), ...omitted },
    details: shown.map((code) => ({ desc: ResourceInfoSchema, value: { resourceType: SKU_RESOURCE, resourceName: code, description: "no such SKU" } })),
  });
}

export function skuAlreadyExists(code: string): ConnectError {
  return rpcError(Code.AlreadyExists, ErrorReason.SKU_ALREADY_EXISTS, `SKU ${code} already exists`, {
    metadata: { sku: code },
    details: [{ desc: ResourceInfoSchema, value: { resourceType: SKU_RESOURCE, resourceName: code, description: "already exists" } }],
  });
}

export function reservationNotFound(id: string): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.RESERVATION_NOT_FOUND, `no reservation ${id}`, {
    metadata: { reservation_id: id },
    details: [{ desc: ResourceInfoSchema, value: { resourceType: RESERVATION_RESOURCE, resourceName: id, description: "no such reservation" } }],
  });
}

export function reconciliationRunNotFound(id: string): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.RECONCILIATION_RUN_NOT_FOUND, `no reconciliation run ${id}`, {
    metadata: { run_id: id },
    details: [{ desc: ResourceInfoSchema, value: { resourceType: RECONCILIATION_RUN_RESOURCE, resourceName: id, description: "no such reconciliation run" } }],
  });
}

/** FAILED_PRECONDITION / RECONCILIATION_IN_PROGRESS: a RUNNING run with a live lease overlaps the request. */
export function reconciliationInProgress(runId: string, workerId: string): ConnectError {
  const description = `reconciliation run ${runId} is RUNNING on worker ${workerId} and overlaps the requested SKUs`;
  return rpcError(Code.FailedPrecondition, ErrorReason.RECONCILIATION_IN_PROGRESS, `${description}; poll it with GetReconciliationRun`, {
    metadata: { run_id: runId },
    details: [precondition([{ type: "STATUS", subject: `reconciliation_run/${runId}`, description }])],
  });
}

export interface ShortLine {
  sku: string;
  requested: number;
  available: number;
}

/** FAILED_PRECONDITION / INSUFFICIENT_STOCK naming every short line, in SKU order. */
export function insufficientStock(short: readonly ShortLine[]): ConnectError {
  const { shown: lines, omitted, more } = listed([...short].sort((a, b) => (a.sku < b.sku ? -1 : 1)));
  return rpcError(
    Code.FailedPrecondition,
    ErrorReason.INSUFFICIENT_STOCK,
    `insufficient stock: ${lines.map((l) => `${l.sku} (requested ${l.requested}, available ${l.available})`).join(", ")}${more}`,
    {
      metadata: { sku: lines.map((l) => l.sku).join(","), ...omitted },
      details: [
        precondition(lines.map((l) => ({ type: "STOCK", subject: `sku/${l.sku}`, description: `requested ${l.requested}, available ${l.available}` }))),
      ],
    },
  );
}

/** FAILED_PRECONDITION / INVALID_TRANSITION: the reservation's status or type forbids the call. */
export function invalidTransition(r: { id: string; status: string; type: string }, method: string, needs: string): ConnectError {
  const description = `status is ${r.status}${r.type === "ALLOCATION" ? " (a direct allocation)" : ""}; ${method} needs ${needs}`;
  return rpcError(Code.FailedPrecondition, ErrorReason.INVALID_TRANSITION, `reservation ${r.id}: ${description}`, {
    metadata: { reservation_id: r.id, status: r.status, type: r.type },
    details: [precondition([{ type: "STATUS", subject: `reservation/${r.id}`, description }])],
  });
}

export function holdExpired(id: string, expiresAt: Date): ConnectError {
  const when = expiresAt.toISOString();
  return rpcError(Code.FailedPrecondition, ErrorReason.HOLD_EXPIRED, `hold ${id} expired at ${when}`, {
    metadata: { reservation_id: id, expire_time: when },
    details: [precondition([{ type: "EXPIRY", subject: `reservation/${id}`, description: `expired at ${when}` }])],
  });
}

export function holdLifetimeExceeded(id: string, maxExpiresAt: Date): ConnectError {
  const when = maxExpiresAt.toISOString();
  return rpcError(Code.FailedPrecondition, ErrorReason.HOLD_LIFETIME_EXCEEDED, `hold ${id} cannot live past ${when}`, {
    metadata: { reservation_id: id, max_expire_time: when },
    details: [precondition([{ type: "EXPIRY", subject: `reservation/${id}`, description: `lifetime ends at ${when}` }])],
  });
}

export function stockBelowCommitted(sku: string, onHand: number, committed: number): ConnectError {
  const description = `on_hand would be ${onHand}, reserved + allocated is ${committed}`;
  return rpcError(Code.FailedPrecondition, ErrorReason.STOCK_BELOW_COMMITTED, `${sku}: ${description}`, {
    metadata: { sku, on_hand: String(onHand), committed: String(committed) },
    details: [precondition([{ type: "STOCK", subject: `sku/${sku}`, description }])],
  });
}

export function versionMismatch(sku: string, expected: number, current: number): ConnectError {
  return rpcError(Code.Aborted, ErrorReason.VERSION_MISMATCH, `${sku} is at version ${current}, not ${expected}; re-read before deciding`, {
    metadata: { sku, expected_version: String(expected), current_version: String(current) },
  });
}

/**
 * ABORTED / LOCK_TIMEOUT (SQLSTATE 55P03 after lock_timeout), with the SKUs (and the
 * reservation) whose rows were waited for. Not recorded: retry with the same id.
 */
export function lockTimeout(about: { skus: readonly string[]; reservationId?: string }, cause?: unknown): ConnectError {
  const metadata: Record<string, string> = { sku: about.skus.join(",") };
  if (about.reservationId) metadata.reservation_id = about.reservationId;
  return rpcError(Code.Aborted, ErrorReason.LOCK_TIMEOUT, "timed out waiting for a row lock held by other requests; retry with the same request id", {
    metadata,
    details: [retryAfter(50)],
    cause,
  });
}

export function conflictRetriesExhausted(skus: readonly string[], attempts: number): ConnectError {
  return rpcError(
    Code.Aborted,
    ErrorReason.CONFLICT_RETRIES_EXHAUSTED,
    `lost ${attempts} compare-and-set races on ${skus.join(", ")} although stock was available; retry with the same request id`,
    { metadata: { sku: skus.join(","), attempts: String(attempts) }, details: [retryAfter(20)] },
  );
}

export function requestInProgress(requestId: string): ConnectError {
  return rpcError(
    Code.Aborted,
    ErrorReason.REQUEST_IN_PROGRESS,
    `a request with request_id ${requestId} is still executing; retry with the same request_id to get its outcome`,
    { metadata: { request_id: requestId }, details: [retryAfter(100)] },
  );
}

/** Same-id different request, or an id that stays attached to a reservation. */
export function idempotencyKeyReused(requestId: string, about: { originalMethod?: string; reservationId?: string; waitlistEntryId?: string }): ConnectError {
  const metadata: Record<string, string> = { request_id: requestId };
  if (about.originalMethod) metadata.original_method = about.originalMethod;
  if (about.reservationId) metadata.reservation_id = about.reservationId;
  if (about.waitlistEntryId) metadata.waitlist_entry_id = about.waitlistEntryId;
  const why = about.reservationId
    ? `is attached to reservation ${about.reservationId}`
    : about.originalMethod
      ? `was used for a different ${about.originalMethod.split("/").pop()} request`
      : "was used for a different request";
  return rpcError(Code.InvalidArgument, ErrorReason.IDEMPOTENCY_KEY_REUSED, `request_id ${requestId} ${why}; use a new request_id`, {
    metadata,
    details: [badRequestField("request_id", `already used ${about.reservationId ? "by a reservation" : "for a different request"}`)],
  });
}

export function ttlOutOfRange(field: string, ms: number, minMs: number, maxMs: number, sku?: string): ConnectError {
  const description = `must be between ${minMs / 1000}s and ${maxMs / 1000}s${sku ? ` for SKU ${sku}` : ""}`;
  const metadata: Record<string, string> = { min_ttl_ms: String(minMs), max_ttl_ms: String(maxMs) };
  if (sku) metadata.sku = sku;
  return rpcError(Code.InvalidArgument, ErrorReason.TTL_OUT_OF_RANGE, `${field}: ${ms / 1000}s ${description}`, {
    metadata,
    details: [badRequestField(field, description)],
  });
}

export function invalidPageToken(why: string): ConnectError {
  return rpcError(Code.InvalidArgument, ErrorReason.INVALID_PAGE_TOKEN, `page_token: ${why}`, {
    details: [badRequestField("page_token", why)],
  });
}

export function invalidUpdateMask(index: number, path: string, why: string): ConnectError {
  // The caller's path is quoted, but never more than a field name's worth of it.
  const quoted = path.length > 64 ? `${path.slice(0, 64)}…` : path;
  return rpcError(Code.InvalidArgument, ErrorReason.INVALID_UPDATE_MASK, `update_mask.paths[${index}] "${quoted}": ${why}`, {
    details: [badRequestField(`update_mask.paths[${index}]`, why)],
  });
}

export function notImplementedFeature(feature: string, message: string): ConnectError {
  return rpcError(Code.Unimplemented, ErrorReason.NOT_IMPLEMENTED, message, { metadata: { feature } });
}

/** RESOURCE_EXHAUSTED / TOO_MANY_STREAMS: the caller has `limit` open streams on this replica already. */
export function tooManyStreams(subject: string, limit: number): ConnectError {
  return rpcError(Code.ResourceExhausted, ErrorReason.TOO_MANY_STREAMS, `${subject} has ${limit} open streams, the most allowed; close one first`, {
    metadata: { limit: String(limit) },
    details: [
      { desc: QuotaFailureSchema, value: { violations: [{ subject, description: `at most ${limit} open streams per caller` }] } },
      retryAfter(1000),
    ],
  });
}

const WAITLIST_ENTRY_RESOURCE = "holdfast.inventory.v1.WaitlistEntry";

/** NOT_FOUND / WAITLIST_ENTRY_NOT_FOUND (admin and service callers; a customer gets NOT_RESOURCE_OWNER). */
export function waitlistEntryNotFound(id: string): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.WAITLIST_ENTRY_NOT_FOUND, `no waitlist entry ${id}`, {
    metadata: { waitlist_entry_id: id },
    details: [{ desc: ResourceInfoSchema, value: { resourceType: WAITLIST_ENTRY_RESOURCE, resourceName: id, description: "no such waitlist entry" } }],
  });
}

/** ALREADY_EXISTS / WAITLIST_ENTRY_ALREADY_EXISTS: one active (WAITING or PROMOTED) entry per customer and SKU. */
export function waitlistEntryAlreadyExists(sku: string, existingId: string): ConnectError {
  return rpcError(Code.AlreadyExists, ErrorReason.WAITLIST_ENTRY_ALREADY_EXISTS, `the customer already has an active waitlist entry ${existingId} for SKU ${sku}`, {
    metadata: { sku, waitlist_entry_id: existingId },
    details: [{ desc: ResourceInfoSchema, value: { resourceType: WAITLIST_ENTRY_RESOURCE, resourceName: existingId, description: "already exists" } }],
  });
}

/** FAILED_PRECONDITION / WAITLIST_DISABLED (SkuPolicy.waitlist_disabled). */
export function waitlistDisabled(sku: string): ConnectError {
  return rpcError(Code.FailedPrecondition, ErrorReason.WAITLIST_DISABLED, `SKU ${sku} has no waitlist`, { metadata: { sku } });
}

/** RESOURCE_EXHAUSTED / WAITLIST_FULL (SkuPolicy.max_waitlist_length WAITING entries already). */
export function waitlistFull(sku: string, limit: number): ConnectError {
  return rpcError(Code.ResourceExhausted, ErrorReason.WAITLIST_FULL, `the waitlist of SKU ${sku} is full (${limit} waiting)`, {
    metadata: { sku, limit: String(limit) },
  });
}

/** A SKU on which a request would take a customer past SkuPolicy.max_units_per_customer. */
export interface CustomerLimitExcess {
  sku: string;
  limit: number;
  /** The customer's active units of the SKU before the request (HELD, ALLOCATED, WAITING). */
  held: number;
  requested: number;
}

/**
 * FAILED_PRECONDITION / PER_CUSTOMER_LIMIT_EXCEEDED naming every offending SKU (SKU
 * order); metadata "sku", "limit", "held" are comma-separated lists in that order.
 */
export function perCustomerLimitExceeded(customerId: string, excess: readonly CustomerLimitExcess[]): ConnectError {
  const { shown, omitted, more } = listed([...excess].sort((a, b) => (a.sku < b.sku ? -1 : 1)));
  const say = (e: CustomerLimitExcess) => `${e.sku} (limit ${e.limit}, has ${e.held}, requested ${e.requested})`;
  return rpcError(
    Code.FailedPrecondition,
    ErrorReason.PER_CUSTOMER_LIMIT_EXCEEDED,
    `customer ${customerId} would exceed the per-customer limit: ${shown.map(say).join(", ")}${more}`,
    {
      metadata: {
        sku: shown.map((e) => e.sku).join(","),
        limit: shown.map((e) => e.limit).join(","),
        held: shown.map((e) => e.held).join(","),
        ...omitted,
      },
      details: [
        precondition(
          shown.map((e) => ({
            type: "CUSTOMER_LIMIT",
            subject: `sku/${e.sku}`,
            description: `at most ${e.limit} units per customer; the customer has ${e.held} and asked for ${e.requested} more`,
          })),
        ),
      ],
    },
  );
}

/**
 * RESOURCE_EXHAUSTED / RATE_LIMITED (SkuPolicy.customer_attempt_rate_limit) for the
 * first refusing SKU: ErrorInfo ("sku", "limit", "window_ms"), QuotaFailure for
 * "customer/<id>", RetryInfo = when the oldest admitted attempt leaves the window.
 */
export function rateLimited(customerId: string, refusal: { sku: string; maxAttempts: number; windowMs: number; retryAfterMs: number }): ConnectError {
  const subject = `customer/${customerId}`;
  const description = `at most ${refusal.maxAttempts} attempts per ${refusal.windowMs / 1000}s on SKU ${refusal.sku}`;
  return rpcError(Code.ResourceExhausted, ErrorReason.RATE_LIMITED, `${subject}: ${description}; retry in ${refusal.retryAfterMs} ms`, {
    metadata: { sku: refusal.sku, limit: String(refusal.maxAttempts), window_ms: String(refusal.windowMs) },
    details: [{ desc: QuotaFailureSchema, value: { violations: [{ subject, description }] } }, retryAfter(refusal.retryAfterMs)],
  });
}
