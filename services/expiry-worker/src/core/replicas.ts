// STUB — to be implemented (snapshots helper).
import type { WorkerReplica } from "@holdfast/contracts";
import type { WorkerDeps } from "./context.js";

export async function register(_deps: WorkerDeps): Promise<void> {}
export async function heartbeat(_deps: WorkerDeps): Promise<void> {}
export async function deregister(_deps: WorkerDeps): Promise<void> {}
/** Replicas with a heartbeat in the last minute, this one included. */
export async function liveReplicas(_deps: WorkerDeps): Promise<WorkerReplica[]> {
  return [];
}
