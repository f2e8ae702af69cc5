import { Code, ConnectError } from "@connectrpc/connect";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { ErrorReason } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { isStalePlan } from "@holdfast/schema";

/** `google.rpc.ErrorInfo.domain` of every error Holdfast raises. */
export const ERROR_DOMAIN = "holdfast.inventory.v1";

type Detail = { desc: DescMessage; value: MessageInitShape<DescMessage> };

export interface FieldViolation {
  /** Path of the field in the request, e.g. `lines[2].quantity`. */
  field: string;
  description: string;
  /** Machine-readable reason of this violation, e.g. `OUT_OF_RANGE`. */
  reason?: string;
}

/**
 * The one way Holdfast raises an RPC error: a gRPC status code, a machine
 * readable reason (a value of `holdfast.inventory.v1.ErrorReason`, sent as its
 * name in `google.rpc.ErrorInfo.reason`), a message for humans, and optional
 * further details (see proto/holdfast/inventory/v1/errors.proto).
 * Both transports encode it the same way (`grpc-status-details-bin` on gRPC,
 * the `details` array on Connect).
 */
export function rpcError(
  code: Code,
  reason: ErrorReason,
  message: string,
  options: { metadata?: Record<string, string>; details?: Detail[]; cause?: unknown } = {},
): ConnectError {
  const errorInfo: Detail = {
    desc: ErrorInfoSchema,
    value: { reason: ErrorReason[reason], domain: ERROR_DOMAIN, metadata: options.metadata ?? {} },
  };
  return new ConnectError(message, code, undefined, [errorInfo, ...(options.details ?? [])], options.cause);
}

/** `google.rpc.RetryInfo`: when retrying the same request may succeed. */
export function retryAfter(ms: number): Detail {
  return { desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } } };
}

/** How long an OVERLOADED caller is asked to wait before retrying. */
export const OVERLOADED_RETRY_MS = 200;

/**
 * UNAVAILABLE / OVERLOADED (errors.proto): the server sheds load, too many calls
 * in flight or no database connection free in time. Retry after the delay,
 * preferably on another replica; nothing was done.
 */
export function overloaded(why: string, cause?: unknown): ConnectError {
  return rpcError(Code.Unavailable, ErrorReason.OVERLOADED, `the server is overloaded (${why}); retry shortly, preferably on another replica`, {
    cause,
    details: [retryAfter(OVERLOADED_RETRY_MS)],
  });
}

/**
 * Field violations sent at most (errors.proto, LISTS IN ERRORS: details travel in
 * gRPC trailers, which clients limit to a few KiB); ErrorInfo metadata "omitted"
 * says how many more there were.
 */
const VIOLATIONS_SHOWN = 20;

/** INVALID_ARGUMENT with `google.rpc.BadRequest` naming the bad fields (the first 20). */
export function invalidArgument(violations: readonly FieldViolation[], message?: string): ConnectError {
  const shown = violations.slice(0, VIOLATIONS_SHOWN);
  const left = violations.length - shown.length;
  const summary = message ?? shown.map((v) => `${v.field}: ${v.description}`).join("; ") + (left > 0 ? `; and ${left} more` : "");
  return rpcError(Code.InvalidArgument, ErrorReason.BAD_REQUEST, summary, {
    metadata: left > 0 ? { omitted: String(left) } : {},
    details: [
      {
        desc: BadRequestSchema,
        value: {
          fieldViolations: shown.map((v) => ({ field: v.field, description: v.description, reason: v.reason ?? "" })),
        },
      },
    ],
  });
}

/** UNIMPLEMENTED for an RPC whose behaviour has not landed yet. */
export function unimplemented(methodName: string): ConnectError {
  return rpcError(Code.Unimplemented, ErrorReason.NOT_IMPLEMENTED, `${methodName} is not implemented yet`);
}

// SQLSTATE classes and codes that are the database telling us "try again",
// not "you made a mistake" and not "we have a bug".
const SQLSTATE_LOCK_NOT_AVAILABLE = "55P03";
const SQLSTATE_SERIALIZATION_FAILURE = "40001";
const SQLSTATE_DEADLOCK_DETECTED = "40P01";
const SQLSTATE_QUERY_CANCELED = "57014";
const SQLSTATE_ADMIN_SHUTDOWN = "57P01";
const SQLSTATE_CRASH_SHUTDOWN = "57P02";
const SQLSTATE_CANNOT_CONNECT_NOW = "57P03";
const SQLSTATE_TOO_MANY_CONNECTIONS = "53300";
const SQLSTATE_UNIQUE_VIOLATION = "23505";
const SQLSTATE_CHECK_VIOLATION = "23514";
/** Class 22, data exception: a value the database cannot take (bad uuid, out of range). */
const SQLSTATE_CLASS_DATA_EXCEPTION = "22";
const NODE_CONNECTION_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH"]);

/** A statement gave up waiting for a lock after lock_timeout (SQLSTATE 55P03). */
export function isLockTimeout(err: unknown): boolean {
  return errorCodeOf(err) === SQLSTATE_LOCK_NOT_AVAILABLE;
}

function errorCodeOf(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}

function isPoolTimeout(err: unknown): boolean {
  return err instanceof Error && err.name === "KnexTimeoutError";
}

function isConnectionLoss(err: unknown): boolean {
  const code = errorCodeOf(err);
  if (code !== undefined && (NODE_CONNECTION_ERRORS.has(code) || code.startsWith("08"))) return true;
  // "not queryable": pg's answer to a statement on a client whose connection already
  // failed, e.g. knex's ROLLBACK after the backend was terminated mid-transaction
  // (knex then rejects with "ROLLBACK - Client has encountered a connection error and
  // is not queryable" instead of the original 57P01).
  return err instanceof Error && /Connection terminated|connection is closed|Client was closed|is not queryable/i.test(err.message);
}

/** Class 53, insufficient resources (disk full, out of memory, too many connections). */
const SQLSTATE_CLASS_INSUFFICIENT_RESOURCES = "53";

/**
 * The database saying "not now" about work that is itself fine: a lock wait or a
 * statement timed out, a serialization failure or deadlock, the database shutting
 * down or short of resources, a lost or refused connection, a statement prepared
 * before a migration changed its result (query.ts), no pooled connection in
 * time. The same work may succeed later. Constraint violations are not among them:
 * the same work would meet them again.
 */
export function isTransientDatabaseError(err: unknown): boolean {
  if (isStalePlan(err)) return true;
  const code = errorCodeOf(err);
  switch (code) {
    case SQLSTATE_LOCK_NOT_AVAILABLE:
    case SQLSTATE_SERIALIZATION_FAILURE:
    case SQLSTATE_DEADLOCK_DETECTED:
    case SQLSTATE_QUERY_CANCELED:
    case SQLSTATE_ADMIN_SHUTDOWN:
    case SQLSTATE_CRASH_SHUTDOWN:
    case SQLSTATE_CANNOT_CONNECT_NOW:
      return true;
  }
  if (code?.startsWith(SQLSTATE_CLASS_INSUFFICIENT_RESOURCES)) return true;
  return isPoolTimeout(err) || isConnectionLoss(err);
}

/**
 * Maps anything thrown by an RPC implementation to a ConnectError. Errors that
 * are already ConnectErrors pass through; transient database conditions become
 * ABORTED / UNAVAILABLE with a reason so clients know to retry; everything else
 * is INTERNAL with a generic message (the cause is kept for the log, never sent).
 *
 * Domain code raises its own precise errors; this is the net under it. In
 * particular a CHECK or unique violation that reaches here is the database's
 * last line of defence catching a race the code lost (two requests that each
 * looked fine alone): the transaction rolled back and a retry will see the new
 * state, so it is ABORTED, not the caller's fault and not a crash.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const code = errorCodeOf(err);
  if (code?.startsWith(SQLSTATE_CLASS_DATA_EXCEPTION) && code.length === 5) {
    return invalidArgumentFromDatabase(err);
  }
  if (isStalePlan(err)) {
    // A statement prepared before a migration; its connection is dropped (query.ts).
    return rpcError(Code.Aborted, ErrorReason.TRANSACTION_ABORTED, "the schema changed under the transaction; retry with the same request id", {
      cause: err,
      details: [retryAfter(50)],
    });
  }
  switch (code) {
    case SQLSTATE_LOCK_NOT_AVAILABLE:
      return rpcError(Code.Aborted, ErrorReason.LOCK_TIMEOUT, "timed out waiting for a row lock; retry with the same request id", {
        cause: err,
        details: [retryAfter(50)],
      });
    case SQLSTATE_SERIALIZATION_FAILURE:
    case SQLSTATE_DEADLOCK_DETECTED:
    case SQLSTATE_CHECK_VIOLATION:
    case SQLSTATE_UNIQUE_VIOLATION:
      return rpcError(Code.Aborted, ErrorReason.TRANSACTION_ABORTED, "the transaction conflicted with another; retry with the same request id", {
        cause: err,
        details: [retryAfter(50)],
      });
    case SQLSTATE_QUERY_CANCELED:
      // statement_timeout or a cancel on behalf of a caller whose deadline passed.
      return rpcError(Code.DeadlineExceeded, ErrorReason.TRANSACTION_ABORTED, "the statement was cancelled before it finished", { cause: err });
    case SQLSTATE_ADMIN_SHUTDOWN:
    case SQLSTATE_CRASH_SHUTDOWN:
    case SQLSTATE_CANNOT_CONNECT_NOW:
    case SQLSTATE_TOO_MANY_CONNECTIONS:
      return rpcError(Code.Unavailable, ErrorReason.DATABASE_UNAVAILABLE, "the database is unavailable; retry shortly", {
        cause: err,
        details: [retryAfter(500)],
      });
  }
  if (isPoolTimeout(err)) return overloaded("no database connection free in time", err);
  if (isConnectionLoss(err)) {
    return rpcError(Code.Unavailable, ErrorReason.DATABASE_UNAVAILABLE, "the database is unavailable; retry shortly", {
      cause: err,
      details: [retryAfter(500)],
    });
  }
  return rpcError(Code.Internal, ErrorReason.INTERNAL_ERROR, "internal error", { cause: err });
}

/** A request whose bytes are not a message of its type (every transport answers it alike). */
export function undecodableRequest(reason: string): ConnectError {
  return invalidArgument([{ field: "", description: `the request is not a valid protobuf message: ${reason}` }]);
}

function invalidArgumentFromDatabase(err: unknown): ConnectError {
  return rpcError(Code.InvalidArgument, ErrorReason.BAD_REQUEST, "a value in the request is not acceptable", { cause: err });
}

/** True for codes that mean "the server failed", as opposed to "the caller asked for something refused". */
export function isServerFault(code: Code): boolean {
  return code === Code.Internal || code === Code.Unknown || code === Code.DataLoss;
}
