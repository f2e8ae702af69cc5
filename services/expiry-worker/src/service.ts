import type { ServiceImpl } from "@connectrpc/connect";
import { ExpiryWorkerService } from "@holdfast/contracts";
import { callOf } from "@holdfast/core";
import type { WorkerDeps } from "./core/context.js";
import type { ExpirySweeper } from "./core/sweeper.js";
import * as reconciliation from "./core/reconciliation.js";
import * as snapshots from "./core/snapshots.js";
import * as status from "./core/status.js";

export type { WorkerDeps } from "./core/context.js";

/**
 * The operator API of the worker (holdfast.worker.v1), the same for every
 * transport: it turns a HandlerContext into a Call and delegates to core/.
 */
export function createExpiryWorkerService(deps: WorkerDeps, sweeper: ExpirySweeper): ServiceImpl<typeof ExpiryWorkerService> {
  return {
    runExpirySweep: (req, ctx) => sweeper.runOnDemand(callOf(ctx), req),
    runReconciliation: (req, ctx) => reconciliation.runReconciliation(deps, callOf(ctx), req),
    getReconciliationRun: (req, ctx) => reconciliation.getReconciliationRun(deps, callOf(ctx), req),
    listReconciliationRuns: (req, ctx) => reconciliation.listReconciliationRuns(deps, callOf(ctx), req),
    takeSnapshot: (req, ctx) => snapshots.takeSnapshot(deps, callOf(ctx), req),
    getWorkerStatus: (req, ctx) => status.getWorkerStatus(deps, callOf(ctx), req),
  };
}
