/**
 * Availability snapshots: copies of every SKU's availability row (or of some SKUs'),
 * one row per SKU per pass, readable through ListAvailabilitySnapshots.
 *
 * - ONE STATEMENT PER PASS. A pass is a single INSERT ... SELECT FROM inventory. A
 *   statement reads from one MVCC snapshot, so the rows of a pass are a consistent
 *   cut of the whole inventory (no SKU seen before and another after a concurrent
 *   multi-SKU hold), without locking a single inventory row: a pass never delays a
 *   hold. Counters and their ledger events commit together (ledger.ts), so the
 *   SKU's newest audit event visible to the same statement is exactly the last
 *   change the counters include: counters = snapshot + SUM(deltas after
 *   last_audit_event_id).
 * - SERIALISED, AND STAMPED IN COMMIT ORDER. Each pass first takes one transaction
 *   advisory lock (SNAPSHOT_LOCK), shared by every replica, and stamps its rows with
 *   statement_timestamp() of the INSERT, which starts after the lock is granted,
 *   i.e. after the previous pass committed. Not now(): that is the transaction's
 *   start, before any lock wait, so a pass that waited would be stamped earlier than
 *   the pass it waited for. Hence taken_at order = commit order, and a reader that
 *   sees a pass stamped T has every pass stamped before T. (Relies on READ
 *   COMMITTED, the default: the INSERT's snapshot is taken when it starts, after
 *   the lock; under REPEATABLE READ it would be the first statement's.)
 * - SCHEDULED passes (SNAPSHOT_INTERVAL_MS > 0): every replica looks every heartbeat;
 *   under the same lock, a pass is taken only if no SCHEDULED pass is younger than
 *   the interval, so N replicas take one pass per interval between them.
 * - ON DEMAND (TakeSnapshot): idempotent by request_id; the claim, the pass and the
 *   recorded response are one transaction.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { TakeSnapshotRequestSchema, TakeSnapshotResponseSchema, type TakeSnapshotRequest, type TakeSnapshotResponse } from "@holdfast/contracts";
import { Idempotency, idempotencyKey, skuNotFound, ts } from "@holdfast/core";
import { query, type Db, type SnapshotTrigger } from "@holdfast/schema";
import type { Call, WorkerDeps } from "./context.js";

const METHOD = "holdfast.worker.v1.ExpiryWorkerService/TakeSnapshot";

/**
 * The transaction advisory lock every snapshot pass of every replica takes first:
 * ('Hold', 'Snap') as two int4, the key space of the migration lock (migrate.ts).
 */
const SNAPSHOT_LOCK: readonly [number, number] = [0x486f6c64, 0x536e6170];

/**
 * The pass itself. `filter` is fixed SQL text (a WHERE clause on `i`), its values
 * bound after the run id and trigger. The LATERAL max(id) is one backward probe of
 * audit_events_sku_id_idx per SKU. The CTE reports the statement's time even when
 * no row was written (no SKU yet).
 */
const pass = (filter: string) => `
WITH pass AS (
  INSERT INTO inventory_snapshots
         (snapshot_run_id, taken_at, sku_code, on_hand, reserved, allocated, available, version,
          waitlist_count, waitlist_units, inventory_updated_at, last_audit_event_id, trigger)
  SELECT ?::uuid, statement_timestamp(), i.sku_code, i.on_hand, i.reserved, i.allocated, i.available, i.version,
         i.waitlist_count, i.waitlist_units, i.updated_at, last.id, ?
    FROM inventory i
    LEFT JOIN LATERAL (SELECT max(a.id) AS id FROM audit_events a WHERE a.sku_code = i.sku_code) last ON true
   ${filter}
  RETURNING 1
)
SELECT statement_timestamp() AS taken_at, (SELECT count(*) FROM pass)::int AS skus`;

/** Every SKU. */
const ALL_SKUS = pass("");
/** The given SKUs (known to exist: SKUs are never deleted). */
const SOME_SKUS = pass(`WHERE i.sku_code = ANY(?::text[])`);
/**
 * Every SKU, unless a SCHEDULED pass younger than the interval exists (any replica's;
 * visible because it committed before we got the lock). A range scan of
 * inventory_snapshots_taken_sku_idx over the last interval.
 */
const ALL_SKUS_IF_DUE = pass(`WHERE NOT EXISTS (SELECT 1 FROM inventory_snapshots s
                     WHERE s.trigger = 'SCHEDULED'
                       AND s.taken_at > statement_timestamp() - ? * interval '1 millisecond')`);

interface PassResult {
  runId: string;
  takenAt: Date;
  skus: number;
}

/**
 * Takes the snapshot lock, waiting for a pass in progress up to lock_timeout; past
 * it the call fails ABORTED and rolls back with its claim, so the same request_id
 * may be retried.
 */
async function lock(trx: Db): Promise<void> {
  await query(trx, `SELECT pg_advisory_xact_lock(?, ?)`, SNAPSHOT_LOCK);
}

async function runPass(trx: Db, sql: string, trigger: SnapshotTrigger, params: unknown[]): Promise<PassResult> {
  const runId = randomUUID();
  const [row] = await query<{ taken_at: Date; skus: number }>(trx, sql, [runId, trigger, ...params]);
  return { runId, takenAt: row!.taken_at, skus: row!.skus };
}

/** TakeSnapshot: an ON_DEMAND pass of every SKU or of the given ones, idempotent by request_id. */
export async function takeSnapshot(deps: WorkerDeps, call: Call, req: TakeSnapshotRequest): Promise<TakeSnapshotResponse> {
  const skus = [...new Set(req.skus)];
  const key = idempotencyKey(call.principal.id, METHOD, TakeSnapshotRequestSchema, req);
  const response = await new Idempotency(deps.db, deps.settings.idempotencyWindowMs).run(key, TakeSnapshotResponseSchema, async (trx) => {
    if (skus.length > 0) {
      // Unknown SKUs are refused before the lock and before anything is written
      // (thrown, Idempotency records the refusal for replay). SKUs are never
      // deleted, so what exists now still exists when the pass reads.
      const missing = await query<{ sku_code: string }>(
        trx,
        `SELECT w.sku_code FROM unnest(?::text[]) AS w(sku_code)
          WHERE NOT EXISTS (SELECT 1 FROM inventory i WHERE i.sku_code = w.sku_code)`,
        [skus],
      );
      if (missing.length > 0) throw skuNotFound(missing.map((m) => m.sku_code));
    }
    await lock(trx);
    const result = skus.length === 0 ? await runPass(trx, ALL_SKUS, "ON_DEMAND", []) : await runPass(trx, SOME_SKUS, "ON_DEMAND", [skus]);
    return create(TakeSnapshotResponseSchema, { snapshotRunId: result.runId, snapshotTime: ts(result.takenAt), skusSnapshotted: BigInt(result.skus) });
  });
  if (!response.replayed) {
    deps.metrics.snapshotPasses.inc({ trigger: "on_demand" });
    deps.logger.debug({ snapshotRunId: response.snapshotRunId, skus: Number(response.skusSnapshotted) }, "took an on-demand snapshot");
  }
  return response;
}

/**
 * Periodic: takes a SCHEDULED pass when the last one is older than the interval
 * (once across replicas). pg_try_advisory_xact_lock, not the waiting lock: if a
 * pass is in progress (an on-demand one, or another replica's scheduled one) this
 * tick is skipped rather than waiting (and failing at lock_timeout behind a long
 * pass); the next heartbeat looks again.
 */
export async function takeScheduledSnapshotIfDue(deps: WorkerDeps): Promise<void> {
  const { db, settings, metrics, logger } = deps;
  if (settings.snapshotIntervalMs <= 0) return;
  const result = await db.transaction(async (trx) => {
    const [row] = await query<{ locked: boolean }>(trx, `SELECT pg_try_advisory_xact_lock(?, ?) AS locked`, SNAPSHOT_LOCK);
    if (!row!.locked) return undefined;
    return runPass(trx, ALL_SKUS_IF_DUE, "SCHEDULED", [settings.snapshotIntervalMs]);
  });
  if (result === undefined || result.skus === 0) return;
  metrics.snapshotPasses.inc({ trigger: "scheduled" });
  logger.debug({ snapshotRunId: result.runId, skus: result.skus }, "took a scheduled snapshot");
}

/** Database-wide: when the last pass was taken (the top of inventory_snapshots_taken_sku_idx). */
export async function lastSnapshotTime(deps: WorkerDeps): Promise<Date | undefined> {
  const [row] = await query<{ taken_at: Date | null }>(deps.db, `SELECT max(taken_at) AS taken_at FROM inventory_snapshots`);
  return row?.taken_at ?? undefined;
}
