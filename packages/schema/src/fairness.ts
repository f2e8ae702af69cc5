/**
 * The SQL of the per-SKU fairness controls (SkuPolicy.max_units_per_customer,
 * customer_attempt_rate_limit, abandonment_aware_ttl; docs/fairness.md, "Fairness
 * controls"; why they are race-free: docs/concurrency.md, "The per-customer limit").
 *
 * - PER-CUSTOMER LIMIT. A customer's units of a SKU are COUNTED FROM THE ROWS THAT
 *   HOLD THEM (their HELD and ALLOCATED lines, and their WAITING waitlist entries),
 *   never kept in a counter, so no path that moves units (release, expiry in line or
 *   by the worker, confirm, fulfil, cancel, promotion, reconciliation) has anything to
 *   keep in step. What makes the count safe under concurrency is a transaction-level
 *   advisory lock per customer (`lockCustomerUnits`), taken by every transaction that
 *   can ADD units to a customer (CreateHold, CreateAllocation, JoinWaitlist and
 *   CreateHold's join_waitlist_if_short) BEFORE it reads the count and before it locks
 *   any inventory row. Two such transactions of one customer are serialised: the
 *   second takes the lock only once the first has committed (PostgreSQL releases
 *   locks after the commit is visible), so its count, read by a LATER statement (a new
 *   READ COMMITTED snapshot), includes the first one's units. The count must never be
 *   in the statement that takes the lock: that statement's snapshot predates the wait.
 *   Paths that only remove units need no lock (a stale count can only be too high,
 *   which refuses, never oversteps), and a promotion turns a WAITING entry into a
 *   hold of the same quantity in one transaction, so it moves nothing the count sees.
 * - RATE LIMIT. A sliding log (the "sliding window log" algorithm): one row per (SKU,
 *   customer) with the times of the attempts admitted within the window, changed by
 *   one autocommitted INSERT ... ON CONFLICT DO UPDATE (`admitAttempts`). ON CONFLICT
 *   locks the existing row and computes the new log from its newest version, so
 *   concurrent attempts from any number of replicas are admitted one at a time, each
 *   seeing every admission before it. It runs before the attempt's transaction: the
 *   row is locked for that statement only, and an attempt it refuses never reaches a
 *   SKU's row.
 * - ABANDONMENT. Counted from the customer's holds of the last 24 h
 *   (reservations_customer_created_idx), see `abandonmentAwareTtl`.
 */
import { skuOrder } from './ledger.js';
import { named, query, type Db } from './query.js';

/** pg_advisory_xact_lock's first key for the per-customer limit ('Cust'); the second is hashtext(customer_id). */
export const CUSTOMER_UNITS_LOCK_CLASS = 0x43757374;

/**
 * Serialises, until this transaction ends, every transaction that may add units to
 * `customerId` (see the file comment). Lock order: after the idempotency claim, BEFORE
 * any reservation header or inventory row. Taking it again in the same transaction is
 * free. One lock per customer, whatever the SKUs, so a multi-SKU request takes exactly
 * one and no order between several is needed; a hash collision between two customers
 * only serialises them. Waits at most the connection's lock_timeout.
 */
export async function lockCustomerUnits(db: Db, customerId: string): Promise<void> {
  await query(db, `SELECT pg_advisory_xact_lock(?, hashtext(?))`, [CUSTOMER_UNITS_LOCK_CLASS, customerId]);
}

/*
 * The customer's units per SKU: the lines of their live HELD and their ALLOCATED
 * reservations, plus their WAITING waitlist entries (an entry becomes a hold of the
 * same quantity when promoted, so it counts from the moment it joins).
 *
 * A HELD hold past its expiry (by the clock now) does not count, since it is dead
 * although not swept yet ("expiry is a rule"). But an ExtendHold or ConfirmHold that
 * read the clock before the expiry may still be about to commit; so such a hold is
 * left out only if this statement gets a share lock on its header (`lapsed`):
 * nobody is then transitioning it, and any later transition locks the header after
 * our commit, reads a later clock, and finds it expired. A header someone else has
 * locked (SKIP LOCKED) keeps counting: too high refuses, never oversteps.
 *
 * Every WAITING entry counts, even one past its max_wait and not yet closed: a
 * promoter whose transaction began before that deadline may still promote it.
 *
 * Index: reservations_active_customer_idx (the customer's open reservations only),
 * then the lines by their primary key; waitlist_entries_one_active_per_customer.
 */
const CUSTOMER_UNITS = `
WITH lapsed AS (
  SELECT r.id FROM reservations r
   WHERE r.customer_id = ? AND r.status = 'HELD' AND r.expires_at <= clock_timestamp()
     FOR SHARE SKIP LOCKED
),
units AS (
  SELECT i.sku_code, i.quantity
    FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
   WHERE r.customer_id = ? AND r.status IN ('HELD', 'ALLOCATED') AND i.sku_code = ANY(?::text[])
     AND r.id NOT IN (SELECT id FROM lapsed)
  UNION ALL
  SELECT w.sku_code, w.quantity
    FROM waitlist_entries w
   WHERE w.customer_id = ? AND w.status = 'WAITING' AND w.sku_code = ANY(?::text[])
)
SELECT sku_code, sum(quantity)::bigint AS units FROM units GROUP BY sku_code`;

/**
 * The customer's active units of each of `skus` (absent = 0). Call only while holding
 * lockCustomerUnits, in a later statement than the one that took it.
 */
export async function customerActiveUnits(db: Db, customerId: string, skus: readonly string[]): Promise<Map<string, number>> {
  const codes = skuOrder(skus);
  const rows = await query<{ sku_code: string; units: number }>(db, CUSTOMER_UNITS, [customerId, customerId, codes, customerId, codes]);
  return new Map(rows.map((r) => [r.sku_code, Number(r.units)]));
}

/** What the rate limiter said about one SKU of an attempt. */
export interface AttemptAdmission {
  sku: string;
  admitted: boolean;
  maxAttempts: number;
  windowMs: number;
  /** For a refused attempt: ms until the oldest admitted attempt leaves the window (then one more is admitted). */
  retryAfterMs: number;
}

/*
 * One statement, autocommitted (never inside the attempt's transaction, whose rollback
 * would forget the admission, and whose lock on this row would last until its
 * commit). For every SKU of the attempt that has a rate limit (the skus row read in
 * the same statement, so a limit applies from the first attempt after UpdateSku
 * commits), with t = the database clock once the attempt holds the row:
 *   log   = the row's admitted times inside (t - window, t], oldest first
 *   admit = cardinality(log) < max_attempts
 *   new log = log || t if admitted, else log (refused attempts are not logged)
 * A new row admits (max_attempts >= 1). Rows are inserted, and so locked, in SKU
 * order: two multi-SKU attempts of one customer cannot deadlock. The limit and window
 * are copied into the row so that ON CONFLICT can read them from EXCLUDED.
 *
 * Race window: an attempt may wait for a row that another attempt of the customer
 * holds (or, multi-SKU, for an earlier SKU's row). Judged at an instant read before
 * that wait, its log could hold times "in its future", its retry-after exceed the
 * window, and its own time land out of order in the log. So t is read per row, as
 * late as each path allows: for a new row as the sorted rows are inserted one after
 * the other (q.t, above the ORDER BY: after the earlier SKUs' waits); for an existing
 * row in the UPDATE (n.t), after ON CONFLICT has locked it, when every time in its
 * log was committed before.
 *
 * Limits changed by UpdateSku: the log keeps every admitted time still in the window,
 * whatever the limit, so that a limit raised meanwhile counts them all. A lowered limit
 * may leave more times in a row than it allows: the row's max_attempts (which bounds
 * the log, CHECK customer_attempt_windows_bounded) is then the log's length, and what
 * the statement returns is the SKU's limit (read in the statement's snapshot, as p
 * read it) and, for a refusal, the moment the log holds fewer times than it: when its
 * (length - limit + 1)-th oldest time leaves the window.
 */
const ADMIT_ATTEMPTS = `
WITH p AS (
  SELECT s.code, s.rate_limit_max_attempts AS n, s.rate_limit_window_ms AS w
    FROM skus s
   WHERE s.code = ANY(?::text[]) AND s.rate_limit_max_attempts IS NOT NULL
)
INSERT INTO customer_attempt_windows AS c
       (sku_code, customer_id, max_attempts, window_ms, admitted, last_attempt_at, last_admitted, expires_at)
SELECT q.code, ?, q.n, q.w, ARRAY[q.t], q.t, true, q.t + q.w * interval '1 millisecond'
  FROM (SELECT o.*, clock_timestamp() AS t FROM (SELECT * FROM p ORDER BY p.code) o) q
ON CONFLICT (sku_code, customer_id) DO UPDATE
   SET (max_attempts, window_ms, admitted, last_attempt_at, last_admitted, expires_at) = (
         SELECT GREATEST(EXCLUDED.max_attempts, cardinality(l.log)), EXCLUDED.window_ms,
                CASE WHEN l.ok THEN l.log || l.t ELSE l.log END,
                l.t, l.ok,
                CASE WHEN l.ok THEN GREATEST(l.t, l.log[cardinality(l.log)]) ELSE l.log[cardinality(l.log)] END
                  + EXCLUDED.window_ms * interval '1 millisecond'
           FROM (SELECT k.t, k.log, cardinality(k.log) < EXCLUDED.max_attempts AS ok
                   FROM (SELECT n.t, ARRAY(SELECT a FROM unnest(c.admitted) AS a
                                            WHERE a > n.t - EXCLUDED.window_ms * interval '1 millisecond'
                                            ORDER BY a) AS log
                           FROM (SELECT clock_timestamp() AS t) n) k) l)
RETURNING sku_code, last_admitted, (SELECT s.rate_limit_max_attempts FROM skus s WHERE s.code = sku_code) AS max_attempts, window_ms,
          ceil(extract(epoch FROM (admitted[cardinality(admitted) - (SELECT s.rate_limit_max_attempts FROM skus s WHERE s.code = sku_code) + 1]
                                   + window_ms * interval '1 millisecond' - last_attempt_at)) * 1000)::bigint AS retry_after_ms`;

/**
 * Counts one attempt of `customerId` on each of `skus` that has a rate limit, and says
 * which admitted it (SKUs without a limit, or unknown, are not in the result). An
 * attempt refused by one SKU stays counted on the SKUs that admitted it.
 */
export async function admitAttempts(db: Db, customerId: string, skus: readonly string[]): Promise<AttemptAdmission[]> {
  const rows = await query<{ sku_code: string; last_admitted: boolean; max_attempts: number; window_ms: number; retry_after_ms: number }>(
    db,
    ADMIT_ATTEMPTS,
    [skuOrder(skus), customerId],
  );
  return rows.map((r) => ({
    sku: r.sku_code,
    admitted: r.last_admitted,
    maxAttempts: r.max_attempts,
    windowMs: Number(r.window_ms),
    retryAfterMs: Math.max(0, Number(r.retry_after_ms)),
  }));
}

/** How far back the abandonment-aware TTL looks: holds created in the last 24 hours. */
export const ABANDONMENT_WINDOW_MS = 24 * 3600 * 1000;
/** Expired holds (beyond those balanced by confirmed ones) that cost nothing. */
export const ABANDONMENT_GRACE = 1;

/** A customer's record with one SKU over ABANDONMENT_WINDOW_MS. */
export interface AbandonmentRecord {
  sku: string;
  /** Holds that expired unconfirmed (swept or not: a HELD hold past its expiry is expired). */
  expired: number;
  /** Holds that were confirmed (ALLOCATED, FULFILLED or CANCELLED since). */
  confirmed: number;
}

/*
 * The customer's holds created in the last window (reservations_customer_created_idx:
 * customer, then a range on created_at), with their lines on the SKUs. Holds of a
 * waitlist promotion count like the others. Released holds count for nothing.
 *
 * A HELD hold past its expiry counts as expired only if this statement gets a share
 * lock on its header (`lapsed`), as in CUSTOMER_UNITS: a ConfirmHold or ExtendHold
 * that read the clock before the expiry may hold it and be about to commit, and such
 * a hold is not abandoned. SKIP LOCKED: never waits, whatever the caller holds.
 */
const ABANDONMENT_RECORD = `
WITH lapsed AS (
  SELECT r.id FROM reservations r
   WHERE r.customer_id = $customer AND r.created_at > now() - $window::bigint * interval '1 millisecond'
     AND r.type = 'HOLD' AND r.status = 'HELD' AND r.expires_at <= clock_timestamp()
     FOR SHARE SKIP LOCKED
)
SELECT i.sku_code,
       count(*) FILTER (WHERE r.status = 'EXPIRED' OR r.id IN (SELECT id FROM lapsed))::int AS expired,
       count(*) FILTER (WHERE r.confirmed_at IS NOT NULL)::int AS confirmed
  FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
 WHERE r.customer_id = $customer AND r.created_at > now() - $window::bigint * interval '1 millisecond'
   AND r.type = 'HOLD' AND i.sku_code = ANY($skus::text[])
 GROUP BY i.sku_code`;

export async function abandonmentRecords(db: Db, customerId: string, skus: readonly string[]): Promise<AbandonmentRecord[]> {
  const rows = await query<{ sku_code: string; expired: number; confirmed: number }>(
    db,
    ...named(ABANDONMENT_RECORD, { customer: customerId, window: ABANDONMENT_WINDOW_MS, skus: skuOrder(skus) }),
  );
  return rows.map((r) => ({ sku: r.sku_code, expired: r.expired, confirmed: r.confirmed }));
}

/**
 * The abandonment-aware TTL rule (docs/fairness.md): strikes = expired − confirmed −
 * ABANDONMENT_GRACE (at least 0); the hold's TTL is halved once per strike, never
 * below `minMs` (the server's minimum hold TTL) and never above `ttlMs`.
 */
export function abandonmentAwareTtl(ttlMs: number, record: Pick<AbandonmentRecord, 'expired' | 'confirmed'>, minMs: number): number {
  const strikes = Math.max(0, record.expired - record.confirmed - ABANDONMENT_GRACE);
  return Math.min(ttlMs, Math.max(minMs, Math.floor(ttlMs / 2 ** strikes)));
}
