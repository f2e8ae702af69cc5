/**
 * Reconciliation: each SKU's counters recomputed from its reservation lines and from
 * its ledger (@holdfast/schema recount.ts, the same statements CheckConsistency
 * reads), recorded as a run with its findings, and in REPAIR mode corrected through
 * compensating RECONCILIATION_REPAIR ledger events, never a silent overwrite.
 *
 * - START. "End the runs whose lease lapsed, check that no live RUNNING run overlaps,
 *   INSERT the new run" is one transaction under pg_advisory_xact_lock(RUN_LOCK):
 *   SKU-set overlap is not something a unique index can express, so two replicas
 *   starting overlapping runs at the same moment are serialised by the lock instead
 *   (the second one, once the first commits, sees its run and is refused). On demand,
 *   that transaction is also the one that claims the request id (Idempotency.run):
 *   the run and its recorded response commit together.
 * - LEASE. The replica running a run renews lease_expires_at while it works (every
 *   chunk, and a timer at every heartbeat, at most lease/3, for slow chunks). A RUNNING run whose lease has
 *   passed belongs to a dead replica: anyone who finds it ends it FAILED ("worker <id>
 *   stopped: lease expired at <time>"), after which it no longer blocks new runs.
 *   Every write of the runner is conditional on the run still being RUNNING and its
 *   own (WHERE status = 'RUNNING' AND worker_id = me): a runner whose run was ended
 *   under it (it was too slow to renew) stops at its next write.
 * - CHECK. SKUs in SKU order, CHUNK at a time; each chunk's facts are read in one
 *   REPEATABLE READ READ ONLY transaction (one snapshot, no lock, never blocks a
 *   writer). Its findings are appended to the run with the lease renewal, one UPDATE.
 * - REPAIR. For the drifted SKUs of a chunk, one READ COMMITTED transaction: their
 *   inventory rows locked in SKU order (the lock order of every writer), the facts
 *   re-read under the locks (a writer changes a SKU's lines and counters in one
 *   transaction that takes that lock before it commits, so the locked state is
 *   consistent), per SKU the drift-recording event (recordDrift) and the correcting
 *   event (applyCounterChanges), the findings appended and the lease renewed, COMMIT.
 *   A correction the ledger's guard would refuse (it would oversell) is not made:
 *   the finding says why and what to do. A chunk that cannot get its locks within
 *   lock_timeout is retried a few times, then the run ends FAILED.
 */
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import {
  ConsistencyViolationKind,
  GetReconciliationRunResponseSchema,
  InventoryCounter,
  ListReconciliationRunsResponseSchema,
  ReconciliationFindingSchema,
  ReconciliationMode,
  ReconciliationRunSchema,
  ReconciliationRunStatus,
  ReconciliationTrigger,
  RunReconciliationRequestSchema,
  RunReconciliationResponseSchema,
  type GetReconciliationRunRequest,
  type GetReconciliationRunResponse,
  type ListReconciliationRunsRequest,
  type ListReconciliationRunsResponse,
  type ReconciliationFinding,
  type ReconciliationRun,
  type RunReconciliationRequest,
  type RunReconciliationResponse,
} from "@holdfast/contracts";
import {
  Idempotency,
  Refusal,
  decodePageToken,
  effectivePageSize,
  encodePageToken,
  enumName,
  enumValue,
  idempotencyKey,
  isoMicros,
  keyUuid,
  micros,
  reconciliationInProgress,
  reconciliationRunNotFound,
  skuNotFound,
  splitPage,
  storedNames,
  ts,
  tsOrUndefined,
} from "@holdfast/core";
import { isLockTimeout } from "@holdfast/runtime";
import {
  applyCounterChanges,
  lockInventoryRows,
  notifyInventoryChanged,
  query,
  recordDrift,
  recountSkus,
  skuOrder,
  type Db,
  type ReconciliationFindingJson,
  type ReconciliationRunRow,
  type SkuRecount,
  promoteWaiting,
} from "@holdfast/schema";
import type { Call, WorkerDeps } from "./context.js";

const METHOD = "holdfast.worker.v1.ExpiryWorkerService/RunReconciliation";
/**
 * The transaction advisory lock around "end lapsed runs, check overlap, INSERT", taken
 * by every replica: ('Hold', 'Reco') as two int4, the key space of the migration lock
 * (migrate.ts).
 */
const RUN_LOCK: readonly [number, number] = [0x486f6c64, 0x5265636f];
/** SKUs per chunk: per transaction of the check pass, and at most per repair transaction. */
const CHUNK = 1000;
/** Attempts of a repair transaction that times out waiting for row locks, before the run fails. */
const LOCK_ATTEMPTS = 3;
/** requested_by of scheduled runs. */
const SCHEDULE_PRINCIPAL = "system:schedule";
/** SQLSTATE deadlock_detected: retried like a lock timeout (nothing was committed). */
const DEADLOCK = "40P01";

// ---------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------

/** Every column but findings (lists, WorkerStatus), and the exact creation time for page tokens. */
const SUMMARY_COLUMNS = `id, mode, status, trigger, requested_by, request_id, worker_id, sku_filter, created_at, started_at,
  finished_at, lease_expires_at, skus_checked, skus_with_findings, finding_count, repaired_count, error,
  ${micros("created_at")} AS created_us`;

/**
 * Ends RUNNING runs whose lease has passed: the contract's error text, the lease
 * expiry in RFC 3339 (UTC, milliseconds). finished_at never before the start (a CHECK).
 * The rows are claimed FOR UPDATE SKIP LOCKED: a row locked right now is being
 * renewed by its runner or ended by someone else, either way not ours to end; and
 * nobody ever waits here, so no order of waits between enders can form.
 * `extra` narrows it (one run). Uses the partial index of RUNNING runs by lease.
 */
const endLapsed = (extra = "") => `
UPDATE reconciliation_runs r
   SET status = 'FAILED',
       finished_at = GREATEST(now(), coalesce(r.started_at, r.created_at)),
       error = 'worker ' || r.worker_id || ' stopped: lease expired at '
               || to_char(r.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
 WHERE r.id IN (SELECT id FROM reconciliation_runs
                 WHERE status = 'RUNNING' AND lease_expires_at < now() ${extra}
                   FOR UPDATE SKIP LOCKED)
RETURNING r.*`;

/**
 * The live RUNNING run that overlaps a SKU set (NULL = every SKU, which overlaps
 * everything), if any. Run under RUN_LOCK after endLapsed: a run that started before
 * the lock was granted is visible (READ COMMITTED: each statement sees every commit
 * before it), one that starts after waits for our COMMIT and then sees ours.
 */
const OVERLAPPING = `
SELECT id, worker_id FROM reconciliation_runs
 WHERE status = 'RUNNING' AND lease_expires_at >= now()
   AND (sku_filter IS NULL OR ?::text[] IS NULL OR sku_filter && ?::text[])
 ORDER BY created_at, id
 LIMIT 1`;

/** The run, RUNNING from now with a lease; started_at = created_at = the transaction's now(). */
const INSERT_RUN = `
INSERT INTO reconciliation_runs (mode, trigger, requested_by, request_id, worker_id, sku_filter, started_at, lease_expires_at)
VALUES (?, 'ON_DEMAND', ?, ?, ?, ?::text[], now(), now() + ? * interval '1 millisecond')
RETURNING *`;

/**
 * A SCHEDULED run of every SKU, only if none was created within the interval (by any
 * replica) and no live run is RUNNING (any run overlaps "every SKU"): one decision,
 * one statement, under RUN_LOCK, so N replicas make one run per interval.
 */
const INSERT_SCHEDULED_IF_DUE = `
INSERT INTO reconciliation_runs (mode, trigger, requested_by, request_id, worker_id, sku_filter, started_at, lease_expires_at)
SELECT ?, 'SCHEDULED', '${SCHEDULE_PRINCIPAL}', NULL, ?, NULL, now(), now() + ? * interval '1 millisecond'
 WHERE NOT EXISTS (SELECT 1 FROM reconciliation_runs
                    WHERE trigger = 'SCHEDULED' AND created_at > now() - ? * interval '1 millisecond')
   AND NOT EXISTS (SELECT 1 FROM reconciliation_runs WHERE status = 'RUNNING' AND lease_expires_at >= now())
RETURNING *`;

/** The runner's own run, still RUNNING: every write of the runner carries this condition. */
const OURS = `id = ? AND status = 'RUNNING' AND worker_id = ?`;

/**
 * Appends a chunk's findings and counts, and renews the lease (clock_timestamp(): from
 * the moment of writing, not the transaction's start). No row = the run was ended
 * under us: stop.
 */
const APPEND_CHUNK = `
UPDATE reconciliation_runs
   SET findings = findings || ?::jsonb,
       skus_checked = skus_checked + ?, skus_with_findings = skus_with_findings + ?,
       finding_count = finding_count + ?, repaired_count = repaired_count + ?,
       lease_expires_at = clock_timestamp() + ? * interval '1 millisecond'
 WHERE ${OURS}
RETURNING id`;

const RENEW_LEASE = `UPDATE reconciliation_runs SET lease_expires_at = clock_timestamp() + ? * interval '1 millisecond' WHERE ${OURS} RETURNING id`;

/** The verdict: OK without findings, ISSUES with (the CHECK verdict_matches_findings). */
const FINISH = `
UPDATE reconciliation_runs
   SET status = CASE WHEN finding_count = 0 THEN 'OK' ELSE 'ISSUES' END,
       finished_at = GREATEST(now(), coalesce(started_at, created_at))
 WHERE ${OURS}
RETURNING *`;

const FAIL = `
UPDATE reconciliation_runs
   SET status = 'FAILED', finished_at = GREATEST(now(), coalesce(started_at, created_at)), error = ?
 WHERE ${OURS}
RETURNING *`;

/** The next chunk of SKU codes after `after`, in SKU order, within the run's filter (NULL = every SKU). */
const NEXT_CODES = `
SELECT code FROM skus
 WHERE code > ? AND (?::text[] IS NULL OR code = ANY(?::text[]))
 ORDER BY code
 LIMIT ?`;

async function endLapsedRuns(deps: WorkerDeps, db: Db): Promise<void> {
  const ended = await query<{ id: string; worker_id: string; error: string }>(db, endLapsed());
  for (const run of ended) deps.logger.warn({ runId: run.id, workerId: run.worker_id, error: run.error }, "reconciliation run ended FAILED: its lease expired");
}

async function lockRuns(trx: Db): Promise<void> {
  await query(trx, `SELECT pg_advisory_xact_lock(?, ?)`, RUN_LOCK);
}

// ---------------------------------------------------------------------------------------
// Stored rows to contract messages
// ---------------------------------------------------------------------------------------

type RunSummaryRow = Omit<ReconciliationRunRow, "findings"> & { findings?: ReconciliationFindingJson[]; created_us?: number };

function toFinding(f: ReconciliationFindingJson): ReconciliationFinding {
  return create(ReconciliationFindingSchema, {
    sku: f.sku,
    counter: enumValue(InventoryCounter, f.counter),
    kind: enumValue(ConsistencyViolationKind, f.kind),
    storedValue: BigInt(f.stored_value),
    valueFromLines: f.value_from_lines === undefined ? undefined : BigInt(f.value_from_lines),
    valueFromLedger: f.value_from_ledger === undefined ? undefined : BigInt(f.value_from_ledger),
    correctedValue: BigInt(f.corrected_value),
    repaired: f.repaired,
    repairAuditEventId: BigInt(f.repair_audit_event_id ?? 0),
    detail: f.detail,
  });
}

/** A stored run as the contract's ReconciliationRun (findings only when the row has them). */
function toRun(row: RunSummaryRow): ReconciliationRun {
  return create(ReconciliationRunSchema, {
    id: row.id,
    mode: enumValue(ReconciliationMode, row.mode),
    status: enumValue(ReconciliationRunStatus, row.status),
    trigger: enumValue(ReconciliationTrigger, row.trigger),
    skus: row.sku_filter ?? [],
    createTime: ts(row.created_at),
    startTime: tsOrUndefined(row.started_at),
    endTime: tsOrUndefined(row.finished_at),
    skusChecked: BigInt(row.skus_checked),
    skusWithFindings: BigInt(row.skus_with_findings),
    findingCount: BigInt(row.finding_count),
    repairedCount: BigInt(row.repaired_count),
    findings: (row.findings ?? []).map(toFinding),
    error: row.error ?? "",
    workerId: row.worker_id,
    requestedBy: row.requested_by,
    requestId: row.request_id ?? "",
    leaseExpireTime: tsOrUndefined(row.lease_expires_at),
  });
}

/**
 * One run with its findings, ended FAILED first if its lease has lapsed (the contract:
 * "by the next call that finds it"). One statement: the UPDATE's RETURNING when it
 * ended the run, else the row as it was (the plain SELECT sees the statement's
 * snapshot, from before the UPDATE).
 */
async function readRun(db: Db, id: string): Promise<ReconciliationRunRow | undefined> {
  const [row] = await query<ReconciliationRunRow>(
    db,
    `WITH ended AS (${endLapsed("AND id = ?")})
     SELECT r.* FROM reconciliation_runs r WHERE r.id = ? AND NOT EXISTS (SELECT 1 FROM ended)
     UNION ALL
     SELECT * FROM ended`,
    [id, id],
  );
  return row;
}

// ---------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------

/** What a repair sets the counters to: reserved and allocated from the lines, on_hand from the ledger. */
function correctedCounters(f: SkuRecount): { on_hand: number; reserved: number; allocated: number } {
  return { on_hand: f.ledger_on_hand, reserved: f.lines_held, allocated: f.lines_allocated };
}

/**
 * The findings of one SKU, one per drifted counter, in counter order (ON_HAND,
 * RESERVED, ALLOCATED). reserved / allocated are compared with the lines first (the
 * contract's definition of the counter), then with the ledger; on_hand only with the
 * ledger, since lines do not determine it.
 */
function findingsOf(f: SkuRecount): ReconciliationFindingJson[] {
  const out: ReconciliationFindingJson[] = [];
  const sku = f.sku_code;
  if (f.on_hand !== f.ledger_on_hand) {
    out.push({
      sku,
      counter: "ON_HAND",
      kind: "LEDGER_MISMATCH",
      stored_value: f.on_hand,
      value_from_ledger: f.ledger_on_hand,
      corrected_value: f.ledger_on_hand,
      repaired: false,
      detail: `on_hand is ${f.on_hand}, replaying the ledger gives ${f.ledger_on_hand}`,
    });
  }
  for (const [counter, stored, lines, ledger, kind, what] of [
    ["RESERVED", f.reserved, f.lines_held, f.ledger_reserved, "RESERVED_MISMATCH", "HELD"],
    ["ALLOCATED", f.allocated, f.lines_allocated, f.ledger_allocated, "ALLOCATED_MISMATCH", "ALLOCATED"],
  ] as const) {
    if (stored === lines && stored === ledger) continue;
    const name = counter.toLowerCase();
    out.push({
      sku,
      counter,
      kind: stored !== lines ? kind : "LEDGER_MISMATCH",
      stored_value: stored,
      value_from_lines: lines,
      value_from_ledger: ledger,
      corrected_value: lines,
      repaired: false,
      detail:
        stored !== lines
          ? `${name} is ${stored}, the lines of ${what} reservations sum to ${lines} (replaying the ledger gives ${ledger})`
          : `${name} is ${stored} as the lines of ${what} reservations say, but replaying the ledger gives ${ledger}`,
    });
  }
  return out;
}

interface ChunkResult {
  checked: number;
  findings: ReconciliationFindingJson[];
}

const countOf = (r: ChunkResult) => ({
  skusWithFindings: new Set(r.findings.map((f) => f.sku)).size,
  repaired: r.findings.filter((f) => f.repaired).length,
});

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

/** Why a run in progress stopped before finishing. */
class RunStopped extends Error {
  constructor(readonly why: "shutdown" | "lost") {
    super(why === "shutdown" ? "shutting down" : "the run was ended by someone else");
  }
}

/** Locks that could not be had within lock_timeout, LOCK_ATTEMPTS times in a row. */
class LocksUnavailable extends Error {}

interface InProgress {
  controller: AbortController;
  done: Promise<unknown>;
}

/** This replica's runs in progress (per WorkerDeps: one per process, several in tests). */
const inProgress = new WeakMap<WorkerDeps, Map<string, InProgress>>();

function runsOf(deps: WorkerDeps): Map<string, InProgress> {
  let runs = inProgress.get(deps);
  if (runs === undefined) inProgress.set(deps, (runs = new Map()));
  return runs;
}

/**
 * Runs a RUNNING run of this replica to its end and returns its final row (undefined
 * if it was ended by someone else meanwhile). Tracked, so stopRuns can stop it;
 * `signal` (the process's own stop) stops it too. Never throws: a failure ends the
 * run FAILED (or, if even that fails, its lease will lapse).
 */
function execute(deps: WorkerDeps, run: ReconciliationRunRow, signal?: AbortSignal): Promise<ReconciliationRunRow | undefined> {
  const controller = new AbortController();
  const onStop = () => controller.abort(new RunStopped("shutdown"));
  signal?.addEventListener("abort", onStop, { once: true });
  if (signal?.aborted) onStop();
  const runs = runsOf(deps);
  const done = executeTracked(deps, run, controller).finally(() => {
    signal?.removeEventListener("abort", onStop);
    runs.delete(run.id);
  });
  runs.set(run.id, { controller, done });
  return done;
}

async function executeTracked(deps: WorkerDeps, run: ReconciliationRunRow, controller: AbortController): Promise<ReconciliationRunRow | undefined> {
  const { logger, settings } = deps;
  const me = settings.workerId;
  const started = performance.now();
  const lease = settings.reconciliationLeaseMs;
  // Every chunk's write renews the lease; this timer renews it too, at every heartbeat
  // (the settings keep that at most a third of the lease), for chunks slower than that.
  // A renewal that finds the run no longer ours stops the run.
  const renewEveryMs = Math.max(1, Math.min(settings.heartbeatIntervalMs, Math.floor(lease / 3)));
  const timer = setInterval(() => {
    query(deps.db, RENEW_LEASE, [lease, run.id, me]).then(
      (rows) => {
        if (rows.length === 0) controller.abort(new RunStopped("lost"));
      },
      (err: unknown) => logger.warn({ err, runId: run.id }, "could not renew the reconciliation run's lease"),
    );
  }, renewEveryMs);
  let final: ReconciliationRunRow | undefined;
  let checked = 0;
  try {
    const filter = run.sku_filter;
    let after = "";
    for (;;) {
      throwIfStopped(controller.signal);
      const codes = (await query<{ code: string }>(deps.db, NEXT_CODES, [after, filter, filter, CHUNK])).map((r) => r.code);
      if (codes.length === 0) break;
      const result = run.mode === "REPAIR" ? await repairChunk(deps, run, codes, controller.signal) : await checkChunk(deps, run, codes);
      checked += result.checked;
      if (codes.length < CHUNK) break;
      after = codes[codes.length - 1]!;
    }
    [final] = await query<ReconciliationRunRow>(deps.db, FINISH, [run.id, me]);
  } catch (err) {
    final = await failRun(deps, run, err, checked);
  } finally {
    clearInterval(timer);
  }
  if (final === undefined) {
    logger.warn({ runId: run.id }, "reconciliation run was ended by another replica (its lease had lapsed); stopped");
    return undefined;
  }
  const ms = Math.round(performance.now() - started);
  deps.metrics.reconciliationRuns.inc({ mode: final.mode, status: final.status });
  deps.metrics.reconciliationFindings.inc({ repaired: "true" }, final.repaired_count);
  deps.metrics.reconciliationFindings.inc({ repaired: "false" }, final.finding_count - final.repaired_count);
  logger.info(
    {
      runId: final.id,
      mode: final.mode,
      trigger: final.trigger,
      status: final.status,
      skusChecked: final.skus_checked,
      findings: final.finding_count,
      repaired: final.repaired_count,
      ms,
      ...(final.error === null ? {} : { error: final.error }),
    },
    "reconciliation run finished",
  );
  return final;
}

function throwIfStopped(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason instanceof RunStopped ? signal.reason : new RunStopped("shutdown");
}

/** Ends the run FAILED with an error an operator can act on; the cause goes to the log. */
async function failRun(deps: WorkerDeps, run: ReconciliationRunRow, err: unknown, checked: number): Promise<ReconciliationRunRow | undefined> {
  const me = deps.settings.workerId;
  if (err instanceof RunStopped && err.why === "lost") return undefined;
  let error: string;
  if (err instanceof RunStopped) error = `worker ${me} stopped: shutting down`;
  else if (err instanceof LocksUnavailable) error = err.message;
  else {
    deps.logger.error({ err, runId: run.id }, "reconciliation run failed");
    error = `failed after checking ${checked} SKUs: unexpected error on worker ${me} (its log has the cause, run ${run.id})`;
  }
  try {
    const [row] = await query<ReconciliationRunRow>(deps.db, FAIL, [error, run.id, me]);
    return row;
  } catch (failErr) {
    deps.logger.warn({ err: failErr, runId: run.id }, "could not end the reconciliation run FAILED; it ends FAILED when its lease expires");
    return undefined;
  }
}

/** Appends a chunk's findings and renews the lease; throws RunStopped("lost") if the run is no longer ours. */
async function appendChunk(db: Db, deps: WorkerDeps, run: ReconciliationRunRow, result: ChunkResult): Promise<void> {
  const { skusWithFindings, repaired } = countOf(result);
  const rows = await query(db, APPEND_CHUNK, [
    JSON.stringify(result.findings),
    result.checked,
    skusWithFindings,
    result.findings.length,
    repaired,
    deps.settings.reconciliationLeaseMs,
    run.id,
    deps.settings.workerId,
  ]);
  if (rows.length === 0) throw new RunStopped("lost");
}

/** The facts of a chunk from one snapshot (REPEATABLE READ READ ONLY: no lock, never blocks a writer). */
function readChunk(deps: WorkerDeps, codes: readonly string[]): Promise<SkuRecount[]> {
  return deps.db.transaction(async (trx) => (await recountSkus(trx, codes)).skus, { isolationLevel: "repeatable read", readOnly: true });
}

async function checkChunk(deps: WorkerDeps, run: ReconciliationRunRow, codes: readonly string[]): Promise<ChunkResult> {
  const facts = await readChunk(deps, codes);
  const result = { checked: facts.length, findings: facts.flatMap(findingsOf) };
  await appendChunk(deps.db, deps, run, result);
  return result;
}

/**
 * REPAIR for one chunk: the snapshot read finds the drifted SKUs (most chunks have
 * none and lock nothing); those are repaired in one transaction, retried on lock
 * timeouts (nothing was written then).
 */
async function repairChunk(deps: WorkerDeps, run: ReconciliationRunRow, codes: readonly string[], signal: AbortSignal): Promise<ChunkResult> {
  const facts = await readChunk(deps, codes);
  const drifted = facts.filter((f) => findingsOf(f).length > 0).map((f) => f.sku_code);
  if (drifted.length === 0) {
    const result = { checked: facts.length, findings: [] };
    await appendChunk(deps.db, deps, run, result);
    return result;
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await deps.db.transaction((trx) => repairLocked(trx, deps, run, facts.length, drifted));
    } catch (err) {
      const busy = isLockTimeout(err) || (err as { code?: string }).code === DEADLOCK;
      if (!busy) throw err;
      if (attempt >= LOCK_ATTEMPTS) {
        const shown = drifted.slice(0, 20).join(", ") + (drifted.length > 20 ? ` and ${drifted.length - 20} more` : "");
        throw new LocksUnavailable(
          `could not lock the inventory rows of ${shown} to repair them (${LOCK_ATTEMPTS} attempts, each waiting up to the lock timeout): they are busy; run REPAIR again`,
        );
      }
      deps.logger.info({ runId: run.id, attempt, skus: drifted.length }, "reconciliation repair waited too long for row locks; retrying the chunk");
      throwIfStopped(signal);
    }
  }
}

/**
 * The repair transaction (READ COMMITTED): lock the drifted SKUs' rows in SKU order,
 * re-read their facts under the locks (the drift may have changed since the snapshot;
 * what is written is decided on what is locked), then per SKU the two events of a
 * repair (the migration's audit_events comment): one recording the drift (before =
 * the ledger's values, after = the row as found; written when the row differs from
 * the ledger) and one correcting it (before = found, after = corrected; written when
 * the corrected values differ from the row). Ids follow SKU order within each
 * statement, and every drift event precedes its SKU's correction, so each SKU's chain
 * of before/after values holds. Then the findings, the lease, COMMIT.
 */
async function repairLocked(trx: Db, deps: WorkerDeps, run: ReconciliationRunRow, checked: number, skus: readonly string[]): Promise<ChunkResult> {
  const origin = { actor: `worker:${deps.settings.workerId}`, requestId: null, reconciliationRunId: run.id };
  await lockInventoryRows(trx, skus);
  const facts = (await recountSkus(trx, skus)).skus;

  const repairable: SkuRecount[] = [];
  const refusedFindings: ReconciliationFindingJson[] = [];
  for (const f of facts) {
    const found = findingsOf(f);
    if (found.length === 0) continue; // repaired meanwhile, or a passing state of the snapshot
    const c = correctedCounters(f);
    if (c.on_hand >= 0 && c.reserved >= 0 && c.allocated >= 0 && c.on_hand - c.reserved - c.allocated >= 0) {
      repairable.push(f);
    } else {
      const why =
        ` Not repaired: the corrected counters would promise more than is on hand (on_hand from the ledger ${c.on_hand},` +
        ` reserved ${c.reserved} + allocated ${c.allocated} from the lines), so nothing was written for ${f.sku_code}.` +
        ` Count the stock and correct on_hand (AdjustStock), or release holds, then run REPAIR again.`;
      refusedFindings.push(...found.map((x) => ({ ...x, detail: x.detail + why })));
    }
  }

  const driftEvents = await recordDrift(
    trx,
    repairable
      .filter((f) => f.on_hand !== f.ledger_on_hand || f.reserved !== f.ledger_reserved || f.allocated !== f.ledger_allocated)
      .map((f) => ({ sku: f.sku_code, onHand: f.ledger_on_hand, reserved: f.ledger_reserved, allocated: f.ledger_allocated })),
    { ...origin, reason: `reconciliation run ${run.id}: drift recorded (the counters had been changed outside the ledger)` },
  );
  const corrections = repairable.flatMap((f) => {
    const c = correctedCounters(f);
    const delta = { onHand: c.on_hand - f.on_hand, reserved: c.reserved - f.reserved, allocated: c.allocated - f.allocated };
    if (delta.onHand === 0 && delta.reserved === 0 && delta.allocated === 0) return [];
    return [
      {
        sku: f.sku_code,
        operation: "RECONCILIATION_REPAIR" as const,
        ...delta,
        reason: `reconciliation run ${run.id}: counters corrected (reserved and allocated from the lines, on_hand from the ledger)`,
      },
    ];
  });
  const applied = await applyCounterChanges(trx, corrections, origin);
  // The guard was checked above on the locked values; a refusal here is a bug.
  if (applied.refused.length > 0) throw new Error(`repair refused by the ledger's guard for ${applied.refused.join(", ")} although checked under lock`);
  // A repair that made units available gives them to the SKUs' waitlists first, in this
  // transaction (the rows are locked; promoteWaiting re-locks them in SKU order).
  const freed = corrections.filter((c) => c.onHand - c.reserved - c.allocated > 0).map((c) => c.sku);
  await promoteWaiting(trx, freed, origin, deps.settings.holdTerms);
  await notifyInventoryChanged(trx, applied.events.map((e) => e.sku_code));

  const driftBySku = new Map(driftEvents.map((e) => [e.sku_code, e.id]));
  const correctionBySku = new Map(applied.events.map((e) => [e.sku_code, e.id]));
  const repairedFindings = repairable.flatMap((f) => {
    const c = correctedCounters(f);
    return findingsOf(f).map((x) => {
      const key = x.counter === "ON_HAND" ? "on_hand" : x.counter === "RESERVED" ? "reserved" : "allocated";
      // The event that made this counter right: its correction if it moved, else the
      // drift record (the counter was right and the ledger was brought to it).
      const event = f[key] !== c[key] ? correctionBySku.get(f.sku_code) : driftBySku.get(f.sku_code);
      return { ...x, repaired: true, ...(event === undefined ? {} : { repair_audit_event_id: event }) };
    });
  });
  const findings = [...repairedFindings, ...refusedFindings].sort((a, b) =>
    a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : COUNTER_ORDER[a.counter]! - COUNTER_ORDER[b.counter]!,
  );
  const result = { checked, findings };
  await appendChunk(trx, deps, run, result);
  return result;
}

const COUNTER_ORDER: Record<string, number> = { ON_HAND: 1, RESERVED: 2, ALLOCATED: 3 };

// ---------------------------------------------------------------------------------------
// RPCs
// ---------------------------------------------------------------------------------------

export async function runReconciliation(deps: WorkerDeps, call: Call, req: RunReconciliationRequest): Promise<RunReconciliationResponse> {
  const skus = req.skus.length > 0 ? skuOrder(req.skus) : null;
  const { settings } = deps;
  const key = idempotencyKey(call.principal.id, METHOD, RunReconciliationRequestSchema, req);
  const idempotency = new Idempotency(deps.db, settings.idempotencyWindowMs);

  let created: ReconciliationRunRow | undefined;
  const response = await idempotency.run(key, RunReconciliationResponseSchema, async (trx) => {
    await lockRuns(trx);
    await endLapsedRuns(deps, trx);
    if (skus !== null) {
      const [row] = await query<{ unknown: string[] }>(
        trx,
        `SELECT ARRAY(SELECT q.code FROM unnest(?::text[]) AS q(code)
                       WHERE NOT EXISTS (SELECT 1 FROM skus s WHERE s.code = q.code)) AS unknown`,
        [skus],
      );
      if (row!.unknown.length > 0) return new Refusal(skuNotFound(row!.unknown));
    }
    const [running] = await query<{ id: string; worker_id: string }>(trx, OVERLAPPING, [skus, skus]);
    if (running !== undefined) return new Refusal(reconciliationInProgress(running.id, running.worker_id));
    [created] = await query<ReconciliationRunRow>(trx, INSERT_RUN, [
      enumName(ReconciliationMode, req.mode),
      call.principal.id,
      req.requestId,
      settings.workerId,
      skus,
      settings.reconciliationLeaseMs,
    ]);
    return create(RunReconciliationResponseSchema, { run: toRun(created!) });
  });

  if (response.replayed || created === undefined) {
    // The same request again: the same run, in its current state.
    const current = response.run === undefined ? undefined : await readRun(deps.db, response.run.id);
    return create(RunReconciliationResponseSchema, { run: current === undefined ? response.run : toRun(current), replayed: true });
  }
  const run = created;
  const done = execute(deps, run);
  if (req.returnImmediately) {
    void done; // tracked: stopRuns stops it; it never rejects
    return response;
  }
  await done;
  const current = await readRun(deps.db, run.id);
  return create(RunReconciliationResponseSchema, { run: toRun(current ?? run) });
}

export async function getReconciliationRun(deps: WorkerDeps, _call: Call, req: GetReconciliationRunRequest): Promise<GetReconciliationRunResponse> {
  const row = await readRun(deps.db, req.runId);
  if (row === undefined) throw reconciliationRunNotFound(req.runId);
  return create(GetReconciliationRunResponseSchema, { run: toRun(row) });
}

/**
 * ListReconciliationRuns, newest first (created_at DESC, id DESC), keyset on
 * (created_at, id) in microseconds: reconciliation_runs_created_idx scanned in its
 * order, the filters checked on the rows it yields (runs are few; no index per
 * filter). Lapsed runs are ended first, so a status filter sees them as they are.
 */
export async function listReconciliationRuns(deps: WorkerDeps, _call: Call, req: ListReconciliationRunsRequest): Promise<ListReconciliationRunsResponse> {
  const statuses = storedNames(ReconciliationRunStatus, req.statuses);
  const mode = enumName(ReconciliationMode, req.mode);
  const filters = { statuses, mode };
  const key = decodePageToken(req.pageToken, filters, ["number", "string"]);
  const limit = effectivePageSize(req.pageSize);

  await endLapsedRuns(deps, deps.db);
  const rows = await query<RunSummaryRow & { created_us: number }>(
    deps.db,
    `SELECT ${SUMMARY_COLUMNS}
       FROM reconciliation_runs
      WHERE (cardinality(?::text[]) = 0 OR status = ANY(?::text[]))
        AND (?::text IS NULL OR mode = ?::text)
        AND (?::timestamptz IS NULL OR (created_at, id) < (?::timestamptz, ?::uuid))
      ORDER BY created_at DESC, id DESC
      LIMIT ?`,
    [
      statuses,
      statuses,
      mode,
      mode,
      key === undefined ? null : isoMicros(key[0] as number),
      key === undefined ? null : isoMicros(key[0] as number),
      key === undefined ? null : keyUuid(key[1] as string),
      limit + 1,
    ],
  );
  const { page, more } = splitPage(rows, limit);
  const last = page[page.length - 1];
  return create(ListReconciliationRunsResponseSchema, {
    runs: page.map(toRun),
    nextPageToken: more && last !== undefined ? encodePageToken(filters, [last.created_us, last.id]) : "",
  });
}

/** The most recent run of any replica, without findings (WorkerStatus.last_reconciliation). */
export async function latestRun(deps: WorkerDeps): Promise<ReconciliationRun | undefined> {
  const [row] = await query<RunSummaryRow>(deps.db, `SELECT ${SUMMARY_COLUMNS} FROM reconciliation_runs ORDER BY created_at DESC, id DESC LIMIT 1`);
  return row === undefined ? undefined : toRun(row);
}

// ---------------------------------------------------------------------------------------
// Background
// ---------------------------------------------------------------------------------------

/**
 * Periodic (every heartbeat interval, on every replica): ends runs whose lease lapsed
 * (dead replicas' runs stop blocking even when nobody calls), and, when scheduling is
 * on, starts a SCHEDULED run if none was created within the interval and none is
 * running, then runs it to its end (the periodic loop waits; `signal` stops it).
 */
export async function startScheduledRunIfDue(deps: WorkerDeps, signal: AbortSignal): Promise<void> {
  const { settings } = deps;
  if (settings.reconciliationIntervalMs <= 0) {
    await endLapsedRuns(deps, deps.db);
    return;
  }
  if (signal.aborted) return;
  const run = await deps.db.transaction(async (trx) => {
    await lockRuns(trx);
    await endLapsedRuns(deps, trx);
    const [row] = await query<ReconciliationRunRow>(trx, INSERT_SCHEDULED_IF_DUE, [
      settings.reconciliationScheduledMode,
      settings.workerId,
      settings.reconciliationLeaseMs,
      settings.reconciliationIntervalMs,
    ]);
    return row;
  });
  if (run !== undefined) await execute(deps, run, signal);
}

/**
 * On shutdown: this replica's runs in progress stop after their current chunk and end
 * FAILED ("worker <id> stopped: shutting down"). Best effort: a run that cannot be
 * ended (database gone) ends FAILED once its lease expires.
 */
export async function stopRuns(deps: WorkerDeps): Promise<void> {
  const runs = [...runsOf(deps).values()];
  for (const run of runs) run.controller.abort(new RunStopped("shutdown"));
  await Promise.allSettled(runs.map((r) => r.done));
}
