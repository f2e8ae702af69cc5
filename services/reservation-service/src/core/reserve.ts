/**
 * CreateHold and CreateAllocation: taking stock, all or nothing, under either
 * locking strategy. docs/concurrency.md tells the story; the rules are:
 *
 * - One transaction per attempt. Its statements, in order: claim the idempotency
 *   record and read the SKUs' policies and counters (no lock), one statement; insert
 *   the reservation and its lines and record the response; then, last, change the
 *   counters and write the ledger (see packages/schema/src/ledger.ts), in the same
 *   statement as the insert for one SKU, in the next one for several; COMMIT. A hot
 *   inventory row is therefore locked for one statement plus the commit. For one
 *   SKU the COMMIT is sent with that statement (ApplyOptions.finish: two round trips
 *   in all, BEGIN going with the claim); the statement then fails rather than commit
 *   a change its guard refused, and the attempt runs again the classic way
 *   (FinishRefused), which can look again within its transaction.
 * - PESSIMISTIC: the counter statement is guarded (`available >= q` per row) and
 *   waits for the row lock (at most lock_timeout, then ABORTED / LOCK_TIMEOUT).
 *   Several SKUs are locked in SKU order first, so overlapping batches cannot
 *   deadlock.
 * - OPTIMISTIC: the same statement, compare-and-set on the versions read at the start
 *   of the attempt. If it loses, a fresh read decides: really short -> the shortage
 *   path below; otherwise the attempt rolls back and is retried after a jittered
 *   backoff, up to the configured bound (ABORTED / CONFLICT_RETRIES_EXHAUSTED).
 * - Shortage: if expired holds could be reclaimed for the SKUs, lock the request's
 *   rows in SKU order, expire those holds in this same transaction (the in-line
 *   reclaim; deadlock rule in ledger.ts), and decide on the locked values. Otherwise
 *   the fresh read is the answer: FAILED_PRECONDITION / INSUFFICIENT_STOCK naming
 *   every short line, recorded for replay.
 * - A hot SKU (HOT_SKU_MODE_GROUP_COMMIT): its single-SKU holds are made by the SKU's
 *   batches (core/group-commit.ts), the same statements for many holds in one
 *   transaction; whatever a batch does not take, or hands back, takes the path above.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  CreateAllocationRequestSchema,
  CreateAllocationResponseSchema,
  CreateHoldRequestSchema,
  CreateHoldResponseSchema,
  InventoryReservationService,
  LockingStrategy,
  type CreateAllocationRequest,
  type CreateAllocationResponse,
  type CreateHoldRequest,
  type CreateHoldResponse,
  type Reservation,
  type ReservationLine,
} from "@holdfast/contracts";
import {
  CounterChangeRefused,
  MAX_HOLD_LIFETIME_MAX_MS,
  QUANTITY_MAX,
  applyCounterChanges,
  builtOnce,
  claimReclaimableHolds,
  commitWith,
  expireClaimedHolds,
  type Promotion,
  lockInventoryRows,
  query,
  readInventoryRows,
  skuOrder,
  type AuditOperation,
  type InventoryRow,
  type LockingStrategy as StoredStrategy,
  type ReservationRow,
  type SkuRow,
  type Db,
  PgTransaction,
} from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { answeredAttempt, refusedAttempt } from "./attempts.js";
import { enumName, nowMicros } from "@holdfast/core";
import { toReservation } from "./convert.js";
import {
  conflictRetriesExhausted,
  explainWriteError,
  insufficientStock,
  lockTimeout,
  skuNotFound,
  ttlOutOfRange,
  type ShortLine,
} from "@holdfast/core";
import { Idempotency, Refusal, idempotencyKey, type ClaimRead, type Claimed, type IdempotencyKey } from "@holdfast/core";
import type { ReservationSettings } from "./settings.js";
import { Violations, customerScope, waitlistDisabled, waitlistEntryAlreadyExists } from "@holdfast/core";
import { joinInTransaction, withPositions } from "./waitlist.js";
import { AdmissionOwed, abandonmentAwareHoldTtl, admitAttempt, customerLimitRefusal } from "./fairness-controls.js";

/** A request line after summing lines of one SKU. */
export interface Line {
  sku: string;
  quantity: number;
}

/** At most this many expired holds are reclaimed in line by one request (the sweeper does the rest). */
export const RECLAIM_LIMIT = 500;

/**
 * Sums request lines naming the same SKU (checking two lines of one SKU separately
 * against the same availability is how oversell happens), and checks what the
 * contract's annotations cannot (each line, and at least one, are checked before
 * the RPC runs): the server's maximum number of lines and the summed quantities.
 * Returns the lines in SKU order.
 */
export function summedLines(v: Violations, lines: readonly ReservationLine[], maxLines: number): Line[] {
  if (lines.length > maxLines) v.add("lines", `must have at most ${maxLines} lines`);
  const totals = new Map<string, number>();
  for (const line of lines) totals.set(line.sku, (totals.get(line.sku) ?? 0) + line.quantity);
  for (const [sku, quantity] of totals) {
    if (quantity > QUANTITY_MAX) v.add("lines", `the lines for SKU ${sku} add up to ${quantity}, more than ${QUANTITY_MAX}`);
  }
  return skuOrder(totals.keys()).map((sku) => ({ sku, quantity: totals.get(sku)! }));
}

/** The strategy of a request: its own, else the SKUs' common default, else the server's. */
export function strategyFor(requested: LockingStrategy, skus: readonly Pick<SkuRow, "default_locking_strategy">[], settings: ReservationSettings): StoredStrategy {
  const own = enumName(LockingStrategy, requested) as StoredStrategy | null;
  if (own !== null) return own;
  const defaults = new Set(skus.map((s) => s.default_locking_strategy));
  const [only] = defaults;
  return defaults.size === 1 && only !== null && only !== undefined ? only : settings.defaultLockingStrategy;
}

/** The TTL bounds of a hold on these SKUs: the smallest applicable bound wins (contract). */
export function ttlBounds(skus: readonly Pick<SkuRow, "code" | "max_hold_ttl_ms">[], settings: ReservationSettings): { minMs: number; maxMs: number; boundSku?: string } {
  let maxMs = settings.holdTtlMaxMs;
  let boundSku: string | undefined;
  for (const s of skus) {
    if (s.max_hold_ttl_ms !== null && s.max_hold_ttl_ms < maxMs) {
      maxMs = s.max_hold_ttl_ms;
      boundSku = s.code;
    }
  }
  return { minMs: settings.holdTtlMinMs, maxMs: Math.max(maxMs, settings.holdTtlMinMs), boundSku };
}

/** TTL and lifetime of a new hold. Throws INVALID_ARGUMENT / TTL_OUT_OF_RANGE for a requested TTL outside the bounds. */
export function holdTerms(skus: readonly HoldPolicy[], settings: ReservationSettings, requestedMs: number | undefined): { ttlMs: number; lifetimeMs: number } {
  const { minMs, maxMs, boundSku } = ttlBounds(skus, settings);
  if (requestedMs !== undefined && (requestedMs < minMs || requestedMs > maxMs)) throw ttlOutOfRange("ttl", requestedMs, minMs, maxMs, boundSku);
  const defaultMs = Math.min(settings.defaultHoldTtlMs, ...skus.map((s) => s.default_hold_ttl_ms ?? Infinity));
  const ttlMs = requestedMs ?? Math.max(minMs, Math.min(defaultMs, maxMs));
  const lifetimeMs = Math.min(settings.maxHoldLifetimeMs, MAX_HOLD_LIFETIME_MAX_MS, ...skus.map((s) => s.max_hold_lifetime_ms ?? Infinity));
  // "never less than the effective max_hold_ttl" (SkuPolicy.max_hold_lifetime).
  return { ttlMs, lifetimeMs: Math.max(lifetimeMs, maxMs, ttlMs) };
}

/** What to reserve. */
interface ReserveSpec {
  type: "HOLD" | "ALLOCATION";
  customerId: string;
  lines: Line[];
  ttlMs: number | undefined;
  strategy: LockingStrategy;
  /** False while a CreateHold has not been through the attempt rate limiter (allocations are not limited). */
  admitted: boolean;
}

/** An optimistic attempt lost its compare-and-set although stock was there: retry. */
class Conflict extends Error {
  constructor(readonly skus: string[]) {
    super(`compare-and-set lost on ${skus.join(", ")}`);
  }
}

/**
 * The guard refused a change sent with the COMMIT (ApplyOptions.finish): the attempt's
 * transaction rolled back, where the classic attempt would have looked again in it.
 */
class FinishRefused extends Error {
  constructor(readonly strategy: StoredStrategy) {
    super("counter change sent with the COMMIT refused");
  }
}

const HOLD_METHOD = `${InventoryReservationService.typeName}/CreateHold`;
const ALLOCATION_METHOD = `${InventoryReservationService.typeName}/CreateAllocation`;

/**
 * CreateHold, with its attempt in the request log (core/attempts.ts): one row per
 * requested SKU, whatever the answer, written after it (never part of its transaction).
 */
export async function createHold(deps: Deps, call: Call, req: CreateHoldRequest): Promise<CreateHoldResponse> {
  const receivedAtUs = nowMicros();
  const began = performance.now();
  const context = () => ({
    attemptId: randomUUID(),
    receivedAtUs,
    latencyUs: Math.round((performance.now() - began) * 1000),
    caller: call.principal.id,
    customerId: attemptCustomer(call, req),
  });
  try {
    const response = await placeHold(deps, call, req);
    deps.attempts.record(answeredAttempt(context(), req, response));
    return response;
  } catch (err) {
    deps.attempts.record(refusedAttempt(context(), req, err));
    throw err;
  }
}

/** Whose attempt it was: the customer it was made for (a customer naming someone else: the id it named). */
function attemptCustomer(call: Call, req: CreateHoldRequest): string {
  try {
    return customerScope(call.principal, req.customerId);
  } catch {
    return req.customerId;
  }
}

async function placeHold(deps: Deps, call: Call, req: CreateHoldRequest): Promise<CreateHoldResponse> {
  // A customer holds for itself only (empty = itself); the scoped id is what the request means.
  req = { ...req, customerId: customerScope(call.principal, req.customerId) };
  // A non-empty customer_id's rule is the contract's; whether one is needed depends on the caller.
  const v = new Violations().required("customer_id", req.customerId);
  const lines = summedLines(v, req.lines, deps.settings.maxLinesPerRequest);
  const ttlMs = v.duration("ttl", req.ttl);
  v.throwIfAny();
  // Below the server minimum whatever the SKUs (the SKU-dependent maximum is checked once they are read).
  if (ttlMs !== undefined && ttlMs < deps.settings.holdTtlMinMs) throw ttlOutOfRange("ttl", ttlMs, deps.settings.holdTtlMinMs, deps.settings.holdTtlMaxMs);
  // A single-SKU hold on a GROUP_COMMIT SKU joins the SKU's next batch
  // (core/group-commit.ts), which answers it, or hands it back to the normal path.
  const hot = lines.length === 1 && deps.hotSku.takes(lines[0]!.sku, req.lockingStrategy);
  // The attempt rate limit, before the transaction: a refused attempt takes no lock.
  // Skipped for SKUs that had no limit when last seen; the transaction's first read
  // checks that they still have none (RateLimitHints; AdmissionOwed in reserve(), and
  // a batch hands such a hold back to the normal path, which admits it then).
  const skus = lines.map((l) => l.sku);
  const admitNow = deps.rateLimits.mayBeLimited(skus);
  if (admitNow) await admitAttempt(deps.db, req.customerId, skus);
  const key = idempotencyKey(call.principal.id, HOLD_METHOD, CreateHoldRequestSchema, req);
  const spec: ReserveSpec = { type: "HOLD", customerId: req.customerId, lines, ttlMs, strategy: req.lockingStrategy, admitted: admitNow };
  // join_waitlist_if_short: nothing is held, and the customer joins the waitlist of
  // every short SKU (one entry each, for its summed quantity, all under this request_id).
  const onShort = req.joinWaitlistIfShort
    ? async (trx: Db, short: ShortLine[], promoted: Promotion[]): Promise<CreateHoldResponse | Refusal> => {
        const skus = short.map((l) => l.sku);
        // Refusals first, before any entry is written: a refusal is committed (recorded)
        // with the transaction's other changes, so it must find nothing half done.
        const policies = await query<{ code: string; waitlist_disabled: boolean }>(trx, `SELECT code, waitlist_disabled FROM skus WHERE code = ANY(?::text[]) ORDER BY code`, [skus]);
        const disabled = policies.find((p) => p.waitlist_disabled);
        if (disabled !== undefined) return new Refusal(waitlistDisabled(disabled.code));
        const [existing] = await query<{ id: string; sku_code: string }>(
          trx,
          `SELECT id, sku_code FROM waitlist_entries WHERE sku_code = ANY(?::text[]) AND customer_id = ? AND status IN ('WAITING', 'PROMOTED') ORDER BY sku_code LIMIT 1`,
          [skus, req.customerId],
        );
        if (existing !== undefined) return new Refusal(waitlistEntryAlreadyExists(existing.sku_code, existing.id));
        const entries = [];
        for (const line of short) {
          const joined = await joinInTransaction(trx, deps, call, { sku: line.sku, customerId: req.customerId, quantity: line.requested, maxWaitMs: undefined, requestId: req.requestId });
          // Lost a race after the checks above (a concurrent join of the same customer, or
          // the SKU's waitlist just disabled): roll back everything; the error is the answer.
          if (joined instanceof Refusal) throw joined.error;
          promoted.push(...joined.promotions);
          entries.push(joined.entry);
        }
        return create(CreateHoldResponseSchema, { waitlistEntries: await withPositions(trx, entries) });
      }
    : undefined;
  const response = await deps.inventory.around(spec.lines.map((l) => l.sku), hotOrNormal());
  async function hotOrNormal(): Promise<CreateHoldResponse> {
    const [line] = spec.lines;
    if (hot) {
      const batched = await deps.hotSku.submit({
        call,
        key,
        customerId: spec.customerId,
        sku: line!.sku,
        quantity: line!.quantity,
        ttlMs: spec.ttlMs,
        strategy: spec.strategy,
        joinWaitlistIfShort: req.joinWaitlistIfShort,
        admitted: admitNow,
      });
      if (batched !== undefined) return batched;
    }
    return reserve(deps, call, key, spec, CreateHoldResponseSchema, (reservation) => create(CreateHoldResponseSchema, { reservation }), onShort);
  }
  const expireTime = response.reservation?.expireTime;
  if (!response.replayed && expireTime !== undefined) deps.expiry.holdCreated(timestampDate(expireTime));
  return response;
}

export async function createAllocation(deps: Deps, call: Call, req: CreateAllocationRequest): Promise<CreateAllocationResponse> {
  const v = new Violations();
  const lines = summedLines(v, req.lines, deps.settings.maxLinesPerRequest);
  v.throwIfAny();
  const key = idempotencyKey(call.principal.id, ALLOCATION_METHOD, CreateAllocationRequestSchema, req);
  const spec: ReserveSpec = { type: "ALLOCATION", customerId: req.customerId, lines, ttlMs: undefined, strategy: req.lockingStrategy, admitted: true };
  return deps.inventory.around(
    spec.lines.map((l) => l.sku),
    reserve(deps, call, key, spec, CreateAllocationResponseSchema, (reservation) => create(CreateAllocationResponseSchema, { reservation })),
  );
}

async function reserve<D extends DescMessage>(
  deps: Deps,
  call: Call,
  key: IdempotencyKey,
  spec: ReserveSpec,
  schema: D,
  respond: (reservation: Reservation) => MessageShape<D>,
  onShort?: OnShort<MessageShape<D>>,
): Promise<MessageShape<D>> {
  const idempotency = new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call);
  // Waitlist promotions made by the committed attempt (reclaimed holds' units, or a
  // join that found units): their holds' expiries are announced to the worker.
  const promoted: Promotion[] = [];
  const skus = spec.lines.map((l) => l.sku);
  const read: ClaimRead<SkuWithCounters> = {
    ...skusWithCountersRead(skus),
    // Also for a replay (a replay is an attempt too), before anything is written.
    // The hot-SKU batches learn from it which SKUs they may take.
    check: (rows) => {
      deps.rateLimits.learn(rows);
      deps.hotSku.learn(rows);
      if (!spec.admitted && rows.some((r) => r.rate_limit_max_attempts !== null)) throw new AdmissionOwed();
    },
  };
  // The attempt's last statement goes with its COMMIT, until the guard refuses one
  // (FinishRefused): then the attempt runs again the classic way, which can go on
  // after a refusal in the same transaction (look again, reclaim, or refuse).
  let finish = true;
  for (let attempt = 1; ; attempt++) {
    try {
      // Taken before the transaction begins, so never later than its now().
      const began = performance.now();
      const response = await idempotency.run(
        key,
        schema,
        (trx, claimed) => {
          promoted.length = 0;
          return reserveOnce(trx, deps.settings, call, key, spec, respond, claimed, { began, finish }, promoted, onShort);
        },
        read,
      );
      deps.expiry.promoted(promoted);
      return response;
    } catch (err) {
      if (err instanceof AdmissionOwed) {
        // Rolled back with nothing written: pass the limiter (or be refused by it), then start again.
        await admitAttempt(deps.db, spec.customerId, skus);
        spec.admitted = true;
        attempt--;
        continue;
      }
      if (err instanceof CounterChangeRefused && err.reason === "late") throw lockTimeout({ skus });
      if (err instanceof FinishRefused) {
        // As the classic attempt does after its guard refused: a fresh read decides. An
        // OPTIMISTIC attempt with the stock still there lost its compare-and-set (below);
        // otherwise the attempt runs again, the classic way, without counting.
        finish = false;
        const optimisticConflict = err.strategy === "OPTIMISTIC" && !(await shortOutside(deps.db, spec.lines));
        if (!optimisticConflict) {
          attempt--;
          continue;
        }
        err = new Conflict(skus);
      }
      if (err instanceof Conflict) {
        if (attempt >= deps.settings.optimisticMaxAttempts) throw conflictRetriesExhausted(err.skus, attempt);
        // "Full jitter": spreads the retries of clients that lost the same race.
        const ceiling = Math.min(deps.settings.optimisticBackoffMaxMs, deps.settings.optimisticBackoffBaseMs * 2 ** attempt);
        await sleep(Math.random() * ceiling, undefined, { signal: call.signal });
        continue;
      }
      throw await explainWriteError(deps.db, err, key, skus);
    }
  }
}

/** What a hold or an allocation needs of a SKU's policy (hot_sku_mode: whether the hot-SKU batches take its holds). */
export type HoldPolicy = Pick<
  SkuRow,
  | "code"
  | "default_locking_strategy"
  | "default_hold_ttl_ms"
  | "max_hold_ttl_ms"
  | "max_hold_lifetime_ms"
  | "max_units_per_customer"
  | "rate_limit_max_attempts"
  | "abandonment_aware_ttl"
  | "waitlist_promotion_policy"
  | "hot_sku_mode"
>;
export type SkuWithCounters = HoldPolicy &
  Pick<InventoryRow, "available" | "version" | "waitlist_count"> & {
    /** An expired HELD line sits on the SKU (claimReclaimableHolds may give units back), as of the counters' snapshot. */
    reclaimable: boolean;
  };

/**
 * Whether an expired HELD line sits on the SKU of inventory row `i` (index-only, on
 * reservation_items_held_sku_expires_idx), read with the counters: a request short on
 * those counters and with nothing to reclaim in that same snapshot was short at that
 * moment, whatever has happened since. Without it in the same snapshot, a read of the
 * counters may predate a reclaim by another request that has since given expired
 * units back and taken only some: refusing on it, after a later probe finds nothing
 * left to reclaim, refuses units that were never all gone at once.
 */
const RECLAIMABLE = `EXISTS (SELECT 1 FROM reservation_items r
                WHERE r.sku_code = i.sku_code AND r.status = 'HELD' AND r.expires_at <= (SELECT clock_timestamp())) AS reclaimable`;

/**
 * The SKUs' policies and counters in one plain read: no lock, so a sold-out SKU costs
 * its refused buyers no wait on the hot row. Run in the idempotency claim's statement
 * (one round trip for both): its snapshot may predate a wait of the claim for a
 * duplicate in flight. That is harmless here: whatever is decided on it is either
 * checked again under the row lock (the guard, the version) or was true at a moment of
 * the request's lifetime (a shortage refused without a second look, the policies).
 */
const SKUS_WITH_COUNTERS = `
SELECT s.code, s.default_locking_strategy, s.default_hold_ttl_ms, s.max_hold_ttl_ms, s.max_hold_lifetime_ms,
       s.max_units_per_customer, s.rate_limit_max_attempts, s.abandonment_aware_ttl, s.waitlist_promotion_policy,
       s.hot_sku_mode, i.available, i.version, i.waitlist_count,
       ${RECLAIMABLE}
  FROM skus s JOIN inventory i ON i.sku_code = s.code
 WHERE s.code = ANY(?::text[])`;
const SKUS_WITH_COUNTERS_LOCKED = `${SKUS_WITH_COUNTERS} FOR NO KEY UPDATE OF i`;

/** SKUS_WITH_COUNTERS of these SKUs, as a read of the idempotency claim's statement. */
export function skusWithCountersRead(skus: readonly string[]): ClaimRead<SkuWithCounters> {
  return { sql: SKUS_WITH_COUNTERS, params: [skus] };
}

/**
 * SKUS_WITH_COUNTERS as a statement of its own; `lock`: the inventory rows locked
 * (FOR NO KEY UPDATE, the rows' order is the planner's, so only for one SKU).
 */
export async function readSkusWithCounters(trx: Db, skus: readonly string[], lock = false): Promise<SkuWithCounters[]> {
  if (lock && skus.length > 1) throw new Error("readSkusWithCounters locks one row at most (several rows: lockInventoryRows, in SKU order)");
  return query<SkuWithCounters>(trx, lock ? SKUS_WITH_COUNTERS_LOCKED : SKUS_WITH_COUNTERS, [skus]);
}

/** What a new buyer may take of each row: nothing on a STRICT_FIFO SKU whose waitlist has WAITING entries (their units are the queue's). */
export function availableToBuyers(
  rows: readonly Pick<InventoryRow, "sku_code" | "available" | "waitlist_count">[],
  policies: readonly Pick<SkuRow, "code" | "waitlist_promotion_policy">[],
): { sku_code: string; available: number }[] {
  const strict = new Set(policies.filter((r) => r.waitlist_promotion_policy !== "FIRST_FIT").map((r) => r.code));
  return rows.map((r) => ({ sku_code: r.sku_code, available: r.waitlist_count > 0 && strict.has(r.sku_code) ? 0 : r.available }));
}

async function reserveOnce<R>(
  trx: Db,
  settings: ReservationSettings,
  call: Call,
  key: IdempotencyKey,
  spec: ReserveSpec,
  respond: (reservation: Reservation) => R,
  claimed: Claimed<R, SkuWithCounters>,
  /** began: before the transaction (bornAlive); finish: a single SKU's change may go with the COMMIT. */
  { began, finish }: { began: number; finish: boolean },
  promoted: Promotion[],
  onShort?: OnShort<R>,
): Promise<R | Refusal> {
  // Short: refused (INSUFFICIENT_STOCK), or handed to onShort (the waitlist) with nothing held.
  const refuse = async (trx: Db, header: ReservationRow | undefined, short: ShortLine[]): Promise<R | Refusal> => {
    if (onShort === undefined) return refuseShort(trx, header, short);
    if (header !== undefined) await query(trx, `DELETE FROM reservations WHERE id = ?`, [header.id]); // lines cascade
    const value = await onShort(trx, short, promoted);
    // The reservation's response may have been recorded inline already: record this one instead.
    if (!(value instanceof Refusal)) await claimed.record(value);
    return value;
  };
  const skus = spec.lines.map((l) => l.sku);
  const rows = claimed.rows;
  const known = new Set(rows.map((r) => r.code));
  if (known.size < skus.length) throw skuNotFound(skus.filter((s) => !known.has(s)));

  // STRICT_FIFO SKUs with WAITING entries: their units are the queue's, a new buyer sees none.
  const forBuyer = (inv: readonly Pick<InventoryRow, "sku_code" | "available" | "waitlist_count">[]) => availableToBuyers(inv, rows);
  const strategy = strategyFor(spec.strategy, rows, settings);
  const bounded = spec.type === "HOLD" ? holdTerms(rows, settings, spec.ttlMs) : undefined;
  // max_units_per_customer: takes the customer's lock (before any row lock of this
  // transaction) and refuses, recorded, with nothing written.
  const overLimit = await customerLimitRefusal(trx, spec.customerId, spec.lines, rows);
  if (overLimit !== undefined) return overLimit;
  const terms = bounded && { ...bounded, ttlMs: await abandonmentAwareHoldTtl(trx, spec.customerId, rows, bounded.ttlMs, settings.holdTtlMinMs) };
  const origin = { actor: call.principal.id, requestId: key.requestId };
  const operation: AuditOperation = spec.type === "HOLD" ? "HOLD_CREATED" : "ALLOCATION_CREATED";
  const changesFor = (reservationId: string) =>
    spec.lines.map((l) => ({
      sku: l.sku,
      operation,
      reservationId,
      ...(spec.type === "HOLD" ? { reserved: l.quantity } : { allocated: l.quantity }),
    }));
  const plan = () => {
    // The reservation as it will be stored (its times are the transaction's now(), which
    // the claim read), so that the response is recorded by the same statement that
    // inserts it: one round trip for the reservation, its lines and the record.
    const header = plannedReservation(randomUUID(), spec, strategy, terms, key, claimed.now);
    const response = respond(toReservation(header, spec.lines.map((l) => ({ sku_code: l.sku, quantity: l.quantity })), claimed.now));
    const record = claimed.recordInline(response);
    return { header, response, insert: reservationInserts([{ header, lines: spec.lines, terms }], { sql: recordedCte(record.sql), params: record.params }) };
  };
  const insert = async () => {
    const planned = plan();
    await query(trx, insertStatement(planned.insert.ctes), planned.insert.params);
    return planned;
  };

  let shortNow = shortForBuyer(spec.lines, rows);
  // Expired holds that could give units back, seen in the counters' own snapshot.
  let reclaimable = rows.some((r) => r.reclaimable);
  let inserted: { header: ReservationRow; response: R } | undefined;
  if (shortNow.length === 0) {
    // One SKU: the reservation is inserted by the counter statement itself (one round
    // trip; its row lock is taken by that statement and held to the commit either way).
    // Several: inserted first, then their rows are locked in SKU order.
    const alongside = spec.lines.length === 1 ? plan() : undefined;
    inserted = alongside ?? (await insert());
    const expectedVersions = strategy === "OPTIMISTIC" ? new Map(rows.map((r) => [r.code, r.version])) : undefined;
    if (alongside !== undefined && finish) {
      // One round trip for the reservation, its record, the counter change and the
      // COMMIT; the hot row is locked for that statement and the commit's flush only.
      // Refused by the guard: rolled back (FinishRefused); ending too late for the
      // hold's TTL, or past the caller's deadline (a statement that waited long for the
      // row may outlive its statement_timeout's count): rolled back (CounterChangeRefused
      // "late": LOCK_TIMEOUT, as bornAlive; a caller past its deadline hears nothing).
      const limits = [terms === undefined ? null : terms.ttlMs - COMMIT_MARGIN_MS, claimed.deadlineMs].filter((ms) => ms !== null);
      const aliveForMs = limits.length === 0 ? null : Math.min(...limits);
      try {
        await applyCounterChanges(trx, changesFor(inserted.header.id), origin, { expectedVersions, yieldToWaitlist: true, alongside: alongside.insert, finish: { aliveForMs } });
      } catch (err) {
        if (err instanceof CounterChangeRefused && err.reason === "refused") throw new FinishRefused(strategy);
        throw err;
      }
      return inserted.response;
    }
    const applied = await applyCounterChanges(trx, changesFor(inserted.header.id), origin, { expectedVersions, yieldToWaitlist: true, alongside: alongside?.insert, events: false });
    if (applied.refused.length === 0) return bornAlive(inserted.response, terms, began, skus);
    // Refused by the guard (or the version): look again, without a lock.
    const fresh = await readSkusWithCounters(trx, skus);
    shortNow = shortForBuyer(spec.lines, fresh);
    reclaimable = fresh.some((r) => r.reclaimable);
    if (shortNow.length === 0 && strategy === "OPTIMISTIC") throw new Conflict(applied.refused);
  }

  // Short, or a pessimistic guard lost to a change that the read no longer shows.
  // Unless there is something to reclaim, the read that shows the shortage is the
  // answer, and the hot rows are not locked just to refuse. Shortage and "nothing to
  // reclaim" come from one snapshot (the claim's read, or the read after a refused
  // guard, RECLAIMABLE): a read of the counters alone may predate a reclaim by another request
  // that has since given units back, and refuse units that were never all gone.
  if (shortNow.length > 0 && !reclaimable) return refuse(trx, inserted?.header, shortNow);
  const locked = await lockInventoryRows(trx, skus);
  const expired = await claimReclaimableHolds(trx, skus, RECLAIM_LIMIT);
  if (expired.length > 0) promoted.push(...(await expireClaimedHolds(trx, expired, origin, settings)).promotions);
  const after = expired.length > 0 ? await readInventoryRows(trx, skus) : locked;
  shortNow = shortLines(spec.lines, forBuyer(after));
  if (shortNow.length > 0) return refuse(trx, inserted?.header, shortNow);
  inserted ??= await insert();
  const applied = await applyCounterChanges(trx, changesFor(inserted.header.id), origin, { yieldToWaitlist: true, events: false });
  if (applied.refused.length > 0) throw new Error(`counter change refused on locked rows ${applied.refused.join(", ")}`);
  return bornAlive(inserted.response, terms, began, skus);
}

/** Whether a fresh read (outside any transaction) shows any of the lines short for a new buyer. */
async function shortOutside(db: Db, lines: readonly Line[]): Promise<boolean> {
  return shortForBuyer(lines, await readSkusWithCounters(db, lines.map((l) => l.sku))).length > 0;
}

/** The lines a new buyer would find short on these rows (a STRICT_FIFO waitlist's units are not theirs). */
function shortForBuyer(lines: readonly Line[], rows: readonly SkuWithCounters[]): ShortLine[] {
  return shortLines(lines, availableToBuyers(rows.map(asInventory), rows));
}

/** Margin for the COMMIT that follows: a hold must not be committed with less life left than this. */
export const COMMIT_MARGIN_MS = 100;

/**
 * The hold's times are the transaction's start (now()); waiting for row locks since
 * then eats into its life. If the wait took (nearly) all of it, the hold would be
 * committed already dead: roll back instead (ABORTED / LOCK_TIMEOUT, retry with the
 * same id). Measured on this process's monotonic clock from before the transaction
 * began, so it can only overestimate the elapsed time.
 */
export function bornAlive<R>(response: R, terms: { ttlMs: number } | undefined, began: number, skus: string[]): R {
  if (terms !== undefined && performance.now() - began + COMMIT_MARGIN_MS >= terms.ttlMs) throw lockTimeout({ skus });
  return response;
}

const asInventory = (r: SkuWithCounters) => ({ sku_code: r.code, available: r.available, waitlist_count: r.waitlist_count });

/** Lines asking for more than is available, in SKU order. */
function shortLines(lines: readonly Line[], rows: readonly Pick<InventoryRow, "sku_code" | "available">[]): ShortLine[] {
  const available = new Map(rows.map((r) => [r.sku_code, r.available]));
  return lines
    .filter((l) => (available.get(l.sku) ?? 0) < l.quantity)
    .map((l) => ({ sku: l.sku, requested: l.quantity, available: Math.max(0, available.get(l.sku) ?? 0) }));
}

/** What to do instead of INSUFFICIENT_STOCK (CreateHold.join_waitlist_if_short). */
/** Handles a shortage in the transaction; promotions it makes go to `promoted` (the worker is told after commit). */
type OnShort<R> = (trx: Db, short: ShortLine[], promoted: Promotion[]) => Promise<R | Refusal>;

/** INSUFFICIENT_STOCK, committed with the attempt's reclaims; the reservation written optimistically is removed. */
async function refuseShort(trx: Db, header: ReservationRow | undefined, short: ShortLine[]): Promise<Refusal> {
  if (header !== undefined) await query(trx, `DELETE FROM reservations WHERE id = ?`, [header.id]); // lines cascade
  return new Refusal(insufficientStock(short));
}

/**
 * The row insertReservation will store, computed here so that the response can be
 * recorded in the same statement. `now` is the transaction's now() (read by the claim,
 * truncated to the millisecond like every timestamp the driver reads back), so the
 * response and a later read of the row agree.
 */
export function plannedReservation(
  id: string,
  spec: Pick<ReserveSpec, "type" | "customerId">,
  strategy: StoredStrategy,
  terms: { ttlMs: number; lifetimeMs: number } | undefined,
  key: IdempotencyKey,
  now: Date,
): ReservationRow {
  const after = (ms: number | undefined) => (ms === undefined ? null : new Date(now.getTime() + ms));
  return {
    id,
    type: spec.type,
    status: spec.type === "HOLD" ? "HELD" : "ALLOCATED",
    customer_id: spec.customerId,
    caller: key.caller,
    request_id: key.requestId,
    locking_strategy: strategy,
    expires_at: after(terms?.ttlMs),
    max_expires_at: after(terms?.lifetimeMs),
    created_at: now,
    updated_at: now,
    confirmed_at: spec.type === "ALLOCATION" ? now : null,
    closed_at: null,
    close_reason: null,
    waitlist_entry_id: null,
    version: 0,
  };
}

/** A reservation to insert: the row as planned, its lines, its terms. */
export interface PlannedInsert {
  header: ReservationRow;
  lines: readonly Line[];
  terms: { ttlMs: number; lifetimeMs: number } | undefined;
}

/** One request's record (Claimed.recordInline's statement) as the `recorded` CTE. */
const recordedCte = builtOnce((recordSql) => `recorded AS (\n       ${recordSql}\n     )`);

/**
 * The CTEs of `reservationInserts` around the data-modifying CTEs that record the
 * outcomes (`recorded`, with RETURNING). `written` is for a counter change alongside
 * (ledger.ts): its UPDATE reads it first, so the reservations (read by `lines`), their
 * lines and the records are written before the hot row is locked. (A batch's
 * `released` claims, nearly always none, are left to the statement's end.)
 */
const reservationInsertCtes = builtOnce(
  (recordCtes) => `h AS (
       INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at, confirmed_at)
       SELECT id, type, status, customer_id, caller, request_id, locking_strategy,
              now() + ttl_ms * interval '1 millisecond',
              now() + lifetime_ms * interval '1 millisecond',
              CASE WHEN status = 'ALLOCATED' THEN now() END
         FROM unnest(?::uuid[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[])
           AS t(id, type, status, customer_id, caller, request_id, locking_strategy, ttl_ms, lifetime_ms)
       RETURNING id, status, expires_at, created_at
     ), lines AS (
       INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
       SELECT h.id, l.sku_code, l.quantity, h.status, h.expires_at, h.created_at
         FROM unnest(?::uuid[], ?::text[], ?::int[]) AS l(reservation_id, sku_code, quantity)
         JOIN h ON h.id = l.reservation_id
       RETURNING reservation_id
     ), ${recordCtes}, written AS (
       -- Rows, not counts: a count nobody reads is planned away, and the CTEs with it.
       SELECT 1 FROM lines UNION ALL SELECT 1 FROM recorded
     )`,
);

/** The CTEs of `reservationInserts` as a statement of their own. */
const insertStatement = builtOnce((ctes) => `WITH ${ctes}\nSELECT 1`);

/**
 * Reservations, their lines and idempotency records as data-modifying CTEs of one
 * statement (h, lines, and `record`'s: the CTEs that record the outcomes, with their
 * parameters), to run alone (insertReservations) or alongside a counter change
 * (applyCounterChanges). Times are the database's (now(), the transaction's start):
 * expiry is judged by the database clock only; `header` only supplies the id and the
 * values decided here. One reservation for a request; a hot SKU's group commit
 * inserts a batch.
 */
export function reservationInserts(planned: readonly PlannedInsert[], record: { sql: string; params: unknown[] }): { ctes: string; params: unknown[] } {
  const column = <T>(f: (p: PlannedInsert) => T) => planned.map(f);
  const lines = planned.flatMap((p) => p.lines.map((l) => ({ id: p.header.id, ...l })));
  return {
    ctes: reservationInsertCtes(record.sql),
    params: [
      column((p) => p.header.id),
      column((p) => p.header.type),
      column((p) => p.header.status),
      column((p) => p.header.customer_id),
      column((p) => p.header.caller),
      column((p) => p.header.request_id),
      column((p) => p.header.locking_strategy),
      column((p) => p.terms?.ttlMs ?? null),
      column((p) => p.terms?.lifetimeMs ?? null),
      lines.map((l) => l.id),
      lines.map((l) => l.sku),
      lines.map((l) => l.quantity),
      ...record.params,
    ],
  };
}

/** reservationInserts, run as one statement; `commit`: the transaction's last, sent with its COMMIT (commitWith). */
export async function insertReservations(
  trx: Db,
  planned: readonly PlannedInsert[],
  record: { sql: string; params: unknown[] },
  { commit = false }: { commit?: boolean } = {},
): Promise<void> {
  const insert = reservationInserts(planned, record);
  if (!commit) await query(trx, insertStatement(insert.ctes), insert.params);
  else if (trx instanceof PgTransaction) await commitWith(trx, insertStatement(insert.ctes), insert.params);
  else throw new Error("insertReservations: `commit` needs a PgTransaction");
}
