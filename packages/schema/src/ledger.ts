/**
 * The statements that change stock counters. Every writer of `inventory` (the
 * reservation-service's RPCs, the expiry-worker's sweeps and repairs) goes through
 * these functions, so the rules below hold for all of them:
 *
 * - LEDGER IN THE SAME STATEMENT. A counter change and its audit events are one SQL
 *   statement (a data-modifying CTE): the events are computed from the values the
 *   UPDATE returned while it holds the row lock, so they cannot disagree with the row,
 *   and recording them costs no extra round trip inside the lock window.
 * - LOCK ORDER. Rows are locked in SKU order (COLLATE "C", the contract's ORDERS),
 *   whoever locks them: a single-row UPDATE needs no ordering; several rows are first
 *   locked by `lockInventoryRows` (SELECT ... ORDER BY sku_code FOR NO KEY UPDATE
 *   locks rows as the sorted output is produced), because the row order of an
 *   UPDATE ... FROM join is the planner's choice. Reservation headers are always
 *   locked before inventory rows (lifecycle RPCs, the sweeper), and a transaction
 *   that already holds inventory rows only ever claims headers with SKIP LOCKED (the
 *   in-line reclaim), so no cycle of waits can form.
 * - LOCK WINDOW. A hot row stays locked from its first write until COMMIT, so callers
 *   write everything else first (reservation rows, the idempotency record) and call
 *   `applyCounterChanges` last, then commit; for one SKU, with the COMMIT in the
 *   same round trip (`finish`), so the lock is not held across a round trip at all.
 *   Rows written in the counter change's own statement (`alongside`) are written
 *   before its UPDATE too (a one-time filter), not after it as PostgreSQL would.
 * - GUARD. The UPDATE only touches rows whose counters stay valid (no counter
 *   negative, available >= 0) and, when asked, whose version is the expected one
 *   (compare-and-set). PostgreSQL re-evaluates that WHERE on the newest row version
 *   after waiting for a concurrent writer (READ COMMITTED), so the check and the write
 *   are one atomic step. If any row fails the guard, nothing is changed and the failing
 *   SKUs are reported in `refused`; the CHECK constraints on `inventory` stay the last
 *   line of defence.
 */
import { PgTransaction, builtOnce, commitWith, query, type Db } from './query.js';
import type { AuditEventRow, AuditOperation, InventoryRow } from './rows.js';
import { promoteWaiting, settlePromotedEntries, type HoldTermSettings, type Promotion } from './waitlist.js';

/** One audit event to write: a change of one SKU's counters, for one reservation (or none). */
export interface CounterChange {
  sku: string;
  operation: AuditOperation;
  reservationId?: string | null;
  onHand?: number;
  reserved?: number;
  allocated?: number;
  reason?: string | null;
  /**
   * Who made this change, when one statement writes the changes of several requests
   * (a hot SKU's group commit: one event per hold, each with its own caller and
   * request id). Unset: the statement's `origin`.
   */
  origin?: ChangeOrigin;
}

/** Who made a change (the ledger's actor, request id and, for repairs, the run). */
export interface ChangeOrigin {
  /** "<role>:<subject>", "worker:<id>" or "system:waitlist". */
  actor: string;
  /** The client's request_id; null for worker-initiated changes. */
  requestId: string | null;
  reconciliationRunId?: string | null;
}

export interface ApplyOptions {
  /**
   * Compare-and-set: apply a SKU's changes only if its row is at exactly this version
   * (OPTIMISTIC strategy, AdjustStock.expected_version). SKUs not in the map are not
   * version-checked.
   */
  expectedVersions?: ReadonlyMap<string, number>;
  /**
   * A new buyer's take (CreateHold, CreateAllocation): refused on a SKU whose waitlist
   * has WAITING entries under STRICT_FIFO (the default policy), since its units are the
   * queue's first (issue 6; the migration's inventory comment). Under FIRST_FIT no extra
   * guard is needed: every return of stock promotes every entry that fits, so what is
   * left available fits nobody who waits.
   */
  yieldToWaitlist?: boolean;
  /**
   * Data-modifying CTEs (`name AS (...)`, comma-separated, `?` parameters) to run in
   * the same statement, e.g. the rows the change is for: one round trip fewer. Only
   * for a change of one SKU, whose statement takes the row lock itself; they run
   * whether or not the guard refuses the change. The CTE names of the statement
   * (ch, expected, per_sku, u, ev) are taken.
   *
   * They must define `written`: a CTE whose rows are those of their data-modifying
   * CTEs (`SELECT 1 FROM a UNION ALL SELECT 1 FROM b`; they need RETURNING), so that
   * counting them writes them. (Not a sum of `(SELECT count(*) FROM a)`: PostgreSQL
   * drops an output column nobody reads, and the CTE scans with it, as it did the
   * first version of this.) The UPDATE reads it first,
   * as a one-time filter, so those rows are written BEFORE the row is locked and the
   * lock covers only the UPDATE, the events and the commit (LOCK WINDOW). Left to
   * themselves, PostgreSQL would run them at the end of the statement, after the
   * UPDATE: inside the lock window (issue 8: a hot SKU's batch inserted its 90
   * reservations, lines and records there). bench/pgbench/hold-one-statement.sql,
   * the ceiling, is written the same way.
   */
  alongside?: { ctes: string; params: readonly unknown[] };
  /** False: the caller needs only `refused`, and `events` comes back empty. Default true. */
  events?: boolean;
  /**
   * This change (with its `alongside` CTEs) is the transaction's last statement: it is
   * sent with the COMMIT (query.ts commitWith), so it must be all or nothing by itself.
   * Instead of coming back in `refused`, a change the guard refuses fails the statement
   * (holdfast_refuse, migration 0005) and CounterChangeRefused ("refused") is thrown,
   * the transaction over and nothing of it kept. `aliveForMs`: the statement also fails
   * ("late") if it ends that long or longer after the transaction began (now(): the
   * time a new hold's expiry counts from), so that no hold is committed already dead
   * after waiting for the row, nor after its caller's deadline (Claimed.deadlineMs).
   * Only for a change of one SKU, on a PgTransaction; `events` comes back empty.
   */
  finish?: { aliveForMs: number | null };
}

/** A change sent with its COMMIT (ApplyOptions.finish) was refused: the transaction rolled back. */
export class CounterChangeRefused extends Error {
  constructor(
    /** "refused": the guard (stock, version, the waitlist's claim); "late": the statement ended past `aliveForMs`. */
    readonly reason: 'refused' | 'late',
    readonly skus: string[],
  ) {
    super(`counter change ${reason === 'late' ? 'too late' : 'refused'} on ${skus.join(', ')}; the transaction rolled back`);
  }
}

export interface AppliedChanges {
  /** The events written, in SKU order and, within a SKU, in the order of `changes`. */
  events: AuditEventRow[];
  /**
   * SKUs whose changes were refused: they would have made a counter negative or
   * available < 0, the version did not match, or the SKU has no inventory row. All or
   * nothing: when this is not empty, no row was changed and no event written.
   */
  refused: string[];
}

/** Distinct SKU codes in SKU order (byte-wise, the order of COLLATE "C"). */
export function skuOrder(codes: Iterable<string>): string[] {
  return [...new Set(codes)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Locks the inventory rows of `skus` in SKU order and returns them (fresh values, in
 * SKU order). Waits at most the connection's lock_timeout per row. SKUs without a row
 * are simply absent from the result.
 */
export async function lockInventoryRows(db: Db, skus: readonly string[]): Promise<InventoryRow[]> {
  return query<InventoryRow>(db, `SELECT * FROM inventory WHERE sku_code = ANY(?::text[]) ORDER BY sku_code FOR NO KEY UPDATE`, [
    skuOrder(skus),
  ]);
}

/** Reads inventory rows without locking (one statement, so one consistent snapshot). */
export async function readInventoryRows(db: Db, skus: readonly string[]): Promise<InventoryRow[]> {
  return query<InventoryRow>(db, `SELECT * FROM inventory WHERE sku_code = ANY(?::text[]) ORDER BY sku_code`, [skuOrder(skus)]);
}

/*
 * One statement: sum the changes per SKU, update each SKU's row once (version moves by
 * the number of its events, so every event gets a version of its own), and insert one
 * audit event per change with its before/after values. Within a SKU the events apply
 * in `ord` order: event k's "after" is the row's final value minus the deltas of the
 * events after it (a window over the following rows), its "before" is after - delta.
 *
 * ORDER BY in the INSERT's SELECT makes ids follow SKU order, then `ord`.
 */
const applyCounterChangesCtes = (writtenFirst: string) => `
ch AS (
  SELECT *
    FROM unnest(?::int[], ?::text[], ?::text[], ?::uuid[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::text[])
      AS t(ord, sku_code, operation, reservation_id, d_on_hand, d_reserved, d_allocated, reason, actor, request_id)
),
expected AS (
  SELECT * FROM unnest(?::text[], ?::bigint[]) AS e(sku_code, version)
),
per_sku AS (
  SELECT ch.sku_code COLLATE "C" AS sku_code, sum(d_on_hand) AS d_on_hand, sum(d_reserved) AS d_reserved,
         sum(d_allocated) AS d_allocated, count(*) AS n,
         (SELECT e.version FROM expected e WHERE e.sku_code = ch.sku_code) AS expected_version,
         ?::boolean AND NOT EXISTS (SELECT 1 FROM skus s WHERE s.code = ch.sku_code AND s.waitlist_promotion_policy = 'FIRST_FIT') AS yields
    FROM ch GROUP BY ch.sku_code
),
u AS (
  UPDATE inventory i
     SET on_hand = i.on_hand + p.d_on_hand,
         reserved = i.reserved + p.d_reserved,
         allocated = i.allocated + p.d_allocated,
         version = i.version + p.n,
         updated_at = now()
    FROM per_sku p
   WHERE i.sku_code = p.sku_code
     -- The guard: every counter stays >= 0 and nothing is promised twice.
     AND i.on_hand + p.d_on_hand >= 0
     AND i.reserved + p.d_reserved >= 0
     AND i.allocated + p.d_allocated >= 0
     AND (i.on_hand + p.d_on_hand) - (i.reserved + p.d_reserved) - (i.allocated + p.d_allocated) >= 0
     -- Compare-and-set, for the SKUs that have an expected version. A plain qual on the
     -- row and the joined per_sku row, never a subquery on i: when the UPDATE waited
     -- for a concurrent writer, PostgreSQL re-checks the WHERE on the newest row
     -- version (EvalPlanQual), but a NOT EXISTS planned as an anti-join is not
     -- re-evaluated against it, and a moved version would slip through (a test caught
     -- exactly that).
     AND (p.expected_version IS NULL OR i.version = p.expected_version)
     -- STRICT_FIFO: a new buyer takes nothing while anybody waits (plain qual on i, so
     -- re-checked on the newest row version like the rest).
     AND (NOT p.yields OR i.waitlist_count = 0)${writtenFirst}
  RETURNING i.sku_code, i.on_hand, i.reserved, i.allocated, i.version
),
ev AS (
  SELECT ch.*, u.on_hand AS f_on_hand, u.reserved AS f_reserved, u.allocated AS f_allocated, u.version AS f_version,
         coalesce(sum(ch.d_on_hand) OVER later, 0) AS later_on_hand,
         coalesce(sum(ch.d_reserved) OVER later, 0) AS later_reserved,
         coalesce(sum(ch.d_allocated) OVER later, 0) AS later_allocated,
         count(*) OVER later AS later_events
    FROM ch JOIN u ON u.sku_code = ch.sku_code
  WINDOW later AS (PARTITION BY ch.sku_code ORDER BY ch.ord ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
)`;
const APPLY_COUNTER_CHANGES = applyCounterChangesCtes('');
/*
 * With `alongside` CTEs: the UPDATE waits on a one-time filter (a qual without the
 * row's columns: evaluated once, before the scan that locks the row) that reads their
 * `written`, so their rows are written first. Always true; the planner cannot know.
 */
const APPLY_AFTER_ALONGSIDE = applyCounterChangesCtes(`
     -- Rows first, counter last: the alongside rows are written before the row is locked.
     AND (SELECT count(*) FROM written) >= 0`);
const INSERT_EVENTS = `
INSERT INTO audit_events (
  operation, sku_code, reservation_id, delta_on_hand, delta_reserved, delta_allocated,
  on_hand_before, reserved_before, allocated_before, on_hand_after, reserved_after, allocated_after,
  version_after, actor, request_id, reason, reconciliation_run_id)
SELECT operation, sku_code, reservation_id, d_on_hand, d_reserved, d_allocated,
       f_on_hand - later_on_hand - d_on_hand, f_reserved - later_reserved - d_reserved, f_allocated - later_allocated - d_allocated,
       f_on_hand - later_on_hand, f_reserved - later_reserved, f_allocated - later_allocated,
       f_version - later_events, actor, request_id, reason, ?::uuid
  FROM ev
 ORDER BY sku_code COLLATE "C", ord  -- SKU order whatever the database's default collation
`;
/** The events written, or (ApplyOptions.events false) only their SKUs: fewer columns for the driver to parse. */
const RETURNING_EVENTS = 'RETURNING *';
const RETURNING_SKUS = 'RETURNING sku_code';
const APPLY_ALONE_EVENTS = `WITH ${APPLY_COUNTER_CHANGES}${INSERT_EVENTS}${RETURNING_EVENTS}`;
const APPLY_ALONE_SKUS = `WITH ${APPLY_COUNTER_CHANGES}${INSERT_EVENTS}${RETURNING_SKUS}`;
/*
 * ApplyOptions.finish: the events are written by a CTE (a data-modifying CTE runs
 * whether or not anything reads it), and the statement's own SELECT fails it when the
 * guard refused the change (u updated no row), or when it ends too late for a new
 * hold (clock_timestamp(), after any wait for the row lock; the parameter: aliveForMs,
 * NULL for none). CASE evaluates its branches in order, so "refused" wins.
 */
const FINISH = `,
logged AS (${INSERT_EVENTS}${RETURNING_SKUS}
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM u) THEN holdfast_refuse('refused')
            WHEN clock_timestamp() >= now() + ?::bigint * interval '1 millisecond' THEN holdfast_refuse('late')
       END AS refused`;

/**
 * The statement with `alongside` CTEs: one string per distinct CTE text (a handful),
 * built once, so that a caller passing the same CTE string each time gets the same
 * statement string back (its lookup on the way out is then cheap).
 */
const WITH_ALONGSIDE = {
  events: builtOnce((ctes) => `WITH ${ctes},\n${APPLY_AFTER_ALONGSIDE}${INSERT_EVENTS}${RETURNING_EVENTS}`),
  skus: builtOnce((ctes) => `WITH ${ctes},\n${APPLY_AFTER_ALONGSIDE}${INSERT_EVENTS}${RETURNING_SKUS}`),
  finish: builtOnce((ctes) => `WITH ${ctes},\n${APPLY_AFTER_ALONGSIDE}${FINISH}`),
};
const APPLY_ALONE_FINISH = `WITH ${APPLY_COUNTER_CHANGES}${FINISH}`;

/** The statement's text: with or without `alongside` CTEs, returning events, SKUs or (finish) one row of nothing. */
function applyText(alongside: string | undefined, returning: 'events' | 'skus' | 'finish'): string {
  if (alongside !== undefined) return WITH_ALONGSIDE[returning](alongside);
  return returning === 'events' ? APPLY_ALONE_EVENTS : returning === 'skus' ? APPLY_ALONE_SKUS : APPLY_ALONE_FINISH;
}

/**
 * Applies counter changes and writes their audit events in one statement (see the
 * rules at the top of this file), all or nothing. Locks the affected rows in SKU
 * order first when more than one SKU is involved; a single row is locked by the
 * UPDATE itself.
 */
export async function applyCounterChanges(
  db: Db,
  changes: readonly CounterChange[],
  origin: ChangeOrigin,
  options: ApplyOptions = {},
): Promise<AppliedChanges> {
  if (changes.length === 0) return { events: [], refused: [] };
  const skus = skuOrder(changes.map((c) => c.sku));
  const alongside = options.alongside;
  if (alongside !== undefined && skus.length > 1) throw new Error('applyCounterChanges: `alongside` is for a change of one SKU');
  if (skus.length > 1) {
    // Several rows: lock them in SKU order, then decide all or nothing on the locked
    // values (the UPDATE's own guard would skip failing rows and apply the others).
    const locked = await lockInventoryRows(db, skus);
    const yielding = options.yieldToWaitlist === true ? await strictQueues(db, locked) : new Set<string>();
    const refused = refusedByGuard(locked, skus, changes, options.expectedVersions, yielding);
    if (refused.length > 0) return { events: [], refused };
  }
  const expected = [...(options.expectedVersions ?? new Map<string, number>())];
  const finish = options.finish;
  if (finish !== undefined && (skus.length > 1 || !(db instanceof PgTransaction))) {
    throw new Error('applyCounterChanges: `finish` is for a change of one SKU in a PgTransaction');
  }
  const events = options.events !== false && finish === undefined;
  const text = applyText(alongside?.ctes, finish !== undefined ? 'finish' : events ? 'events' : 'skus');
  const params = [
    ...(alongside?.params ?? []),
    changes.map((_, i) => i),
    changes.map((c) => c.sku),
    changes.map((c) => c.operation),
    changes.map((c) => c.reservationId ?? null),
    changes.map((c) => c.onHand ?? 0),
    changes.map((c) => c.reserved ?? 0),
    changes.map((c) => c.allocated ?? 0),
    changes.map((c) => c.reason ?? null),
    changes.map((c) => (c.origin ?? origin).actor),
    changes.map((c) => (c.origin ?? origin).requestId),
    expected.map(([sku]) => sku),
    expected.map(([, version]) => version),
    options.yieldToWaitlist === true,
    origin.reconciliationRunId ?? null,
  ];
  if (finish !== undefined) {
    try {
      await commitWith(db as PgTransaction, text, [...params, finish.aliveForMs]);
    } catch (err) {
      const { code, detail } = err as { code?: unknown; detail?: unknown };
      if (code === 'HF001' && (detail === 'refused' || detail === 'late')) throw new CounterChangeRefused(detail, skus);
      throw err;
    }
    return { events: [], refused: [] };
  }
  const rows = await query<AuditEventRow>(db, text, params);
  const changed = new Set(rows.map((r) => r.sku_code));
  return { events: events ? rows : [], refused: skus.filter((s) => !changed.has(s)) };
}

/** Of these (locked) rows, the SKUs with WAITING entries under STRICT_FIFO: a new buyer takes nothing there. */
export async function strictQueues(db: Db, rows: readonly InventoryRow[]): Promise<Set<string>> {
  const queued = rows.filter((r) => r.waitlist_count > 0).map((r) => r.sku_code);
  if (queued.length === 0) return new Set();
  const strict = await query<{ code: string }>(
    db,
    `SELECT code FROM skus WHERE code = ANY(?::text[]) AND waitlist_promotion_policy IS DISTINCT FROM 'FIRST_FIT'`,
    [queued],
  );
  return new Set(strict.map((r) => r.code));
}

/** The SQL guard of APPLY_COUNTER_CHANGES, evaluated on rows this transaction has locked. */
function refusedByGuard(
  rows: readonly InventoryRow[],
  skus: readonly string[],
  changes: readonly CounterChange[],
  expectedVersions: ReadonlyMap<string, number> | undefined,
  yielding: ReadonlySet<string>,
): string[] {
  const bySku = new Map(rows.map((r) => [r.sku_code, r]));
  return skus.filter((sku) => {
    const row = bySku.get(sku);
    if (row === undefined) return true;
    if (yielding.has(sku)) return true;
    const expected = expectedVersions?.get(sku);
    if (expected !== undefined && expected !== row.version) return true;
    let onHand = row.on_hand;
    let reserved = row.reserved;
    let allocated = row.allocated;
    for (const c of changes) {
      if (c.sku !== sku) continue;
      onHand += c.onHand ?? 0;
      reserved += c.reserved ?? 0;
      allocated += c.allocated ?? 0;
    }
    return onHand < 0 || reserved < 0 || allocated < 0 || onHand - reserved - allocated < 0;
  });
}

// ---------------------------------------------------------------------------------------
// Reconciliation: recording drift.
// ---------------------------------------------------------------------------------------

/** What a SKU's ledger says its counters are (Σ deltas), to record its drift against. */
export interface LedgerCounters {
  sku: string;
  onHand: number;
  reserved: number;
  allocated: number;
}

/*
 * One RECONCILIATION_REPAIR event per SKU that moves no counter: before = the ledger's
 * values, after = the row as it is, version_after = its current version. Counters
 * changed outside the ledger (a bug, a hand-made UPDATE) leave "counters = Σ deltas"
 * broken, and a correction alone (before = found, after = repaired) would keep it
 * broken by exactly the drift; this event puts the drift itself on the record, so the
 * chain "each event's before = the previous event's after" and the replay hold again.
 * The values come from the row in the same statement, so the event cannot disagree
 * with it. ORDER BY makes ids follow SKU order.
 */
const RECORD_DRIFT = `
INSERT INTO audit_events (
  operation, sku_code, delta_on_hand, delta_reserved, delta_allocated,
  on_hand_before, reserved_before, allocated_before, on_hand_after, reserved_after, allocated_after,
  version_after, actor, request_id, reason, reconciliation_run_id, details)
SELECT 'RECONCILIATION_REPAIR', i.sku_code,
       i.on_hand - d.on_hand, i.reserved - d.reserved, i.allocated - d.allocated,
       d.on_hand, d.reserved, d.allocated, i.on_hand, i.reserved, i.allocated,
       i.version, ?, ?, ?, ?::uuid, '{"repair": "record_drift"}'::jsonb
  FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[]) AS d(sku_code, on_hand, reserved, allocated)
  JOIN inventory i ON i.sku_code = d.sku_code
 ORDER BY i.sku_code
RETURNING *`;

/**
 * Records, per SKU, the drift between its ledger (`ledger`: Σ deltas) and its row:
 * the first of the two RECONCILIATION_REPAIR events of a repair (the migration's
 * audit_events comment); the correction is then an ordinary applyCounterChanges.
 * The caller must hold the rows' locks (lockInventoryRows) from the read that found
 * the drift until COMMIT, so no other event of these SKUs can come between.
 */
export async function recordDrift(db: Db, ledger: readonly LedgerCounters[], origin: ChangeOrigin & { reason: string }): Promise<AuditEventRow[]> {
  if (ledger.length === 0) return [];
  return query<AuditEventRow>(db, RECORD_DRIFT, [
    origin.actor,
    origin.requestId,
    origin.reason,
    origin.reconciliationRunId ?? null,
    ledger.map((l) => l.sku),
    ledger.map((l) => l.onHand),
    ledger.map((l) => l.reserved),
    ledger.map((l) => l.allocated),
  ]);
}

// ---------------------------------------------------------------------------------------
// Expiry: the worker's sweep and the in-line reclaim of CreateHold share these.
// ---------------------------------------------------------------------------------------

/** A line of a hold being expired. */
export interface HeldLine {
  reservation_id: string;
  sku_code: string;
  quantity: number;
}

/**
 * Claims expired HELD holds whose every line is on one of `lockSet`'s SKUs (the in-line
 * reclaim: a CreateHold that holds, or is about to take, exactly those rows in SKU
 * order). Headers are claimed FOR UPDATE SKIP LOCKED: a header another transaction is
 * confirming, releasing or sweeping is skipped, never waited for (that transaction may
 * be waiting for our inventory rows). Holds that also touch other SKUs are left to the
 * sweeper, which locks headers first and SKUs in order.
 *
 * Expiry is judged by clock_timestamp(), not now(): the caller may have waited for
 * row locks since its transaction started, and holds that died meanwhile are dead.
 * `(SELECT clock_timestamp())` is evaluated once per statement (an InitPlan), so it
 * can still bound the index scan; a bare volatile call would be re-evaluated per row.
 */
export async function claimReclaimableHolds(db: Db, lockSet: readonly string[], limit: number): Promise<string[]> {
  const skus = skuOrder(lockSet);
  const rows = await query<{ id: string }>(
    db,
    `SELECT r.id
       FROM reservations r
      WHERE r.id IN (
              SELECT i.reservation_id
                FROM reservation_items i
               WHERE i.sku_code = ANY(?::text[]) AND i.status = 'HELD' AND i.expires_at <= (SELECT clock_timestamp())
                 AND NOT EXISTS (SELECT 1 FROM reservation_items o
                                  WHERE o.reservation_id = i.reservation_id AND o.sku_code <> ALL(?::text[])))
        AND r.status = 'HELD' AND r.expires_at <= (SELECT clock_timestamp())
      ORDER BY r.expires_at, r.id
      LIMIT ?
        FOR UPDATE SKIP LOCKED`,
    [skus, skus, limit],
  );
  return rows.map((r) => r.id);
}

/**
 * Moves claimed (locked) HELD holds that are past their expiry to EXPIRED, with their
 * lines, and returns their units: one HOLD_EXPIRED event per line. The caller must
 * hold the headers' row locks (claimReclaimableHolds, or the sweeper's claim), and, if
 * it already holds inventory rows, every SKU of these holds must be among them.
 * Re-checks status and expiry, so a hold confirmed meanwhile is left alone.
 */
export async function expireClaimedHolds(
  db: Db,
  reservationIds: readonly string[],
  origin: ChangeOrigin,
  waitlist: HoldTermSettings,
): Promise<AppliedChanges & { expired: string[]; promotions: Promotion[] }> {
  if (reservationIds.length === 0) return { events: [], refused: [], expired: [], promotions: [] };
  const lines = await query<HeldLine>(
    db,
    `WITH h AS (
       UPDATE reservations
          SET status = 'EXPIRED', closed_at = GREATEST(now(), expires_at), updated_at = now(), close_reason = 'expired'
        -- clock_timestamp(), not now(): the transaction may have started (and waited
        -- for this header's lock) before the hold's expiry. closed_at is never before
        -- the moment the hold died.
        WHERE id = ANY(?::uuid[]) AND status = 'HELD' AND expires_at <= clock_timestamp()
        RETURNING id
     )
     UPDATE reservation_items i SET status = 'EXPIRED'
       FROM h WHERE i.reservation_id = h.id
     RETURNING i.reservation_id, i.sku_code, i.quantity`,
    [[...reservationIds]],
  );
  const applied = await applyCounterChanges(
    db,
    lines.map((l) => ({ sku: l.sku_code, operation: 'HOLD_EXPIRED' as const, reservationId: l.reservation_id, reserved: -l.quantity })),
    origin,
  );
  if (applied.refused.length > 0) {
    // reserved < Σ HELD lines: the books were already wrong. Fail loudly (rolls back).
    throw new Error(`expiring holds would make reserved negative for ${applied.refused.join(', ')}: counters disagree with the lines`);
  }
  const expired = [...new Set(lines.map((l) => l.reservation_id))];
  // A promoted hold that expires loses its entry's turn; the returned units go to the
  // SKUs' waitlists first, in this same transaction (waitlist.ts).
  await settlePromotedEntries(db, expired, 'EXPIRED');
  const promotions = await promoteWaiting(db, lines.map((l) => l.sku_code), origin, waitlist);
  return { ...applied, expired, promotions };
}
