import type { ServiceImpl } from "@connectrpc/connect";
import { ExpiryWorkerService } from "@holdfast/contracts";
import { unimplementedService } from "@holdfast/runtime";
import type { Knex } from "knex";

export interface WorkerDeps {
  db: Knex;
  workerId: string;
}

/**
 * The operator API of the worker (holdfast.worker.v1). The contract is
 * complete; sweeps, reconciliation and snapshots land with their issue, and
 * until then every RPC answers UNIMPLEMENTED.
 */
export function createExpiryWorkerService(_deps: WorkerDeps): ServiceImpl<typeof ExpiryWorkerService> {
  return unimplementedService(ExpiryWorkerService);
}
