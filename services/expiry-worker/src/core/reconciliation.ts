// STUB — to be implemented (reconciliation helper).
import type {
  GetReconciliationRunRequest,
  GetReconciliationRunResponse,
  ListReconciliationRunsRequest,
  ListReconciliationRunsResponse,
  ReconciliationRun,
  RunReconciliationRequest,
  RunReconciliationResponse,
} from "@holdfast/contracts";
import { notImplementedFeature } from "@holdfast/core";
import type { Call, WorkerDeps } from "./context.js";

export async function runReconciliation(_deps: WorkerDeps, _call: Call, _req: RunReconciliationRequest): Promise<RunReconciliationResponse> {
  throw notImplementedFeature("reconciliation", "not yet");
}
export async function getReconciliationRun(_deps: WorkerDeps, _call: Call, _req: GetReconciliationRunRequest): Promise<GetReconciliationRunResponse> {
  throw notImplementedFeature("reconciliation", "not yet");
}
export async function listReconciliationRuns(_deps: WorkerDeps, _call: Call, _req: ListReconciliationRunsRequest): Promise<ListReconciliationRunsResponse> {
  throw notImplementedFeature("reconciliation", "not yet");
}
/** The most recent run of any replica, without findings (WorkerStatus.last_reconciliation). */
export async function latestRun(_deps: WorkerDeps): Promise<ReconciliationRun | undefined> {
  return undefined;
}
/** Periodic: starts a SCHEDULED run when the last one is older than the interval (once across replicas). */
export async function startScheduledRunIfDue(_deps: WorkerDeps, _signal: AbortSignal): Promise<void> {}
/** On shutdown: this replica's RUNNING runs stop and end FAILED. */
export async function stopRuns(_deps: WorkerDeps): Promise<void> {}
