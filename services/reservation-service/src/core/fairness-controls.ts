/**
 * The per-SKU fairness controls, as CreateHold, CreateAllocation and JoinWaitlist
 * apply them (the rules: docs/fairness.md, "Fairness controls"; the SQL and why it is
 * race-free: packages/schema/src/fairness.ts and docs/concurrency.md).
 *
 * - `admitAttempt`: the attempt rate limit, before the attempt's transaction
 *   (`RateLimitHints`: when CreateHold may skip it and let its transaction's first
 *   read tell whether it is owed).
 * - `customerLimitRefusal`: max_units_per_customer, in the transaction, before any row
 *   lock (`lockCustomerLimits` then `customerLimitExcess`, for JoinWaitlist, which
 *   counts after its row lock).
 * - `abandonmentAwareHoldTtl`: the TTL of a new hold on abandonment-aware SKUs.
 */
import { Refusal, perCustomerLimitExceeded, rateLimited } from "@holdfast/core";
import { abandonmentAwareTtl, abandonmentRecords, admitAttempts, customerActiveUnits, lockCustomerUnits, type Db, type SkuRow } from "@holdfast/schema";

/**
 * Counts this attempt against the rate limits of `skus` (one autocommitted statement on
 * `db`, never a transaction's connection) and throws RESOURCE_EXHAUSTED / RATE_LIMITED
 * if any of them refuses it. SKUs without a limit cost nothing but that statement.
 * Refused by several SKUs, the answer names the one that admits again last: a retry
 * before its delay would be refused by that one anyway.
 */
export async function admitAttempt(db: Db, customerId: string, skus: readonly string[]): Promise<void> {
  const refused = (await admitAttempts(db, customerId, skus)).filter((a) => !a.admitted);
  if (refused.length > 0) throw rateLimited(customerId, refused.reduce((a, b) => (b.retryAfterMs > a.retryAfterMs ? b : a)));
}

/** Thrown in an attempt's transaction whose SKUs have a rate limit it was not admitted by: roll back, admit, start again. */
export class AdmissionOwed extends Error {
  constructor() {
    super("the attempt must pass the rate limiter first");
  }
}

/** How many SKUs RateLimitHints remembers; past that it forgets them all (they are hints). */
const HINTS_MAX = 100_000;

/**
 * Which SKUs this process last saw with an attempt rate limit. Only a hint, which
 * decides nothing: a CreateHold on SKUs that may have a limit runs the admission
 * statement before its transaction (as every attempt did before); one on SKUs that
 * had none the last time skips it, and its transaction's first read (the SKU rows, in
 * the idempotency claim's statement) checks the policy the database has now: if a
 * limit is there, the transaction rolls back (nothing written, no row locked), the
 * attempt is admitted or refused by the statement, and starts again. So an attempt is
 * counted on every SKU that has a limit when it is read, whatever this process
 * remembers, on every replica; a stale hint costs a round trip, never a miscount. And
 * a SKU without a limit costs no statement (docs/fairness.md, "Attempt rate limit").
 */
export class RateLimitHints {
  private readonly limited = new Map<string, boolean>();

  /** True if any of `skus` had a limit when last seen here (unknown SKUs: no). */
  mayBeLimited(skus: readonly string[]): boolean {
    return skus.some((sku) => this.limited.get(sku) === true);
  }

  /** Remembers what the database said about these SKUs. */
  learn(rows: readonly Pick<SkuRow, "code" | "rate_limit_max_attempts">[]): void {
    if (this.limited.size >= HINTS_MAX) this.limited.clear();
    for (const r of rows) this.limited.set(r.code, r.rate_limit_max_attempts !== null);
  }
}

/** Lines of a request on SKUs with a max_units_per_customer, with their limits. */
export type LimitedLines = { sku: string; quantity: number; limit: number }[];

/**
 * The lines on SKUs with a max_units_per_customer; if any, first takes the customer's
 * advisory lock (held until the transaction ends), so it must run before the
 * transaction locks any reservation header or inventory row.
 */
export async function lockCustomerLimits(
  trx: Db,
  customerId: string,
  lines: readonly { sku: string; quantity: number }[],
  skus: readonly Pick<SkuRow, "code" | "max_units_per_customer">[],
): Promise<LimitedLines> {
  const limits = new Map(skus.flatMap((s) => (s.max_units_per_customer === null ? [] : [[s.code, s.max_units_per_customer] as const])));
  const limited = lines.flatMap((l) => (limits.has(l.sku) ? [{ ...l, limit: limits.get(l.sku)! }] : []));
  if (limited.length > 0) await lockCustomerUnits(trx, customerId);
  return limited;
}

/**
 * PER_CUSTOMER_LIMIT_EXCEEDED naming every line that would take the customer past its
 * SKU's limit, or undefined. Counts in a later statement than lockCustomerLimits's:
 * its snapshot includes whatever the lock's previous holder committed.
 */
export async function customerLimitExcess(trx: Db, customerId: string, limited: LimitedLines): Promise<Refusal | undefined> {
  if (limited.length === 0) return undefined;
  const units = await customerActiveUnits(trx, customerId, limited.map((l) => l.sku));
  const excess = limited
    .map((l) => ({ sku: l.sku, limit: l.limit, held: units.get(l.sku) ?? 0, requested: l.quantity }))
    .filter((e) => e.held + e.requested > e.limit);
  return excess.length > 0 ? new Refusal(perCustomerLimitExceeded(customerId, excess)) : undefined;
}

/** lockCustomerLimits, then customerLimitExcess: the check of a transaction that holds no row lock yet. */
export async function customerLimitRefusal(
  trx: Db,
  customerId: string,
  lines: readonly { sku: string; quantity: number }[],
  skus: readonly Pick<SkuRow, "code" | "max_units_per_customer">[],
): Promise<Refusal | undefined> {
  return customerLimitExcess(trx, customerId, await lockCustomerLimits(trx, customerId, lines, skus));
}

/**
 * The TTL a new hold of `customerId` gets: `ttlMs` (requested or default, already
 * within bounds), shortened by the abandonment rule of each abandonment-aware SKU of
 * the hold; the shortest wins (a hold has one expiry). Never below `minMs`.
 */
export async function abandonmentAwareHoldTtl(trx: Db, customerId: string, skus: readonly Pick<SkuRow, "code" | "abandonment_aware_ttl">[], ttlMs: number, minMs: number): Promise<number> {
  const aware = skus.filter((s) => s.abandonment_aware_ttl).map((s) => s.code);
  if (aware.length === 0) return ttlMs;
  const records = await abandonmentRecords(trx, customerId, aware);
  return Math.min(ttlMs, ...records.map((r) => abandonmentAwareTtl(ttlMs, r, minMs)));
}
