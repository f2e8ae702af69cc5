/**
 * The request log (issue 7): every CreateHold attempt leaves one `hold_attempts` row
 * per requested SKU (packages/schema migration 0002), granted or not, for the
 * flash-sale report's fairness metrics.
 *
 * Off the hot path: the rows are written after the response is decided, outside the
 * reservation's transaction, batched (one multi-row INSERT per 50 ms window per
 * process, through the same Coalescer the announcements use). A hold's transaction
 * never waits for its log row, and a flash sale costs the database one INSERT per
 * window instead of one per attempt. The price: rows not yet written when a process
 * dies are lost (the report then undercounts attempts; holds, the ledger and stock
 * are unaffected). Shutdown drains the buffer before the pool closes.
 *
 * Bounded: at most MAX_PENDING rows wait; past that (the database cannot keep up) new
 * rows are dropped and counted in a warning, never queued without bound.
 */
import { ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { LockingStrategy, type CreateHoldRequest, type CreateHoldResponse } from "@holdfast/contracts";
import { toConnectError, type Logger } from "@holdfast/runtime";
import { query, skuOrder, type Db } from "@holdfast/schema";
import { isoMicros, wasReplayed } from "@holdfast/core";
import { Coalescer } from "./announcers.js";

/** One row of hold_attempts. */
export interface AttemptRow {
  attemptId: string;
  /** Arrival, µs since the epoch on the host's clock (nowMicros: finer than Date). */
  receivedAtUs: number;
  latencyUs: number;
  caller: string;
  customerId: string;
  requestId: string | null;
  sku: string;
  quantity: number;
  lockingStrategy: "OPTIMISTIC" | "PESSIMISTIC" | null;
  outcome: "GRANTED" | "REFUSED" | "WAITLISTED";
  reason: string | null;
  reservationId: string | null;
  waitlistEntryId: string | null;
  replayed: boolean;
}

/** Rows waiting to be written, at most; beyond, new rows are dropped (and counted). */
const MAX_PENDING = 100_000;

const INSERT = `
INSERT INTO hold_attempts (attempt_id, received_at, latency_us, caller, customer_id, request_id, sku_code, quantity,
                           locking_strategy, outcome, reason, reservation_id, waitlist_entry_id, replayed)
SELECT * FROM unnest(?::uuid[], ?::timestamptz[], ?::int[], ?::text[], ?::text[], ?::text[], ?::text[], ?::int[],
                     ?::text[], ?::text[], ?::text[], ?::uuid[], ?::uuid[], ?::boolean[])`;

export class AttemptLog {
  private readonly coalescer: Coalescer<AttemptRow[]>;
  private pending = 0;
  private dropped = 0;

  /** `enabled` false (REQUEST_LOG=false): nothing is recorded. */
  constructor(db: Db, private readonly logger: Logger, private readonly enabled = true) {
    this.coalescer = new Coalescer<AttemptRow[]>(
      (pending, rows) => (pending === undefined ? rows : (pending.push(...rows), pending)),
      async (rows) => {
        this.pending -= rows.length;
        await query(db, INSERT, columns(rows));
      },
      (err) => logger.warn({ err }, "could not write hold attempts to the request log (the flash-sale report will undercount them)"),
    );
  }

  /** Queues rows; never throws, never waits. */
  record(rows: AttemptRow[]): void {
    if (!this.enabled || rows.length === 0) return;
    if (this.pending + rows.length > MAX_PENDING) {
      if (this.dropped++ % 1000 === 0) this.logger.warn({ dropped: this.dropped }, "request log backlog full: dropping hold attempts");
      return;
    }
    this.pending += rows.length;
    this.coalescer.add(rows);
  }

  /** Writes what is queued (shutdown, before the pool closes; tests, before reading the log). */
  drain(): Promise<void> {
    return this.coalescer.drain();
  }
}

function columns(rows: readonly AttemptRow[]): unknown[] {
  const pick = <K extends keyof AttemptRow>(k: K) => rows.map((r) => r[k]);
  return [
    pick("attemptId"),
    pick("receivedAtUs").map(isoMicros),
    pick("latencyUs"),
    pick("caller"),
    pick("customerId"),
    pick("requestId"),
    pick("sku"),
    pick("quantity"),
    pick("lockingStrategy"),
    pick("outcome"),
    pick("reason"),
    pick("reservationId"),
    pick("waitlistEntryId"),
    pick("replayed"),
  ];
}

/** What every row of one attempt shares. */
export interface AttemptContext {
  attemptId: string;
  receivedAtUs: number;
  latencyUs: number;
  caller: string;
  customerId: string;
}

/** The requested lines, duplicates summed (as the hold does), in SKU order; unusable lines as they came. */
function requestedLines(req: CreateHoldRequest): Array<{ sku: string; quantity: number }> {
  const bySku = new Map<string, number>();
  for (const line of req.lines) bySku.set(line.sku, Math.min(2 ** 31 - 1, (bySku.get(line.sku) ?? 0) + Math.max(0, line.quantity)));
  return skuOrder(bySku.keys()).map((sku) => ({ sku, quantity: bySku.get(sku)! }));
}

const STRATEGY: Partial<Record<LockingStrategy, "OPTIMISTIC" | "PESSIMISTIC">> = {
  [LockingStrategy.OPTIMISTIC]: "OPTIMISTIC",
  [LockingStrategy.PESSIMISTIC]: "PESSIMISTIC",
};

/** The rows of an attempt that was answered: GRANTED (a hold) or WAITLISTED (entries for the short SKUs). */
export function answeredAttempt(ctx: AttemptContext, req: CreateHoldRequest, response: CreateHoldResponse): AttemptRow[] {
  const hold = response.reservation;
  const entries = new Map(response.waitlistEntries.map((e) => [e.sku, e.id]));
  return requestedLines(req).map(({ sku, quantity }) => ({
    ...ctx,
    requestId: req.requestId,
    sku,
    quantity,
    lockingStrategy: hold !== undefined ? (STRATEGY[hold.lockingStrategy] ?? null) : (STRATEGY[req.lockingStrategy] ?? null),
    outcome: hold !== undefined ? "GRANTED" : "WAITLISTED",
    // A waitlisted attempt could not be granted because stock was short (migration 0002).
    reason: hold !== undefined ? null : "INSUFFICIENT_STOCK",
    reservationId: hold?.id ?? null,
    waitlistEntryId: entries.get(sku) ?? null,
    replayed: response.replayed,
  }));
}

/** The rows of an attempt that failed, with the ErrorInfo reason it was answered with. */
export function refusedAttempt(ctx: AttemptContext, req: CreateHoldRequest, err: unknown): AttemptRow[] {
  const error = err instanceof ConnectError ? err : toConnectError(err);
  const reason = error.findDetails(ErrorInfoSchema)[0]?.reason ?? "INTERNAL";
  return requestedLines(req).map(({ sku, quantity }) => ({
    ...ctx,
    requestId: req.requestId === "" ? null : req.requestId,
    sku,
    quantity,
    lockingStrategy: STRATEGY[req.lockingStrategy] ?? null,
    outcome: "REFUSED",
    reason,
    reservationId: null,
    waitlistEntryId: null,
    // A refusal replayed from the idempotency record is not a new attempt.
    replayed: wasReplayed(error),
  }));
}

