// The hold scenarios of `npm run bench`, as data. Each one is measured against its
// ceiling (pgbench running a hold's SQL on the same SKU distribution) and through
// the service, on a database of its own.
//
// Adding one is adding an entry: a hot-SKU mode is benchmarked by creating the
// SKUs with that policy (CreateSku's SkuPolicy), e.g. `hot-group-commit` below.
// The ceiling stays the plain single-row SQL of the same distribution, so the
// ratio says how far the mode gets past what one row can commit.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { HotSkuMode, type SkuPolicySchema } from "@holdfast/contracts";

export interface Scenario {
  name: string;
  /** How the docs table names it. */
  title: string;
  /** SKUs skuCode(0) … skuCode(skus - 1); each hold takes one, uniformly at random. 1 = a single hot SKU. */
  skus: number;
  /** The SKUs' policy, given to CreateSku (zero fields: server defaults). */
  policy?: MessageInitShape<typeof SkuPolicySchema>;
  /** Its client counts, unless --concurrency names others (default: the run's). */
  concurrency?: number[];
  /** The strategies that mean something for it (default: the run's). */
  strategies?: string[];
}

export const SCENARIOS: readonly Scenario[] = [
  { name: "hot", title: "1 hot SKU", skus: 1 },
  { name: "spread", title: "10,000 SKUs", skus: 10_000 },
  // Batches form from the calls in flight at once, so more clients than the others
  // (the ceiling is measured at the same counts; the goal compares against the best
  // single-row ceiling of the run). Only PESSIMISTIC holds are batched: an
  // OPTIMISTIC one takes the one-at-a-time path (docs/concurrency.md).
  { name: "hot-group-commit", title: "1 hot SKU, GROUP_COMMIT", skus: 1, policy: { hotSkuMode: HotSkuMode.GROUP_COMMIT }, concurrency: [64, 256], strategies: ["PESSIMISTIC"] },
];

export const DEFAULT_SCENARIOS = ["hot", "spread", "hot-group-commit"];

/**
 * The code of SKU `i`; bench/pgbench/*.sql build the same codes
 * ('B-' || lpad(i::text, 5, '0')).
 */
export function skuCode(i: number): string {
  return `B-${String(i).padStart(5, "0")}`;
}

/** Units each SKU starts with (the contract's maximum): no run can sell out. */
export const ON_HAND = 1_000_000_000n;
