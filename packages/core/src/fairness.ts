/**
 * The flash-sale fairness metrics of FlashSaleReport (docs/fairness.md defines each
 * one): pure functions over plain in-memory rows, so GetFlashSaleReport can load the
 * window's rows with SQL (hold_attempts, the granted holds, the SKU's ledger) and hand
 * them here, and tests can check every figure on small hand-made logs.
 *
 * Times are microseconds since the epoch (timestamptz precision; safe as a JS number
 * until the year 2255). Nothing here reads a clock or a database.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, type Duration } from "@bufbuild/protobuf/wkt";
import { DurationDistributionSchema, type DurationDistribution } from "@holdfast/contracts";
import type { HoldAttemptOutcome } from "@holdfast/schema";

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/** One hold_attempts row (one SKU line of one CreateHold call), as the report reads it. */
export interface AttemptRecord {
  /** received_at, µs since the epoch: arrival at the server, the order FIFO is judged by. */
  receivedAtUs: number;
  customerId: string;
  /** As requested (may be ≤ 0 for an attempt refused as BAD_REQUEST). */
  quantity: number;
  outcome: HoldAttemptOutcome;
  /** ErrorReason name without its prefix; null exactly for GRANTED. */
  reason: string | null;
  /** An idempotent replay: excluded from every metric. */
  replayed: boolean;
  /** latency_us. */
  latencyUs: number;
}

/** A hold of the SKU created in the window, directly (CreateHold) or by a waitlist promotion. */
export interface GrantRecord {
  customerId: string;
  /** The hold's units of the SKU. */
  units: number;
  /** The hold's creation (a promotion's hold is stamped with the promotion's time), µs. */
  grantedAtUs: number;
}

/**
 * The SKU's available units (on_hand − reserved − allocated) over time, as a step
 * function read from the ledger: `initial` is the value in force at the start of the
 * window (the after-values of the last event before it), then one step per event of the
 * window, in ledger (id) order, at its occurred_at with its after-values.
 */
export interface AvailabilityTimeline {
  initial: number;
  steps: readonly AvailabilityStep[];
}

export interface AvailabilityStep {
  atUs: number;
  available: number;
}

// ---------------------------------------------------------------------------------------
// Refusal reasons
// ---------------------------------------------------------------------------------------

/**
 * Why an attempt was refused, for fairness:
 * - STOCK: stock running out as the server saw it when it processed the attempt
 *   (INSUFFICIENT_STOCK; and the waitlist refusals CreateHold(join_waitlist_if_short)
 *   gives only for a short line).
 * - CONTENTION: the server failed to serve a valid request for reasons of its own
 *   (lock timeouts, optimistic conflicts, aborted transactions, overload...).
 * - INELIGIBLE: the request itself would have been refused whatever the stock and the
 *   order (bad input, a customer limit or rate limit, authentication...), and any
 *   reason this module does not know (a new reason is not taken as unfairness unless
 *   classified here).
 */
export type RefusalClass = "STOCK" | "CONTENTION" | "INELIGIBLE";

export const STOCK_EXHAUSTION_REASONS: readonly string[] = ["INSUFFICIENT_STOCK", "WAITLIST_FULL", "WAITLIST_DISABLED", "WAITLIST_ENTRY_ALREADY_EXISTS"];

export const CONTENTION_REASONS: readonly string[] = [
  "LOCK_TIMEOUT",
  "CONFLICT_RETRIES_EXHAUSTED",
  "TRANSACTION_ABORTED",
  "DATABASE_UNAVAILABLE",
  "OVERLOADED",
  "SHUTTING_DOWN",
  "INTERNAL_ERROR",
];

export function refusalClass(reason: string | null): RefusalClass {
  if (reason !== null && STOCK_EXHAUSTION_REASONS.includes(reason)) return "STOCK";
  if (reason !== null && CONTENTION_REASONS.includes(reason)) return "CONTENTION";
  return "INELIGIBLE";
}

// ---------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------

/**
 * The step function as a lookup: `at(t)` = units available once every step at or before
 * t has happened, `before(t)` = once every step strictly before t has. occurred_at is the
 * inserting transaction's start, so it may step back slightly in ledger order; a step
 * takes effect no earlier than the one before it (times are made non-decreasing by a
 * running maximum) so the ledger's order is kept.
 */
export interface AvailabilityLookup {
  at(tUs: number): number;
  before(tUs: number): number;
}

export function availabilityLookup(timeline: AvailabilityTimeline): AvailabilityLookup {
  const times: number[] = [];
  let latest = -Infinity;
  for (const step of timeline.steps) times.push((latest = Math.max(latest, step.atUs)));
  const values = timeline.steps.map((s) => s.available);
  const value = (n: number) => (n === 0 ? timeline.initial : values[n - 1]!);
  return { at: (t) => value(countBefore(times, t, true)), before: (t) => value(countBefore(times, t, false)) };
}

/** How many of the ascending `sorted` are < x (≤ x when inclusive): binary search. */
function countBefore(sorted: readonly number[], x: number, inclusive: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x || (inclusive && sorted[mid] === x)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Could the attempt have been satisfied when it arrived: 1 ≤ quantity ≤ units available at received_at. */
export function satisfiableOnArrival(attempt: Pick<AttemptRecord, "receivedAtUs" | "quantity">, availability: AvailabilityLookup): boolean {
  return attempt.quantity >= 1 && attempt.quantity <= availability.at(attempt.receivedAtUs);
}

/** A waitlist entry's WAITING span: from its join to its promotion or closing (null: still waiting). */
export interface WaitingSpan {
  fromUs: number;
  toUs: number | null;
}

/**
 * What a NEW buyer could have been granted over time under the STRICT_FIFO waitlist
 * policy: the ledger's availability, except 0 while anyone waits (returned units are
 * the queue's; the hold's guarded UPDATE refuses new buyers while waitlist_count > 0).
 * An entry waits at t when fromUs ≤ t < toUs (steps are inclusive, as in
 * availabilityLookup). Spans that began before the window and had not ended by its
 * start make the initial value 0. Used for "satisfiable on arrival", so that refusing a
 * new buyer while the queue waits is not taken for an inversion or an undersell.
 */
export function offeredUnderStrictFifo(ledger: AvailabilityTimeline, spans: readonly WaitingSpan[], startUs: number): AvailabilityTimeline {
  let waiting = 0;
  const changes: Array<{ atUs: number; delta: number }> = [];
  for (const span of spans) {
    if (span.toUs !== null && span.toUs <= span.fromUs) continue;
    if (span.fromUs < startUs) {
      if (span.toUs === null || span.toUs >= startUs) waiting += 1;
      if (span.toUs !== null && span.toUs >= startUs) changes.push({ atUs: span.toUs, delta: -1 });
    } else {
      changes.push({ atUs: span.fromUs, delta: +1 });
      if (span.toUs !== null) changes.push({ atUs: span.toUs, delta: -1 });
    }
  }
  changes.sort((x, y) => x.atUs - y.atUs);
  const offered = (available: number) => (waiting > 0 ? 0 : available);
  const initial = offered(ledger.initial);
  // Merge the ledger's steps (times made non-decreasing, as availabilityLookup does) with
  // the waiting count's changes; every distinct time gets one step with the value after
  // everything at that time.
  const steps: AvailabilityStep[] = [];
  let available = ledger.initial;
  let latest = -Infinity;
  let i = 0;
  let j = 0;
  while (i < ledger.steps.length || j < changes.length) {
    const ledgerAt = i < ledger.steps.length ? Math.max(latest, ledger.steps[i]!.atUs) : Infinity;
    const at = Math.min(ledgerAt, j < changes.length ? changes[j]!.atUs : Infinity);
    while (i < ledger.steps.length && Math.max(latest, ledger.steps[i]!.atUs) === at) {
      latest = at;
      available = ledger.steps[i++]!.available;
    }
    while (j < changes.length && changes[j]!.atUs === at) waiting += changes[j++]!.delta;
    steps.push({ atUs: at, available: offered(available) });
  }
  return { initial, steps };
}

/** Units reserved or allocated beyond on_hand at any moment: max(0, −min available), over the start value and every step. */
export function oversellUnits(timeline: AvailabilityTimeline): number {
  let lowest = timeline.initial;
  for (const step of timeline.steps) lowest = Math.min(lowest, step.available);
  return Math.max(0, -lowest);
}

// ---------------------------------------------------------------------------------------
// Counts
// ---------------------------------------------------------------------------------------

const counted = (attempts: readonly AttemptRecord[]) => attempts.filter((a) => !a.replayed);

export interface AttemptTotals {
  requests: number;
  uniqueCustomers: number;
  unitsRequested: number;
  requestsGranted: number;
  requestsRefused: number;
  requestsWaitlisted: number;
}

/** requests, unique_customers, units_requested and the three outcomes, replays excluded. */
export function attemptTotals(attempts: readonly AttemptRecord[]): AttemptTotals {
  const rows = counted(attempts);
  const outcome = (o: HoldAttemptOutcome) => rows.filter((a) => a.outcome === o).length;
  return {
    requests: rows.length,
    uniqueCustomers: new Set(rows.map((a) => a.customerId)).size,
    unitsRequested: rows.reduce((sum, a) => sum + Math.max(0, a.quantity), 0),
    requestsGranted: outcome("GRANTED"),
    requestsRefused: outcome("REFUSED"),
    requestsWaitlisted: outcome("WAITLISTED"),
  };
}

export interface RefusalTally {
  reason: string;
  requests: number;
  units: number;
}

/** REFUSED attempts by reason: most requests first, then most units, then reason name. */
export function refusalCounts(attempts: readonly AttemptRecord[]): RefusalTally[] {
  const byReason = new Map<string, RefusalTally>();
  for (const a of counted(attempts)) {
    if (a.outcome !== "REFUSED") continue;
    const reason = a.reason ?? "UNSPECIFIED";
    const tally = byReason.get(reason) ?? { reason, requests: 0, units: 0 };
    tally.requests += 1;
    tally.units += Math.max(0, a.quantity);
    byReason.set(reason, tally);
  }
  return [...byReason.values()].sort((x, y) => y.requests - x.requests || y.units - x.units || (x.reason < y.reason ? -1 : x.reason > y.reason ? 1 : 0));
}

// ---------------------------------------------------------------------------------------
// FIFO inversions
// ---------------------------------------------------------------------------------------

export interface FifoInversions {
  inversions: number;
  comparablePairs: number;
  /** inversions / comparablePairs; 0 when there are no comparable pairs. */
  rate: number;
}

/**
 * An attempt that can stand as the earlier side e of a pair: it was granted, waitlisted,
 * or refused for stock or contention (not INELIGIBLE), and it was satisfiable on arrival.
 */
function earlierCandidate(a: AttemptRecord, availability: AvailabilityLookup): boolean {
  if (a.outcome === "REFUSED" && refusalClass(a.reason) === "INELIGIBLE") return false;
  return satisfiableOnArrival(a, availability);
}

/**
 * Comparable pair: (e, l), e.received_at < l.received_at strictly, different customers,
 * l GRANTED, e an earlier candidate (above). Inversion: a comparable pair where e was not
 * granted (REFUSED or WAITLISTED). Replays are excluded. O(n log n): sort by arrival,
 * then one pass with running counters (total and per customer) of the candidates and
 * the unserved candidates that arrived strictly earlier.
 */
export function fifoInversions(attempts: readonly AttemptRecord[], availability: AvailabilityTimeline): FifoInversions {
  const lookup = availabilityLookup(availability);
  const rows = counted(attempts).sort((x, y) => x.receivedAtUs - y.receivedAtUs);
  let candidates = 0;
  let unserved = 0;
  const candidatesOf = new Map<string, number>();
  const unservedOf = new Map<string, number>();
  let inversions = 0;
  let comparablePairs = 0;
  for (let i = 0; i < rows.length; ) {
    let j = i;
    while (j < rows.length && rows[j]!.receivedAtUs === rows[i]!.receivedAtUs) j++;
    // Same arrival time: neither is earlier, so the group is paired only with what came before.
    for (let k = i; k < j; k++) {
      const l = rows[k]!;
      if (l.outcome !== "GRANTED") continue;
      comparablePairs += candidates - (candidatesOf.get(l.customerId) ?? 0);
      inversions += unserved - (unservedOf.get(l.customerId) ?? 0);
    }
    for (let k = i; k < j; k++) {
      const e = rows[k]!;
      if (!earlierCandidate(e, lookup)) continue;
      candidates++;
      candidatesOf.set(e.customerId, (candidatesOf.get(e.customerId) ?? 0) + 1);
      if (e.outcome !== "GRANTED") {
        unserved++;
        unservedOf.set(e.customerId, (unservedOf.get(e.customerId) ?? 0) + 1);
      }
    }
    i = j;
  }
  return { inversions, comparablePairs, rate: comparablePairs === 0 ? 0 : inversions / comparablePairs };
}

// ---------------------------------------------------------------------------------------
// Undersell
// ---------------------------------------------------------------------------------------

export interface Undersell {
  /** min(unitsAvailableAtEnd, unmetDemandUnits). */
  units: number;
  /** Σ over customers of the demand refused for CONTENTION that would have fitted and was not granted later. */
  unmetDemandUnits: number;
}

/**
 * A customer's unmet demand: the largest quantity among their REFUSED attempts whose
 * reason is CONTENTION and that were satisfiable on arrival (retries of one purchase are
 * not added up), less the units granted to them by their GRANTED attempts of the window,
 * at least 0. Undersell = min(units available at the end of the window, Σ unmet demand):
 * units that stayed unsold although customers who could have had them were turned away
 * by the server, not by the stock.
 */
export function undersell(attempts: readonly AttemptRecord[], availability: AvailabilityTimeline, unitsAvailableAtEnd: number): Undersell {
  const lookup = availabilityLookup(availability);
  const refused = new Map<string, number>();
  const granted = new Map<string, number>();
  for (const a of counted(attempts)) {
    if (a.outcome === "GRANTED") granted.set(a.customerId, (granted.get(a.customerId) ?? 0) + a.quantity);
    else if (a.outcome === "REFUSED" && refusalClass(a.reason) === "CONTENTION" && satisfiableOnArrival(a, lookup)) {
      refused.set(a.customerId, Math.max(refused.get(a.customerId) ?? 0, a.quantity));
    }
  }
  let unmetDemandUnits = 0;
  for (const [customer, quantity] of refused) unmetDemandUnits += Math.max(0, quantity - (granted.get(customer) ?? 0));
  return { units: Math.max(0, Math.min(unitsAvailableAtEnd, unmetDemandUnits)), unmetDemandUnits };
}

// ---------------------------------------------------------------------------------------
// Shares
// ---------------------------------------------------------------------------------------

/**
 * Units granted per customer, over every customer who requested (a non-replayed
 * attempt of the window, 0 units if granted nothing) or was granted units in the window
 * (e.g. promoted from an entry that joined before it).
 */
export function unitsPerCustomer(attempts: readonly AttemptRecord[], grants: readonly GrantRecord[]): Map<string, number> {
  const units = new Map<string, number>();
  for (const a of counted(attempts)) if (!units.has(a.customerId)) units.set(a.customerId, 0);
  for (const g of grants) units.set(g.customerId, (units.get(g.customerId) ?? 0) + g.units);
  return units;
}

/** Jain's index (Σx)² / (n·Σx²) over the given customers (zeros included); 0 when Σx = 0. */
export function jainIndex(units: Iterable<number>): number {
  let n = 0;
  let sum = 0;
  let squares = 0;
  for (const x of units) {
    n++;
    sum += x;
    squares += x * x;
  }
  return sum === 0 ? 0 : (sum * sum) / (n * squares);
}

/** The largest customer's share of all units granted, in [0, 1]; 0 when nothing was granted. */
export function largestShare(units: Iterable<number>): number {
  let sum = 0;
  let max = 0;
  for (const x of units) {
    sum += x;
    max = Math.max(max, x);
  }
  return sum === 0 ? 0 : max / sum;
}

export interface CustomerUnits {
  customerId: string;
  unitsGranted: number;
  share: number;
}

/** top_customers_limit as requested: 0 = 10, capped at 100. */
export function topCustomersLimit(requested: number): number {
  return requested <= 0 ? 10 : Math.min(requested, 100);
}

/** Customers granted at least one unit, most units first (ties by customer id), at most `limit`. */
export function topCustomers(units: ReadonlyMap<string, number>, limit: number): CustomerUnits[] {
  let total = 0;
  for (const x of units.values()) total += x;
  return [...units]
    .filter(([, x]) => x > 0)
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .slice(0, Math.max(0, limit))
    .map(([customerId, x]) => ({ customerId, unitsGranted: x, share: x / total }));
}

// ---------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------

/**
 * Per customer with a grant at or after their first attempt of the window: that grant's
 * time − the first attempt's received_at (µs). Customers never granted give no sample.
 */
export function timeToGrantSamples(attempts: readonly AttemptRecord[], grants: readonly GrantRecord[]): number[] {
  const first = new Map<string, number>();
  for (const a of counted(attempts)) first.set(a.customerId, Math.min(first.get(a.customerId) ?? Infinity, a.receivedAtUs));
  const grant = new Map<string, number>();
  for (const g of grants) {
    const since = first.get(g.customerId);
    if (since !== undefined && g.grantedAtUs >= since) grant.set(g.customerId, Math.min(grant.get(g.customerId) ?? Infinity, g.grantedAtUs));
  }
  return [...grant].map(([customer, at]) => at - first.get(customer)!);
}

export interface DistributionStats {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/**
 * Nearest-rank percentiles: the p-th is the ⌈p·n⌉-th smallest sample (at least the 1st).
 * null when there are no samples. Same unit as the samples.
 */
export function distributionStats(samples: readonly number[]): DistributionStats | null {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
  return {
    count: sorted.length,
    p50: rank(0.5),
    p95: rank(0.95),
    p99: rank(0.99),
    max: sorted[sorted.length - 1]!,
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

/** A non-negative Duration of a number of µs, rounded to the µs. */
export function durationFromMicros(us: number): Duration {
  const whole = Math.max(0, Math.round(us));
  return create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1_000_000)), nanos: (whole % 1_000_000) * 1000 });
}

/**
 * The contract's DurationDistribution (distributionStats): count 0 and nothing else when
 * empty. Samples in µs, or in another unit given as µs per unit (1000 for ms).
 */
export function durationDistribution(samples: readonly number[], microsPerUnit = 1): DurationDistribution {
  const stats = distributionStats(samples);
  if (stats === null) return create(DurationDistributionSchema, { count: 0n });
  const d = (x: number) => durationFromMicros(x * microsPerUnit);
  return create(DurationDistributionSchema, { count: BigInt(stats.count), p50: d(stats.p50), p95: d(stats.p95), p99: d(stats.p99), max: d(stats.max), mean: d(stats.mean) });
}

/** Upper bounds (µs) of the latency histogram: 1-2-5 steps from 0.5 ms to 10 s, then an unbounded bucket. */
export const DEFAULT_LATENCY_BOUNDS_US: readonly number[] = [
  500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

export interface HistogramBucket {
  /** Inclusive upper bound; null for the last bucket (everything above the last bound). */
  upperBoundUs: number | null;
  count: number;
}

/** bounds.length + 1 buckets: (previous bound, bound], the first from −∞, the last (last bound, ∞). */
export function latencyHistogram(samplesUs: readonly number[], boundsUs: readonly number[] = DEFAULT_LATENCY_BOUNDS_US): HistogramBucket[] {
  for (let i = 1; i < boundsUs.length; i++) if (!(boundsUs[i]! > boundsUs[i - 1]!)) throw new RangeError("histogram bounds must be strictly ascending");
  const counts = new Array<number>(boundsUs.length + 1).fill(0);
  // A sample's bucket: the first bound ≥ it, i.e. the number of bounds below it.
  for (const s of samplesUs) counts[countBefore(boundsUs, s, false)]! += 1;
  return counts.map((count, i) => ({ upperBoundUs: i < boundsUs.length ? boundsUs[i]! : null, count }));
}

// ---------------------------------------------------------------------------------------
// Timeline
// ---------------------------------------------------------------------------------------

export const MIN_TIMELINE_INTERVAL_MS = 100;
export const MAX_TIMELINE_INTERVAL_MS = 86_400_000;
export const MAX_TIMELINE_BUCKETS = 10_000;
export const TARGET_TIMELINE_BUCKETS = 60;

/** Buckets of a window: ⌈window / interval⌉ (the last may be shorter). */
export function timelineBucketCount(windowUs: number, intervalUs: number): number {
  return Math.max(0, Math.ceil(windowUs / intervalUs));
}

/**
 * The server's interval when the request sets none: window / 60 rounded up to a whole
 * ms (so at most 60 buckets), clamped to 100 ms – 1 day, then lengthened if that would
 * make more than 10,000 buckets (only for a window over 10,000 days). In ms.
 */
export function chooseInterval(windowMs: number): number {
  const interval = Math.min(MAX_TIMELINE_INTERVAL_MS, Math.max(MIN_TIMELINE_INTERVAL_MS, Math.ceil(windowMs / TARGET_TIMELINE_BUCKETS)));
  return timelineBucketCount(windowMs, interval) > MAX_TIMELINE_BUCKETS ? Math.ceil(windowMs / MAX_TIMELINE_BUCKETS) : interval;
}

export interface TimelineBucket {
  startUs: number;
  requests: number;
  requestsGranted: number;
  requestsRefused: number;
  unitsGranted: number;
  /** Units available once every step before the bucket's end has happened. */
  availableAtEnd: number;
}

export interface TimelineInput {
  startUs: number;
  /** Exclusive. */
  endUs: number;
  intervalUs: number;
  attempts: readonly AttemptRecord[];
  grants: readonly GrantRecord[];
  availability: AvailabilityTimeline;
}

/**
 * One bucket per interval from startUs, empty ones included, in time order: attempts by
 * received_at, grants by grantedAtUs; rows outside [startUs, endUs) and replays are left
 * out. Throws a RangeError beyond MAX_TIMELINE_BUCKETS.
 */
export function timeline(input: TimelineInput): TimelineBucket[] {
  const { startUs, endUs, intervalUs } = input;
  if (!(intervalUs > 0)) throw new RangeError("timeline interval must be positive");
  const n = timelineBucketCount(endUs - startUs, intervalUs);
  if (n > MAX_TIMELINE_BUCKETS) throw new RangeError(`timeline would have ${n} buckets (at most ${MAX_TIMELINE_BUCKETS})`);
  const lookup = availabilityLookup(input.availability);
  const buckets: TimelineBucket[] = Array.from({ length: n }, (_, i) => ({
    startUs: startUs + i * intervalUs,
    requests: 0,
    requestsGranted: 0,
    requestsRefused: 0,
    unitsGranted: 0,
    availableAtEnd: lookup.before(Math.min(endUs, startUs + (i + 1) * intervalUs)),
  }));
  const bucketOf = (t: number) => (t >= startUs && t < endUs ? buckets[Math.floor((t - startUs) / intervalUs)] : undefined);
  for (const a of counted(input.attempts)) {
    const b = bucketOf(a.receivedAtUs);
    if (b === undefined) continue;
    b.requests += 1;
    if (a.outcome === "GRANTED") b.requestsGranted += 1;
    if (a.outcome === "REFUSED") b.requestsRefused += 1;
  }
  for (const g of input.grants) {
    const b = bucketOf(g.grantedAtUs);
    if (b !== undefined) b.unitsGranted += g.units;
  }
  return buckets;
}

// ---------------------------------------------------------------------------------------
// Expired and re-sold units
// ---------------------------------------------------------------------------------------

/** A ledger event of the window, in ledger order, reduced to what re-selling needs. */
export interface StockEvent {
  /** EXPIRED: HOLD_EXPIRED; GRANTED: HOLD_CREATED or WAITLIST_PROMOTED; OTHER: anything else. */
  kind: "EXPIRED" | "GRANTED" | "OTHER";
  /** Units of the SKU the event moved (EXPIRED: returned; GRANTED: taken). */
  units: number;
  /** Available units after the event. */
  availableAfter: number;
}

export interface ExpiredAndResold {
  unitsExpired: number;
  unitsResold: number;
}

/**
 * units_expired = Σ units of EXPIRED events. units_resold counts an expired unit as
 * re-sold only when a later grant could not have been served without it: the expired
 * units not yet re-sold form a pool, which never exceeds the units available (anything
 * that takes available below the pool consumed pooled units); when a GRANTED event does
 * that, the units it takes out of the pool are re-sold (other events, e.g. a stock
 * decrease, shrink the pool without re-selling).
 */
export function expiredAndResold(events: readonly StockEvent[]): ExpiredAndResold {
  let unitsExpired = 0;
  let unitsResold = 0;
  let pool = 0;
  for (const e of events) {
    if (e.kind === "EXPIRED") {
      unitsExpired += e.units;
      pool += e.units;
    }
    const kept = Math.max(0, Math.min(pool, e.availableAfter));
    if (e.kind === "GRANTED") unitsResold += pool - kept;
    pool = kept;
  }
  return { unitsExpired, unitsResold };
}
