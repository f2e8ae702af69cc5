// STUB — to be implemented (snapshots helper).
import type { WorkerDeps } from "./context.js";

/** Prunes idempotency records past their window, snapshots past theirs and long-dead replicas. */
export async function prune(_deps: WorkerDeps): Promise<void> {}
