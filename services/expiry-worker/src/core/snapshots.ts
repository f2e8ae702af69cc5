// STUB — to be implemented (snapshots helper).
import type { TakeSnapshotRequest, TakeSnapshotResponse } from "@holdfast/contracts";
import { notImplementedFeature } from "@holdfast/core";
import type { Call, WorkerDeps } from "./context.js";

export async function takeSnapshot(_deps: WorkerDeps, _call: Call, _req: TakeSnapshotRequest): Promise<TakeSnapshotResponse> {
  throw notImplementedFeature("snapshots", "not yet");
}
/** Periodic: takes a SCHEDULED pass when the last one is older than the interval (once across replicas). */
export async function takeScheduledSnapshotIfDue(_deps: WorkerDeps): Promise<void> {}
/** Database-wide: when the last pass was taken. */
export async function lastSnapshotTime(_deps: WorkerDeps): Promise<Date | undefined> {
  return undefined;
}
