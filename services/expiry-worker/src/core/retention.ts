/**
 * Retention, every RETENTION_INTERVAL_MS on every replica: deletes what has outlived
 * its purpose, in bounded batches (one short transaction each, so neither a long
 * lock nor a huge WAL burst), until a batch comes back short.
 *
 * - idempotency_records past expires_at (the end of their replay window), except an
 *   IN_FLIGHT record whose lease has not run out: its work is still running
 *   (Idempotency.runLeased) and will record its response there. Request ids attached
 *   to reservations stay taken without their record (the reservations' unique key).
 * - inventory_snapshots older than SNAPSHOT_RETENTION_MS.
 * - worker_replicas rows without a heartbeat for a day (replicas that died without
 *   deregistering; they left the listing after a minute).
 * - customer_attempt_windows rows (the rate limiter's sliding logs) whose newest
 *   admitted attempt has left its window: such a row admits like an absent one, so
 *   deleting it changes no decision. The window is the SKU's as it is now: a row's
 *   expires_at was computed with the window of its last attempt, and UpdateSku may
 *   have lengthened it since (its attempts then still count). A concurrent
 *   attempt's upsert either finds the
 *   row (and we skip it, locked) or inserts it afresh after our DELETE.
 * - The ledger (audit_events) is never pruned: it is the evidence the counters are
 *   checked against, and its append-only trigger would refuse anyway.
 *
 * Replicas do not fight: each batch first tries a per-table advisory lock and leaves
 * the table to the replica that holds it; rows are claimed FOR UPDATE SKIP LOCKED,
 * so a batch never waits for a row another transaction has locked (an expired
 * idempotency record that a new claim is taking over is skipped: once that claim
 * commits the record has a new window). A claim that meets a row we have locked
 * waits for our DELETE and then inserts its record afresh.
 */
import { query } from "@holdfast/schema";
import type { WorkerDeps } from "./context.js";

/** Rows per DELETE. */
const BATCH_SIZE = 5_000;

type Table = "idempotency_records" | "inventory_snapshots" | "worker_replicas" | "customer_attempt_windows";

interface Target {
  table: Table;
  /** pg_try_advisory_xact_lock key: ('Hold', a tag per table) as two int4. */
  lock: readonly [number, number];
  sql: string;
  params(deps: WorkerDeps): unknown[];
}

/**
 * One batch: the oldest `LIMIT` matching rows, locked (skipping locked ones), then
 * deleted by their ctid (stable while we hold their row lock; a TID scan). The
 * condition's index gives the order and bounds the scan. Fixed SQL text only.
 */
const batch = (table: Table, condition: string, order: string) => `
WITH gone AS (
  DELETE FROM ${table}
   WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM ${table}
            WHERE ${condition}
            ORDER BY ${order}
            LIMIT ?
              FOR UPDATE SKIP LOCKED))
  RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;

const TARGETS: readonly Target[] = [
  {
    table: "idempotency_records",
    lock: [0x486f6c64, 0x4964656d], // 'Idem'
    // idempotency_records_expires_at_idx.
    sql: batch(
      "idempotency_records",
      `expires_at < now() AND (state = 'COMPLETED' OR lease_expires_at IS NULL OR lease_expires_at < now())`,
      "expires_at",
    ),
    params: () => [],
  },
  {
    table: "inventory_snapshots",
    lock: [0x486f6c64, 0x536e7073], // 'Snps'
    // inventory_snapshots_taken_sku_idx.
    sql: batch("inventory_snapshots", `taken_at < now() - ? * interval '1 millisecond'`, "taken_at"),
    params: (deps) => [deps.settings.snapshotRetentionMs],
  },
  {
    table: "worker_replicas",
    lock: [0x486f6c64, 0x5265706c], // 'Repl'
    // worker_replicas_heartbeat_at_idx.
    sql: batch("worker_replicas", `heartbeat_at < now() - interval '1 day'`, "heartbeat_at"),
    params: () => [],
  },
  {
    table: "customer_attempt_windows",
    lock: [0x486f6c64, 0x52617465], // 'Rate'
    // customer_attempt_windows_expires_at_idx; then the SKU's current window (above).
    sql: batch(
      "customer_attempt_windows",
      `expires_at < now()
       AND NOT EXISTS (SELECT 1 FROM skus s
                        WHERE s.code = sku_code AND admitted[cardinality(admitted)] + s.rate_limit_window_ms * interval '1 millisecond' >= now())`,
      "expires_at",
    ),
    params: () => [],
  },
];

/** Prunes idempotency records past their window, snapshots past theirs, long-dead replicas and stale rate-limit logs. */
export async function prune(deps: WorkerDeps): Promise<void> {
  const { db, state, metrics, logger } = deps;
  const pruned: Partial<Record<Table, number>> = {};
  for (const target of TARGETS) {
    for (;;) {
      const n = await db.transaction(async (trx) => {
        const [row] = await query<{ locked: boolean }>(trx, `SELECT pg_try_advisory_xact_lock(?, ?) AS locked`, target.lock);
        if (!row!.locked) return undefined; // another replica is pruning this table
        const [done] = await query<{ n: number }>(trx, target.sql, [...target.params(deps), BATCH_SIZE]);
        return done!.n;
      });
      if (n === undefined) break;
      // Counted per committed batch, so a later failure does not lose them.
      if (n > 0) {
        pruned[target.table] = (pruned[target.table] ?? 0) + n;
        metrics.retentionPruned.inc({ table: target.table }, n);
        if (target.table === "idempotency_records") state.idempotencyRecordsPrunedTotal += n;
        if (target.table === "inventory_snapshots") state.snapshotsPrunedTotal += n;
      }
      if (n < BATCH_SIZE) break;
    }
  }
  state.lastRetentionAt = new Date();
  if (Object.keys(pruned).length > 0) logger.info({ pruned }, "retention pruned expired rows");
}
