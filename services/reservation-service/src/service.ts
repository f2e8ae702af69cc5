import type { ServiceImpl } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { unimplementedService } from "@holdfast/runtime";
import type { Knex } from "knex";

export interface ReservationDeps {
  db: Knex;
}

/**
 * The InventoryReservationService implementation, the same for every
 * transport. The contract is complete; the behaviour of each RPC lands with
 * its issue, and until then it answers UNIMPLEMENTED.
 */
export function createInventoryReservationService(_deps: ReservationDeps): ServiceImpl<typeof InventoryReservationService> {
  return unimplementedService(InventoryReservationService);
}
