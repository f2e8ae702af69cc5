import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { GetWorkerStatusResponseSchema, WorkerStatusSchema, type GetWorkerStatusRequest, type GetWorkerStatusResponse } from "@holdfast/contracts";
import { durationDistribution, ts, tsOrUndefined } from "@holdfast/core";
import { WORKER_VERSION, type Call, type WorkerDeps } from "./context.js";
import * as reconciliation from "./reconciliation.js";
import * as replicas from "./replicas.js";
import * as snapshots from "./snapshots.js";
import { readBacklog } from "./sweeper.js";

/**
 * GetWorkerStatus: this replica's own figures (WorkerState) and the database-wide
 * ones (expiry backlog, last reconciliation and snapshot, live replicas), read in
 * parallel; each is one statement.
 */
export async function getWorkerStatus(deps: WorkerDeps, _call: Call, _req: GetWorkerStatusRequest): Promise<GetWorkerStatusResponse> {
  const { state, settings } = deps;
  const [backlog, lastRun, lastSnapshot, live] = await Promise.all([
    readBacklog(deps),
    reconciliation.latestRun(deps),
    snapshots.lastSnapshotTime(deps),
    replicas.liveReplicas(deps),
  ]);
  const status = create(WorkerStatusSchema, {
    workerId: settings.workerId,
    version: WORKER_VERSION,
    startTime: ts(state.startedAt),
    lastSweepTime: state.lastSweepAt && ts(state.lastSweepAt),
    lastSweep: state.lastSweep,
    holdsExpiredTotal: BigInt(state.holdsExpiredTotal),
    sweepsTotal: BigInt(state.sweepsTotal),
    expiryLag: durationDistribution(state.lagSamples(), 1000),
    expiryLagWindow: durationFromMs(settings.expiryLagWindowMs),
    overdueHolds: BigInt(backlog.overdue),
    oldestOverdue: backlog.oldestOverdue === null ? undefined : durationFromMs(Math.max(0, backlog.now.getTime() - backlog.oldestOverdue.getTime())),
    nextExpireTime: tsOrUndefined(backlog.nextExpiresAt),
    listening: state.listening,
    lastReconciliation: lastRun,
    reconciliationInterval: settings.reconciliationIntervalMs > 0 ? durationFromMs(settings.reconciliationIntervalMs) : undefined,
    lastSnapshotTime: lastSnapshot && ts(lastSnapshot),
    snapshotInterval: settings.snapshotIntervalMs > 0 ? durationFromMs(settings.snapshotIntervalMs) : undefined,
    lastRetentionTime: state.lastRetentionAt && ts(state.lastRetentionAt),
    idempotencyRecordsPrunedTotal: BigInt(state.idempotencyRecordsPrunedTotal),
    snapshotsPrunedTotal: BigInt(state.snapshotsPrunedTotal),
    replicas: live,
  });
  return create(GetWorkerStatusResponseSchema, { status });
}
