// The inventory invariants, checked from outside the service with plain SQL, and
// through the service's own CheckConsistency RPC. Tests call both after a burst
// of concurrent calls: the SQL check does not trust any service code, the RPC
// check proves the service agrees.
import { AssertionError } from "chai";
import type { Knex } from "knex";
import { ConsistencyViolationKind, InventoryCounter, type CheckConsistencyResponse } from "@holdfast/contracts";
import { inventoryInvariantViolations } from "@holdfast/schema";

/**
 * Checks the inventory invariants (`inventoryInvariantViolations` in @holdfast/schema:
 * counters against lines and the ledger, the waitlist against its holds, the
 * per-customer limit) on every SKU, or only on `skus` (then exactly one inventory
 * row per requested SKU; an empty `skus` is an error, as it would check nothing).
 * Throws one AssertionError listing every violation found.
 */
export async function assertInvariants(db: Knex, skus?: string[]): Promise<void> {
  let violations: string[];
  try {
    violations = await inventoryInvariantViolations(db, skus);
  } catch (err) {
    if (err instanceof RangeError) throw new AssertionError(`assertInvariants: ${err.message}`);
    throw err;
  }
  if (violations.length > 0) {
    throw new AssertionError(`${violations.length} inventory invariant violation(s):\n  ${violations.join("\n  ")}`);
  }
}

/** Anything with the CheckConsistency RPC (a grpc-js or Connect client). */
export interface ConsistencyChecker {
  checkConsistency(request: { skus?: string[] }): Promise<CheckConsistencyResponse>;
}

/** Calls CheckConsistency (all SKUs, or `skus`) and expects it to report no violation. */
export async function checkConsistencyClean(client: ConsistencyChecker, skus: string[] = []): Promise<CheckConsistencyResponse> {
  const response = await client.checkConsistency({ skus });
  if (!response.consistent || response.violations.length > 0) {
    const listed = response.violations.map(
      (v) =>
        `${v.sku}: ${ConsistencyViolationKind[v.kind]}${v.counter ? ` ${InventoryCounter[v.counter]}` : ""} expected ${v.expected}, actual ${v.actual}` +
        `${v.reservationId ? ` (reservation ${v.reservationId})` : ""}${v.detail ? `: ${v.detail}` : ""}`,
    );
    throw new AssertionError(
      `CheckConsistency: consistent = ${response.consistent}, ${response.violations.length} violation(s)${listed.length ? `:\n  ${listed.join("\n  ")}` : ""}`,
    );
  }
  return response;
}
