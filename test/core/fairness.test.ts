// The flash-sale fairness metrics (packages/core/src/fairness.ts) on small hand-made
// logs whose answers are worked out by hand in the comments; docs/fairness.md uses the
// same examples. Pure functions: no database, no server.
import { expect } from "chai";
import {
  attemptTotals,
  availabilityLookup,
  chooseInterval,
  DEFAULT_LATENCY_BOUNDS_US,
  distributionStats,
  durationDistribution,
  expiredAndResold,
  fifoInversions,
  jainIndex,
  largestShare,
  latencyHistogram,
  offeredUnderStrictFifo,
  oversellUnits,
  refusalClass,
  refusalCounts,
  timeline,
  timeToGrantSamples,
  topCustomers,
  topCustomersLimit,
  undersell,
  unitsPerCustomer,
  type AttemptRecord,
  type AvailabilityTimeline,
  type GrantRecord,
} from "@holdfast/core";

type Outcome = AttemptRecord["outcome"];

/** An attempt at t µs; reason null for GRANTED, INSUFFICIENT_STOCK for WAITLISTED unless given. */
function att(t: number, customerId: string, quantity: number, outcome: Outcome, reason?: string, replayed = false): AttemptRecord {
  return {
    receivedAtUs: t,
    customerId,
    quantity,
    outcome,
    reason: outcome === "GRANTED" ? null : (reason ?? "INSUFFICIENT_STOCK"),
    replayed,
    latencyUs: 1000,
  };
}

const grant = (customerId: string, units: number, grantedAtUs: number): GrantRecord => ({ customerId, units, grantedAtUs });
const flat = (initial: number): AvailabilityTimeline => ({ initial, steps: [] });

describe("core: flash-sale fairness metrics", () => {
  describe("availability step function", () => {
    it("takes the last step at or before t (at) / strictly before t (before), keeping ledger order when occurred_at steps back", () => {
      // Effective times: 10, max(10, 8) = 10, 20.
      const lookup = availabilityLookup({ initial: 5, steps: [{ atUs: 10, available: 4 }, { atUs: 8, available: 3 }, { atUs: 20, available: 2 }] });
      expect(lookup.at(9)).to.equal(5);
      expect(lookup.before(10)).to.equal(5);
      expect(lookup.at(10)).to.equal(3);
      expect(lookup.at(15)).to.equal(3);
      expect(lookup.before(20)).to.equal(3);
      expect(lookup.at(20)).to.equal(2);
    });

    it("under STRICT_FIFO a new buyer is offered nothing while anyone waits", () => {
      // Ledger: 0, then 1 at 10, 2 at 20, 0 at 30 (and a step back in time at 28 → 30).
      const ledger: AvailabilityTimeline = { initial: 0, steps: [{ atUs: 10, available: 1 }, { atUs: 20, available: 2 }, { atUs: 30, available: 3 }, { atUs: 28, available: 0 }] };
      // One entry waits from 5 to 15, another from 25 on; one waited from before the window until 12.
      const offered = offeredUnderStrictFifo(ledger, [{ fromUs: 5, toUs: 15 }, { fromUs: 25, toUs: null }, { fromUs: -10, toUs: 12 }], 0);
      expect(offered.initial).to.equal(0);
      const lookup = availabilityLookup(offered);
      expect([4, 5, 10, 14, 15, 19, 20, 24, 25, 30, 99].map((t) => lookup.at(t))).to.deep.equal([0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 0]);
      // Nobody waiting at all: the ledger as it is.
      const none = availabilityLookup(offeredUnderStrictFifo(ledger, [], 0));
      expect([5, 10, 20, 29, 30].map((t) => none.at(t))).to.deep.equal([0, 1, 2, 2, 0]);
      // Waiting since before the window: nothing at the start, the ledger's value once it ends.
      const before = offeredUnderStrictFifo({ initial: 4, steps: [] }, [{ fromUs: -5, toUs: 7 }], 0);
      expect(before.initial).to.equal(0);
      expect(availabilityLookup(before).at(7)).to.equal(4);
    });

    it("oversell is max(0, −lowest available)", () => {
      expect(oversellUnits({ initial: 2, steps: [1, 0, -1, 3].map((available, i) => ({ atUs: i, available })) })).to.equal(1);
      expect(oversellUnits({ initial: 2, steps: [{ atUs: 1, available: 0 }] })).to.equal(0);
      expect(oversellUnits(flat(0))).to.equal(0);
    });
  });

  describe("FIFO inversions", () => {
    // Stock 3 at start. Ledger: B's grant at 25 → 2, D's grant at 35 → 0, a release at
    // 45 → 1, F's grant at 51 → 0, a release at 55 → 1, A's retry granted at 61 → 0.
    const availability: AvailabilityTimeline = {
      initial: 3,
      steps: [
        { atUs: 25, available: 2 },
        { atUs: 35, available: 0 },
        { atUs: 45, available: 1 },
        { atUs: 51, available: 0 },
        { atUs: 55, available: 1 },
        { atUs: 61, available: 0 },
      ],
    };
    const log = [
      att(10, "A", 1, "REFUSED", "CONFLICT_RETRIES_EXHAUSTED"), // available 3: candidate, unserved
      att(20, "B", 1, "GRANTED"), //                                 available 3: candidate, served
      att(30, "C", 5, "REFUSED", "INSUFFICIENT_STOCK"), //           5 > available 2: could NOT have fitted
      att(32, "D", 2, "GRANTED"), //                                 available 2: candidate, served
      att(40, "E", 1, "REFUSED", "PER_CUSTOMER_LIMIT_EXCEEDED"), //  ineligible whatever the stock
      att(50, "F", 1, "GRANTED"), //                                 available 1: candidate, served
      att(60, "A", 1, "GRANTED"), //                                 A's retry: candidate, served
      att(5, "Z", 1, "REFUSED", "LOCK_TIMEOUT", true), //            a replay: ignored
    ];

    it("counts the pairs of a hand-made log (3 inversions in 9 comparable pairs)", () => {
      // Granted l and the earlier candidates of other customers:
      //   B@20: A@10                 → 1 pair, 1 inversion (A refused)
      //   D@32: A@10, B@20           → 2 pairs, 1 inversion (C@30 could not have fitted)
      //   F@50: A@10, B@20, D@32     → 3 pairs, 1 inversion (E@40 ineligible)
      //   A@60: B@20, D@32, F@50     → 3 pairs, 0 (A's own earlier refusal is not a pair)
      // Total 9 pairs, 3 inversions, rate 1/3.
      const result = fifoInversions(log, availability);
      expect(result).to.deep.equal({ inversions: 3, comparablePairs: 9, rate: 1 / 3 });
    });

    it("is not an inversion when the earlier refused attempt could not have fitted on arrival", () => {
      // X wants 3 while 2 are available, Y (later) wants 1 and gets it: no pair at all.
      const result = fifoInversions([att(1, "X", 3, "REFUSED", "INSUFFICIENT_STOCK"), att(2, "Y", 1, "GRANTED")], flat(2));
      expect(result).to.deep.equal({ inversions: 0, comparablePairs: 0, rate: 0 });
    });

    it("counts a stock refusal that fitted on arrival (overtaken while queueing) and a waitlisting", () => {
      // P arrives with 1 available and is refused INSUFFICIENT_STOCK because Q, arriving
      // later, took the unit first; W is waitlisted the same way. Q: 2 pairs, 2 inversions.
      const result = fifoInversions([att(1, "P", 1, "REFUSED", "INSUFFICIENT_STOCK"), att(2, "W", 1, "WAITLISTED"), att(3, "Q", 1, "GRANTED")], flat(1));
      expect(result).to.deep.equal({ inversions: 2, comparablePairs: 2, rate: 1 });
    });

    it("does not pair attempts that arrived at the same µs, nor count replays", () => {
      const same = fifoInversions([att(7, "X", 1, "REFUSED", "LOCK_TIMEOUT"), att(7, "Y", 1, "GRANTED")], flat(5));
      expect(same).to.deep.equal({ inversions: 0, comparablePairs: 0, rate: 0 });
      const replay = fifoInversions([att(1, "X", 1, "REFUSED", "LOCK_TIMEOUT", true), att(2, "Y", 1, "GRANTED", undefined, true)], flat(5));
      expect(replay).to.deep.equal({ inversions: 0, comparablePairs: 0, rate: 0 });
      expect(fifoInversions([], flat(0))).to.deep.equal({ inversions: 0, comparablePairs: 0, rate: 0 });
    });

    it("agrees with a brute-force O(n²) reference on random small logs", () => {
      const random = mulberry32(20240601);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
      const reasons = ["INSUFFICIENT_STOCK", "LOCK_TIMEOUT", "CONFLICT_RETRIES_EXHAUSTED", "PER_CUSTOMER_LIMIT_EXCEEDED", "BAD_REQUEST", "SOMETHING_NEW"];
      for (let round = 0; round < 300; round++) {
        const n = Math.floor(random() * 30);
        const attempts = Array.from({ length: n }, () => {
          const outcome = pick<Outcome>(["GRANTED", "REFUSED", "WAITLISTED"]);
          return att(Math.floor(random() * 20), pick(["a", "b", "c", "d"]), Math.floor(random() * 4), outcome, pick(reasons), random() < 0.1);
        });
        const steps = Array.from({ length: Math.floor(random() * 6) }, () => ({ atUs: Math.floor(random() * 20), available: Math.floor(random() * 5) - 1 }));
        const availability = { initial: Math.floor(random() * 5), steps };
        expect(fifoInversions(attempts, availability), `round ${round}`).to.deep.equal(bruteForceFifo(attempts, availability));
      }
    });

    it("handles a burst of 200,000 attempts in well under a second", () => {
      const random = mulberry32(7);
      const attempts = Array.from({ length: 200_000 }, (_, i) => att(i >> 2, `c${i % 5000}`, 1, random() < 0.3 ? "GRANTED" : "REFUSED", "LOCK_TIMEOUT"));
      const started = performance.now();
      const result = fifoInversions(attempts, flat(1_000_000));
      expect(performance.now() - started).to.be.below(1000);
      expect(result.comparablePairs).to.be.above(0);
    });
  });

  describe("undersell", () => {
    // Stock 10 throughout (nothing granted changes it in this log, which is enough here).
    const log = [
      att(1, "A", 2, "REFUSED", "CONFLICT_RETRIES_EXHAUSTED"), // fits: A wanted 2
      att(2, "A", 2, "REFUSED", "CONFLICT_RETRIES_EXHAUSTED"), // A's retry: still 2, not 4
      att(3, "B", 3, "REFUSED", "LOCK_TIMEOUT"), //                B wanted 3...
      att(4, "B", 1, "GRANTED"), //                                ...and got 1: 2 unmet
      att(5, "C", 20, "REFUSED", "LOCK_TIMEOUT"), //              20 > 10: would not have fitted
      att(6, "D", 1, "REFUSED", "INSUFFICIENT_STOCK"), //         stock running out: not undersell
      att(7, "E", 1, "REFUSED", "PER_CUSTOMER_LIMIT_EXCEEDED"), // ineligible
      att(8, "F", 2, "REFUSED", "LOCK_TIMEOUT", true), //          a replay
      att(9, "G", 1, "REFUSED", "OVERLOADED"), //                  1 unmet
    ];

    it("is min(units available at the end, Σ unmet demand per customer)", () => {
      // Unmet demand: A 2 + B (3 − 1) + G 1 = 5.
      expect(undersell(log, flat(10), 4)).to.deep.equal({ units: 4, unmetDemandUnits: 5 });
      expect(undersell(log, flat(10), 10)).to.deep.equal({ units: 5, unmetDemandUnits: 5 });
      expect(undersell(log, flat(10), 0)).to.deep.equal({ units: 0, unmetDemandUnits: 5 });
      expect(undersell([], flat(10), 10)).to.deep.equal({ units: 0, unmetDemandUnits: 0 });
    });

    it("classifies refusal reasons", () => {
      expect(["INSUFFICIENT_STOCK", "WAITLIST_FULL"].map(refusalClass)).to.deep.equal(["STOCK", "STOCK"]);
      expect(["LOCK_TIMEOUT", "CONFLICT_RETRIES_EXHAUSTED", "OVERLOADED"].map(refusalClass)).to.deep.equal(["CONTENTION", "CONTENTION", "CONTENTION"]);
      expect(["BAD_REQUEST", "PER_CUSTOMER_LIMIT_EXCEEDED", "RATE_LIMITED", "SOMETHING_NEW", null].map(refusalClass)).to.deep.equal(Array(5).fill("INELIGIBLE"));
    });

    it("totals and refusals of the same log (the replay left out)", () => {
      expect(attemptTotals(log)).to.deep.equal({ requests: 8, uniqueCustomers: 6, unitsRequested: 31, requestsGranted: 1, requestsRefused: 7, requestsWaitlisted: 0 });
      // Most requests first, then most units, then by name.
      expect(refusalCounts(log)).to.deep.equal([
        { reason: "LOCK_TIMEOUT", requests: 2, units: 23 },
        { reason: "CONFLICT_RETRIES_EXHAUSTED", requests: 2, units: 4 },
        { reason: "INSUFFICIENT_STOCK", requests: 1, units: 1 },
        { reason: "OVERLOADED", requests: 1, units: 1 },
        { reason: "PER_CUSTOMER_LIMIT_EXCEEDED", requests: 1, units: 1 },
      ]);
    });
  });

  describe("shares", () => {
    it("Jain's index on known vectors", () => {
      expect(jainIndex([2, 2, 2, 2])).to.equal(1); //   64 / (4·16)
      expect(jainIndex([4, 0, 0, 0])).to.equal(0.25); // 16 / (4·16) = 1/n
      expect(jainIndex([3, 1])).to.equal(0.8); //        16 / (2·10)
      expect(jainIndex([0, 0])).to.equal(0);
      expect(jainIndex([])).to.equal(0);
    });

    it("counts requesters granted nothing, and customers granted without an attempt in the window", () => {
      const attempts = [att(1, "a", 4, "GRANTED"), att(2, "b", 1, "REFUSED"), att(3, "c", 1, "REFUSED"), att(4, "d", 1, "WAITLISTED")];
      const units = unitsPerCustomer(attempts, [grant("a", 4, 5)]);
      expect([...units]).to.deep.equal([["a", 4], ["b", 0], ["c", 0], ["d", 0]]);
      expect(jainIndex(units.values())).to.equal(0.25);
      expect(largestShare(units.values())).to.equal(1);
      // e was promoted from an entry that joined before the window: a 5th customer.
      const withPromotion = unitsPerCustomer(attempts, [grant("a", 4, 5), grant("e", 4, 6)]);
      expect(jainIndex(withPromotion.values())).to.equal(64 / (5 * 32)); // 0.4
    });

    it("largest share and top customers", () => {
      expect(largestShare([3, 1])).to.equal(0.75);
      expect(largestShare([0, 0])).to.equal(0);
      const units = new Map([["a", 3], ["b", 1], ["c", 0], ["d", 3]]);
      expect(topCustomers(units, 2)).to.deep.equal([
        { customerId: "a", unitsGranted: 3, share: 3 / 7 },
        { customerId: "d", unitsGranted: 3, share: 3 / 7 },
      ]);
      expect(topCustomers(units, 10).map((c) => c.customerId)).to.deep.equal(["a", "d", "b"]);
      expect([0, 5, 500].map(topCustomersLimit)).to.deep.equal([10, 5, 100]);
    });
  });

  describe("durations", () => {
    it("nearest-rank percentiles", () => {
      const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1
      expect(distributionStats(hundred)).to.deep.equal({ count: 100, p50: 50, p95: 95, p99: 99, max: 100, mean: 50.5 });
      // n = 3: p50 = 2nd (⌈1.5⌉), p95 = p99 = 3rd (⌈2.85⌉, ⌈2.97⌉).
      expect(distributionStats([30, 10, 20])).to.deep.equal({ count: 3, p50: 20, p95: 30, p99: 30, max: 30, mean: 20 });
      expect(distributionStats([7])).to.deep.equal({ count: 1, p50: 7, p95: 7, p99: 7, max: 7, mean: 7 });
      expect(distributionStats([])).to.equal(null);
    });

    it("as the contract's DurationDistribution, in µs or ms", () => {
      const empty = durationDistribution([]);
      expect(empty.count).to.equal(0n);
      expect(empty.p50).to.equal(undefined);
      const d = durationDistribution([1_500_000, 2]);
      expect(d.count).to.equal(2n);
      expect([d.p50!.seconds, d.p50!.nanos]).to.deep.equal([0n, 2000]);
      expect([d.max!.seconds, d.max!.nanos]).to.deep.equal([1n, 500_000_000]);
      expect([d.mean!.seconds, d.mean!.nanos]).to.deep.equal([0n, 750_001_000]);
      const ms = durationDistribution([2.5], 1000); // the worker's expiry lag, in ms
      expect([ms.p99!.seconds, ms.p99!.nanos]).to.deep.equal([0n, 2_500_000]);
    });

    it("time to grant: from a customer's first attempt to their first grant after it", () => {
      const attempts = [att(100, "a", 1, "REFUSED", "LOCK_TIMEOUT"), att(300, "a", 1, "GRANTED"), att(200, "b", 1, "WAITLISTED"), att(250, "c", 1, "REFUSED")];
      // a: 310 − 100; b promoted at 1200: 1200 − 200; c never granted; d was granted
      // without an attempt in the window: no sample.
      const samples = timeToGrantSamples(attempts, [grant("a", 1, 310), grant("b", 1, 1200), grant("d", 1, 50)]);
      expect(samples.sort((x, y) => x - y)).to.deep.equal([210, 1000]);
    });

    it("latency histogram: (previous, bound] buckets and an unbounded last one", () => {
      expect(latencyHistogram([0, 10, 11, 100, 101, 1000, 5000, 5000], [10, 100, 1000])).to.deep.equal([
        { upperBoundUs: 10, count: 2 },
        { upperBoundUs: 100, count: 2 },
        { upperBoundUs: 1000, count: 2 },
        { upperBoundUs: null, count: 2 },
      ]);
      expect(latencyHistogram([], DEFAULT_LATENCY_BOUNDS_US)).to.have.length(DEFAULT_LATENCY_BOUNDS_US.length + 1);
      expect(() => latencyHistogram([1], [10, 10])).to.throw(RangeError);
    });
  });

  describe("timeline", () => {
    it("buckets attempts by arrival and grants by grant time, with the availability at each bucket's end", () => {
      // [0, 2500) by 1000: buckets [0, 1000), [1000, 2000), [2000, 2500).
      const buckets = timeline({
        startUs: 0,
        endUs: 2500,
        intervalUs: 1000,
        attempts: [
          att(0, "a", 2, "GRANTED"),
          att(999, "b", 1, "REFUSED"),
          att(500, "x", 1, "REFUSED", "LOCK_TIMEOUT", true), // replay
          att(1000, "c", 1, "WAITLISTED"), //                  neither granted nor refused
          att(2499, "d", 1, "GRANTED"),
          att(2500, "e", 1, "GRANTED"), //                     outside (end exclusive)
          att(-1, "f", 1, "GRANTED"), //                       outside
        ],
        grants: [grant("a", 2, 0), grant("c", 1, 1500), grant("z", 9, 2500)],
        // 5 at start; 3 at 0; 2 at 1500; 1 at 2000 (a step at a bucket's end belongs to the next bucket).
        availability: { initial: 5, steps: [{ atUs: 0, available: 3 }, { atUs: 1500, available: 2 }, { atUs: 2000, available: 1 }] },
      });
      expect(buckets).to.deep.equal([
        { startUs: 0, requests: 2, requestsGranted: 1, requestsRefused: 1, unitsGranted: 2, availableAtEnd: 3 },
        { startUs: 1000, requests: 1, requestsGranted: 0, requestsRefused: 0, unitsGranted: 1, availableAtEnd: 2 },
        { startUs: 2000, requests: 1, requestsGranted: 1, requestsRefused: 0, unitsGranted: 0, availableAtEnd: 1 },
      ]);
    });

    it("an empty window has no buckets; too many buckets is an error", () => {
      expect(timeline({ startUs: 5, endUs: 5, intervalUs: 100, attempts: [], grants: [], availability: flat(0) })).to.deep.equal([]);
      expect(() => timeline({ startUs: 0, endUs: 10_001, intervalUs: 1, attempts: [], grants: [], availability: flat(0) })).to.throw(RangeError);
    });

    it("chooses about 60 buckets, 100 ms – 1 day, at most 10,000", () => {
      expect(chooseInterval(60_000)).to.equal(1000); //             1 min → 1 s
      expect(chooseInterval(3_600_000)).to.equal(60_000); //        1 h → 1 min
      expect(chooseInterval(7_000)).to.equal(117); //               ⌈116.7⌉ ms: 60 buckets
      expect(chooseInterval(1_000)).to.equal(100); //               clamped up: 10 buckets
      expect(chooseInterval(0)).to.equal(100);
      expect(chooseInterval(31 * 86_400_000)).to.equal(44_640_000); // the longest window: 12.4 h
      expect(chooseInterval(100 * 86_400_000)).to.equal(86_400_000); // clamped down: 100 buckets
      expect(chooseInterval(20_000 * 86_400_000)).to.equal(172_800_000); // 10,000 buckets at most
    });
  });

  describe("expired and re-sold units", () => {
    it("re-sells an expired unit only when a later grant needed it", () => {
      // Sold out (0 available), then:
      const result = expiredAndResold([
        { kind: "EXPIRED", units: 2, availableAfter: 2 }, // pool 2
        { kind: "OTHER", units: 1, availableAfter: 3 }, //   a release: pool stays 2
        { kind: "GRANTED", units: 1, availableAfter: 2 }, // takes the released unit: pool 2, re-sold 0
        { kind: "GRANTED", units: 1, availableAfter: 1 }, // pool 1: re-sold 1
        { kind: "EXPIRED", units: 1, availableAfter: 2 }, // pool 2
        { kind: "OTHER", units: 1, availableAfter: 1 }, //   a stock decrease: pool 1, not re-sold
        { kind: "GRANTED", units: 1, availableAfter: 0 }, // pool 0: re-sold 1 more
      ]);
      expect(result).to.deep.equal({ unitsExpired: 3, unitsResold: 2 });
      expect(expiredAndResold([])).to.deep.equal({ unitsExpired: 0, unitsResold: 0 });
    });
  });
});

/** The definition, pair by pair (docs/fairness.md), with its own availability lookup. */
function bruteForceFifo(attempts: readonly AttemptRecord[], availability: AvailabilityTimeline) {
  const availableAt = (t: number) => {
    let value = availability.initial;
    let latest = -Infinity;
    for (const step of availability.steps) {
      latest = Math.max(latest, step.atUs);
      if (latest <= t) value = step.available;
    }
    return value;
  };
  const stock = ["INSUFFICIENT_STOCK", "WAITLIST_FULL", "WAITLIST_DISABLED", "WAITLIST_ENTRY_ALREADY_EXISTS"];
  const contention = ["LOCK_TIMEOUT", "CONFLICT_RETRIES_EXHAUSTED", "TRANSACTION_ABORTED", "DATABASE_UNAVAILABLE", "OVERLOADED", "SHUTTING_DOWN", "INTERNAL_ERROR"];
  const candidate = (e: AttemptRecord) =>
    (e.outcome !== "REFUSED" || stock.includes(e.reason!) || contention.includes(e.reason!)) && e.quantity >= 1 && e.quantity <= availableAt(e.receivedAtUs);
  let inversions = 0;
  let comparablePairs = 0;
  for (const e of attempts) {
    for (const l of attempts) {
      if (e.replayed || l.replayed || e.customerId === l.customerId || !(e.receivedAtUs < l.receivedAtUs)) continue;
      if (l.outcome !== "GRANTED" || !candidate(e)) continue;
      comparablePairs++;
      if (e.outcome !== "GRANTED") inversions++;
    }
  }
  return { inversions, comparablePairs, rate: comparablePairs === 0 ? 0 : inversions / comparablePairs };
}

/** A small seeded PRNG, so a failing round can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
