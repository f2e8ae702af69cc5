/**
 * The waitlist's side of stock returns (issue 6). Every transaction that returns units
 * to a SKU (ReleaseHold, CancelAllocation, in-line expiry, the worker's sweep, AdjustStock
 * with a positive delta, a reconciliation repair) calls `promoteWaiting` for the SKUs it
 * returned units to, BEFORE it commits, while it still holds their inventory row locks:
 * the units go to the waiting entries in queue order (seq) and no new buyer can slip in
 * between, whichever replica or the worker returned them.
 *
 * Lock order (ledger.ts): reservation headers -> inventory rows in SKU order -> the SKU's
 * WAITING entries (FOR UPDATE, by seq). Every writer of a WAITING entry (JoinWaitlist,
 * LeaveWaitlist, promotion, the expiry of a WAITING entry) holds the SKU's inventory row
 * lock first, so the promoter always sees the true head and no cycle can form.
 *
 * WAITING entries past their own expires_at (max_wait) are expired by any promotion on
 * their SKU, and by the expiry-worker's sweep, which calls promoteAndExpireWaiting for
 * the SKUs that have one (services/expiry-worker/src/core/sweeper.ts).
 *
 * Counters move only through applyCounterChanges (one WAITLIST_PROMOTED event per
 * promoted entry, reserved += q); the waitlist counters (waitlist_count/units, not in
 * the ledger) are moved here with a version bump, under the same row lock.
 */
import { randomUUID } from 'node:crypto';
import { applyCounterChanges, skuOrder, type ChangeOrigin } from './ledger.js';
import { DEFAULT_HOLD_TTL_DEFAULT_MS, HOLD_TTL_MAX_DEFAULT_MS, HOLD_TTL_MIN_DEFAULT_MS, MAX_HOLD_LIFETIME_DEFAULT_MS, MAX_HOLD_LIFETIME_MAX_MS } from './limits.js';
import { query, type Db } from './query.js';
import { WAITLIST_PRINCIPAL, type InventoryRow, type SkuRow, type WaitlistEntryRow, type WaitlistStatus } from './rows.js';

/**
 * The server's hold TTL settings that decide a promoted hold's terms. Shared by the
 * reservation-service and the expiry-worker (same environment variables, same defaults:
 * HOLD_TTL_MIN_MS, HOLD_TTL_MAX_MS, DEFAULT_HOLD_TTL_MS, MAX_HOLD_LIFETIME_MS).
 */
export interface HoldTermSettings {
  holdTtlMinMs: number;
  holdTtlMaxMs: number;
  /** Already capped at holdTtlMaxMs. */
  defaultHoldTtlMs: number;
  maxHoldLifetimeMs: number;
}

/** The contract's "unless configured" hold terms (what both services use when not configured). */
export const DEFAULT_HOLD_TERMS: HoldTermSettings = Object.freeze({
  holdTtlMinMs: HOLD_TTL_MIN_DEFAULT_MS,
  holdTtlMaxMs: HOLD_TTL_MAX_DEFAULT_MS,
  defaultHoldTtlMs: Math.min(DEFAULT_HOLD_TTL_DEFAULT_MS, HOLD_TTL_MAX_DEFAULT_MS),
  maxHoldLifetimeMs: MAX_HOLD_LIFETIME_DEFAULT_MS,
});

/**
 * TTL and lifetime of the hold a promotion creates on `sku` (SkuPolicy.promotion_hold_ttl,
 * else the effective default_hold_ttl; bounded by the effective max_hold_ttl).
 */
export function promotionTerms(sku: Pick<SkuRow, 'default_hold_ttl_ms' | 'max_hold_ttl_ms' | 'max_hold_lifetime_ms' | 'promotion_hold_ttl_ms'>, s: HoldTermSettings): { ttlMs: number; lifetimeMs: number } {
  const maxMs = Math.max(s.holdTtlMinMs, Math.min(s.holdTtlMaxMs, sku.max_hold_ttl_ms ?? Infinity));
  const wanted = sku.promotion_hold_ttl_ms ?? Math.min(s.defaultHoldTtlMs, sku.default_hold_ttl_ms ?? Infinity);
  const ttlMs = Math.max(s.holdTtlMinMs, Math.min(wanted, maxMs));
  const lifetimeMs = Math.min(s.maxHoldLifetimeMs, MAX_HOLD_LIFETIME_MAX_MS, sku.max_hold_lifetime_ms ?? Infinity);
  return { ttlMs, lifetimeMs: Math.max(lifetimeMs, maxMs, ttlMs) };
}

/** An entry promoted by promoteWaiting, with the hold it received. */
export interface Promotion {
  entry: WaitlistEntryRow;
  reservationId: string;
  expiresAt: Date;
}

/** What promoteAndExpireWaiting did: promotions, and the lapsed WAITING entries it expired. */
export interface WaitlistOutcome {
  /** In SKU order, then queue order. */
  promotions: Promotion[];
  /** WAITING entries past their own expires_at (max_wait), now EXPIRED; in SKU order, then queue order. */
  expired: WaitlistEntryRow[];
}

/**
 * Promotes the WAITING entries of `skus` that the SKUs' available units now serve, in
 * queue order (see the file comment). STRICT_FIFO (the default) stops at the first
 * entry that does not fit; FIRST_FIT lets later entries that fit pass it. WAITING
 * entries whose own expires_at has passed are expired on the way, wherever they are in
 * the queue (they lose their place, and a lapsed head no longer blocks). Returns the
 * promotions, in SKU order then queue order.
 *
 * The caller must hold (or be able to take, in SKU order, with nothing locked after
 * them) the inventory rows of `skus`; they are locked again here, which is free when
 * already held.
 */
export async function promoteWaiting(db: Db, skus: Iterable<string>, origin: ChangeOrigin, settings: HoldTermSettings): Promise<Promotion[]> {
  return (await promoteAndExpireWaiting(db, skus, origin, settings)).promotions;
}

/**
 * promoteWaiting, also telling which lapsed WAITING entries it expired (the worker's
 * sweep of entries past their max_wait counts them).
 */
export async function promoteAndExpireWaiting(db: Db, skus: Iterable<string>, origin: ChangeOrigin, settings: HoldTermSettings): Promise<WaitlistOutcome> {
  const outcome: WaitlistOutcome = { promotions: [], expired: [] };
  const codes = skuOrder(skus);
  if (codes.length === 0) return outcome;
  // Which of them have anybody waiting: one statement, locks in SKU order.
  const rows = await query<InventoryRow & SkuRow>(
    db,
    `SELECT i.*, s.*
       FROM inventory i JOIN skus s ON s.code = i.sku_code
      WHERE i.sku_code = ANY(?::text[])
      ORDER BY i.sku_code
        FOR NO KEY UPDATE OF i`,
    [codes],
  );
  for (const row of rows) {
    if (row.waitlist_count === 0) continue;
    const done = await promoteSku(db, row, origin, settings);
    outcome.promotions.push(...done.promotions);
    outcome.expired.push(...done.expired);
  }
  return outcome;
}

async function promoteSku(db: Db, row: InventoryRow & SkuRow, origin: ChangeOrigin, settings: HoldTermSettings): Promise<WaitlistOutcome> {
  // Entries past their own deadline leave first: a lapsed head must neither be promoted nor block.
  const expired = await expireLapsedWaiting(db, row.sku_code);
  const chosen = await headsThatFit(db, row.sku_code, row.available, row.waitlist_promotion_policy === 'FIRST_FIT');
  if (chosen.length === 0) return { promotions: [], expired };

  const { ttlMs, lifetimeMs } = promotionTerms(row, settings);
  const ids = chosen.map(() => randomUUID());
  // The holds and their lines (created_by "system:waitlist", no request_id: they answer
  // no request; each names its entry). Times from clock_timestamp(): the returning
  // transaction may have started long before (a sweep), and the hold's life starts now.
  const holds = await query<{ id: string; expires_at: Date }>(
    db,
    `WITH t AS (SELECT clock_timestamp() AS at),
     e AS (SELECT * FROM unnest(?::uuid[], ?::uuid[], ?::text[], ?::int[]) AS e(id, entry_id, customer_id, quantity)),
     h AS (
       INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, created_at, updated_at, expires_at, max_expires_at, waitlist_entry_id)
       SELECT e.id, 'HOLD', 'HELD', e.customer_id, ?, NULL, 'PESSIMISTIC', t.at, t.at,
              t.at + ?::bigint * interval '1 millisecond', t.at + ?::bigint * interval '1 millisecond', e.entry_id
         FROM e, t
       RETURNING id, expires_at, created_at
     ), lines AS (
       INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
       SELECT h.id, ?, e.quantity, 'HELD', h.expires_at, h.created_at FROM h JOIN e ON e.id = h.id
     )
     SELECT id, expires_at FROM h`,
    [ids, chosen.map((e) => e.id), chosen.map((e) => e.customer_id), chosen.map((e) => e.quantity), WAITLIST_PRINCIPAL, ttlMs, lifetimeMs, row.sku_code],
  );
  const expiresAt = new Map(holds.map((h) => [h.id, h.expires_at]));

  const applied = await applyCounterChanges(
    db,
    chosen.map((e, i) => ({ sku: row.sku_code, operation: 'WAITLIST_PROMOTED' as const, reservationId: ids[i]!, reserved: e.quantity })),
    { actor: WAITLIST_PRINCIPAL, requestId: origin.requestId, reconciliationRunId: null },
  );
  if (applied.refused.length > 0) throw new Error(`waitlist promotion refused on ${row.sku_code}: the locked row's available units disagree`);

  // A function planned on every call (migration 0008), like closeWaiting's and
  // settlePromotedEntries': as a statement of the transaction, its generic plan, if
  // made while the table looked empty, read every WAITING entry of every SKU to find these.
  const promoted = await query<WaitlistEntryRow>(db, `SELECT * FROM holdfast_promote_entries(?::uuid[], ?::uuid[])`, [chosen.map((e) => e.id), ids]);
  await moveWaitlistCounters(db, row.sku_code, -chosen.length, -chosen.reduce((n, e) => n + e.quantity, 0));
  const byId = new Map(promoted.map((e) => [e.id, e]));
  return { promotions: chosen.map((e, i) => ({ entry: byId.get(e.id)!, reservationId: ids[i]!, expiresAt: expiresAt.get(ids[i]!)! })), expired };
}

/**
 * The live WAITING entries that `available` units serve, in queue order: under
 * STRICT_FIFO the head and those behind it until one does not fit; under FIRST_FIT
 * every entry that fits in what is left, in order.
 *
 * The cost is bounded by the units returned, not by the queue's length: each entry
 * wants at least one unit, so at most `available` entries can be chosen, and the
 * reads stop there (LIMIT, and under FIRST_FIT only entries that fit are read, from
 * waitlist_entries_waiting_sku_seq_idx with quantity INCLUDEd). No row locks: every
 * writer of a WAITING entry holds the SKU's inventory row lock, which the caller
 * holds, so the queue cannot change under this read.
 */
async function headsThatFit(db: Db, sku: string, available: number, firstFit: boolean): Promise<WaitlistEntryRow[]> {
  const chosen: WaitlistEntryRow[] = [];
  let after = 0;
  while (available > 0) {
    const next = await query<WaitlistEntryRow>(
      db,
      `SELECT * FROM waitlist_entries
        WHERE sku_code = ? AND status = 'WAITING' AND seq > ?
          AND (expires_at IS NULL OR expires_at > now())
          ${firstFit ? 'AND quantity <= ?' : ''}
        ORDER BY seq
        LIMIT ?`,
      firstFit ? [sku, after, available, available] : [sku, after, available],
    );
    for (const e of next) {
      if (e.quantity <= available) {
        chosen.push(e);
        available -= e.quantity;
      } else if (!firstFit) {
        return chosen; // STRICT_FIFO: the head blocks the entries behind it
      }
      after = Number(e.seq);
    }
    // STRICT_FIFO reads at most `available` entries once; FIRST_FIT reads on while
    // something fitted (the first entry of each read fits, so this ends).
    if (!firstFit || next.length === 0) return chosen;
  }
  return chosen;
}

/**
 * Closes the SKU's WAITING entries whose own deadline (max_wait) has passed, wherever
 * they are in the queue, as EXPIRED. The caller holds the SKU's inventory row lock.
 * now(), not clock_timestamp(): a stable bound lets the scan use
 * waitlist_entries_waiting_expires_at_idx; what lapses during the transaction is the
 * worker's next sweep's.
 */
async function expireLapsedWaiting(db: Db, sku: string): Promise<WaitlistEntryRow[]> {
  const expired = await query<WaitlistEntryRow>(
    db,
    `UPDATE waitlist_entries SET status = 'EXPIRED', closed_at = now(), updated_at = now()
      WHERE sku_code = ? AND status = 'WAITING' AND expires_at <= now()
      RETURNING *`,
    [sku],
  );
  await moveWaitlistCounters(db, sku, -expired.length, -expired.reduce((n, e) => n + e.quantity, 0));
  return expired;
}

/** WAITING entries (locked by the caller, under the SKU's row lock) leave the queue. */
export async function closeWaiting(db: Db, sku: string, entries: readonly WaitlistEntryRow[], status: 'EXPIRED' | 'CANCELLED'): Promise<WaitlistEntryRow[]> {
  if (entries.length === 0) return [];
  // Planned on every call (migration 0008; promoteSku says why).
  const closed = await query<WaitlistEntryRow>(db, `SELECT * FROM holdfast_close_waiting(?, ?::uuid[])`, [status, entries.map((e) => e.id)]);
  await moveWaitlistCounters(db, sku, -closed.length, -closed.reduce((n, e) => n + e.quantity, 0));
  return closed;
}

/** waitlist_count / waitlist_units += the deltas, with a version bump (no ledger event: contract). */
export async function moveWaitlistCounters(db: Db, sku: string, count: number, units: number): Promise<void> {
  if (count === 0 && units === 0) return;
  await query(
    db,
    `UPDATE inventory SET waitlist_count = waitlist_count + ?, waitlist_units = waitlist_units + ?, version = version + 1, updated_at = now()
      WHERE sku_code = ?`,
    [count, units, sku],
  );
}

/**
 * The entries of promoted holds follow their hold: CONFIRMED when it is confirmed,
 * EXPIRED when it expires (the turn is lost), CANCELLED when it is released. Only
 * PROMOTED entries change. Call in the transaction that moves the holds.
 */
export async function settlePromotedEntries(db: Db, reservationIds: readonly string[], status: Extract<WaitlistStatus, 'CONFIRMED' | 'EXPIRED' | 'CANCELLED'>): Promise<WaitlistEntryRow[]> {
  if (reservationIds.length === 0) return [];
  // Planned on every call (migration 0008; promoteSku says why).
  return query<WaitlistEntryRow>(db, `SELECT * FROM holdfast_settle_promoted(?, ?::uuid[])`, [status, [...reservationIds]]);
}
