// The per-SKU fairness controls (issue 7; docs/fairness.md, "Fairness controls"):
// max_units_per_customer under concurrency (both strategies, two replicas,
// allocations, multi-SKU batches, the waitlist), the attempt rate limit under
// concurrency across two replicas, and the abandonment-aware TTL.
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService, LockingStrategy, WaitlistEntryStatus, type Reservation } from "@holdfast/contracts";
import { QuotaFailureSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failure, failureOf, outcome, range, type Outcome } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

let counter = 0;
const rid = () => `fc-${process.pid}-${++counter}`;
const secs = (s: number) => ({ seconds: BigInt(s) });
const keyOf = (o: Outcome<unknown>) => (o.ok ? "OK" : o.failure.key);
/** How many outcomes of each kind ("OK" or "<Code>/<REASON>"). */
const tally = (outcomes: Outcome<unknown>[]) => outcomes.reduce<Record<string, number>>((t, o) => ((t[keyOf(o)] = (t[keyOf(o)] ?? 0) + 1), t), {});
const ttlSeconds = (r: Reservation) => Number(r.expireTime!.seconds - r.createTime!.seconds) + (r.expireTime!.nanos - r.createTime!.nanos) / 1e9;

describe("fairness controls: per-customer limit, attempt rate limit, abandonment-aware TTL", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  let replicas: ServiceProcess[] = [];
  let a: Client;
  let b: Client;
  /** Alternates between the two replicas. */
  const via = (i: number) => (i % 2 === 0 ? a : b);

  before(async () => {
    db = await createTestDatabase("fairness-controls");
    knex = createKnex({ url: db.url, poolMax: 4 });
    // A customer's attempts queue on its lock one after another: give the last of 40 room
    // on a shared 2-core machine; and OPTIMISTIC must not give up on conflicts between
    // customers (the outcome counts below are exact).
    const env = { LOCK_TIMEOUT_MS: "15000", OPTIMISTIC_MAX_ATTEMPTS: "100" };
    replicas = await Promise.all([startService("reservation-service", db.url, env), startService("reservation-service", db.url, env)]);
    a = createGrpcJsClient(InventoryReservationService, replicas[0]!.grpcAddress, undefined, testCaller);
    b = createGrpcJsClient(InventoryReservationService, replicas[1]!.grpcAddress, undefined, testCaller);
  });
  after(async () => {
    a?.close();
    b?.close();
    await Promise.all(replicas.map((r) => r.stop()));
    await knex?.destroy();
    await db?.drop();
  });

  const createSku = (sku: string, onHand: number, policy: Parameters<Client["createSku"]>[0]["policy"]) =>
    a.createSku({ requestId: rid(), sku, name: sku, initialOnHand: BigInt(onHand), policy });
  const hold = (client: Client, customerId: string, lines: { sku: string; quantity: number }[], extra: { strategy?: LockingStrategy; ttl?: number; joinWaitlistIfShort?: boolean } = {}) =>
    client.createHold({
      requestId: rid(),
      customerId,
      lines,
      lockingStrategy: extra.strategy ?? LockingStrategy.UNSPECIFIED,
      ttl: extra.ttl === undefined ? undefined : secs(extra.ttl),
      joinWaitlistIfShort: extra.joinWaitlistIfShort ?? false,
    });
  /** A customer's live units of a SKU, from the rows (ALLOCATED, HELD not expired, WAITING). */
  const liveUnits = async (sku: string, customerId: string) => {
    const [row] = await query<{ units: number }>(
      knex,
      `SELECT coalesce(sum(q), 0)::int AS units FROM (
         SELECT l.quantity AS q FROM reservation_items l JOIN reservations r ON r.id = l.reservation_id
          WHERE l.sku_code = ? AND r.customer_id = ? AND (l.status = 'ALLOCATED' OR (l.status = 'HELD' AND l.expires_at > now()))
         UNION ALL
         SELECT quantity FROM waitlist_entries WHERE sku_code = ? AND customer_id = ? AND status = 'WAITING') u`,
      [sku, customerId, sku, customerId],
    );
    return row!.units;
  };

  describe("max_units_per_customer", () => {
    it("one customer's 40 concurrent holds (both strategies, two replicas) get exactly the limit, while other customers and allocations race too", async () => {
      const SKU = "FC-LIM";
      await createSku(SKU, 1000, { maxUnitsPerCustomer: 3 });
      const strategies = [LockingStrategy.PESSIMISTIC, LockingStrategy.OPTIMISTIC, LockingStrategy.UNSPECIFIED];
      const bot = range(40).map((i) => outcome(hold(via(i), "c-bot", [{ sku: SKU, quantity: 1 }], { strategy: strategies[i % 3] })));
      const others = range(5).flatMap((c) => range(8).map((i) => outcome(hold(via(i + c), `c-${c}`, [{ sku: SKU, quantity: 1 }], { strategy: strategies[(i + c) % 3] }))));
      const allocations = range(10).map((i) =>
        outcome(via(i).createAllocation({ requestId: rid(), customerId: "c-alloc", lines: [{ sku: SKU, quantity: 1 }], lockingStrategy: strategies[i % 3] })),
      );
      // Two units at once for a customer who already has some: refused whole, never split.
      const pairs = range(6).map((i) => outcome(hold(via(i), "c-pair", [{ sku: SKU, quantity: 2 }], { strategy: strategies[i % 3] })));
      const [botOut, otherOut, allocOut, pairOut] = await Promise.all([Promise.all(bot), Promise.all(others), Promise.all(allocations), Promise.all(pairs)]);

      expect(tally(botOut)).to.deep.equal({ OK: 3, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 37 });
      expect(tally(otherOut)).to.deep.equal({ OK: 15, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 25 });
      expect(tally(allocOut)).to.deep.equal({ OK: 3, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 7 });
      expect(tally(pairOut)).to.deep.equal({ OK: 1, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 5 });
      for (const c of ["c-bot", "c-0", "c-1", "c-2", "c-3", "c-4", "c-alloc"]) expect(await liveUnits(SKU, c), c).to.equal(3);
      expect(await liveUnits(SKU, "c-pair")).to.equal(2);

      // The refusal names the SKU, the limit and what the customer has, and is recorded.
      const refused = botOut.find((o) => !o.ok)!;
      if (refused.ok) throw new Error("unreachable");
      expect(refused.failure.metadata).to.include({ sku: SKU, limit: "3", held: "3" });
      expect(refused.failure.violations).to.deep.equal([
        { type: "CUSTOMER_LIMIT", subject: `sku/${SKU}`, description: "at most 3 units per customer; the customer has 3 and asked for 1 more" },
      ]);

      // Releasing makes room for exactly what was released; a confirmed hold still counts.
      const botHolds = botOut.flatMap((o) => (o.ok ? [o.value.reservation!] : []));
      await b.confirmHold({ requestId: rid(), reservationId: botHolds[0]!.id });
      await a.releaseHold({ requestId: rid(), reservationId: botHolds[1]!.id });
      const again = await Promise.all(range(6).map((i) => outcome(hold(via(i), "c-bot", [{ sku: SKU, quantity: 1 }], { strategy: strategies[i % 3] }))));
      expect(tally(again)).to.deep.equal({ OK: 1, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 5 });
      expect(await liveUnits(SKU, "c-bot")).to.equal(3);

      await assertInvariants(knex, [SKU]);
      await checkConsistencyClean(a, [SKU]);
    });

    it("a multi-SKU batch is all or nothing: refused naming every SKU over its limit, nothing held on the others", async () => {
      await createSku("FC-B1", 100, { maxUnitsPerCustomer: 2 });
      await createSku("FC-B2", 100, { maxUnitsPerCustomer: 5 });
      await createSku("FC-B3", 100, {});
      // 20 concurrent carts of one customer over three SKUs: exactly 2 fit FC-B1's limit.
      const carts = await Promise.all(
        range(20).map((i) =>
          outcome(hold(via(i), "cart", [{ sku: "FC-B3", quantity: 1 }, { sku: "FC-B1", quantity: 1 }, { sku: "FC-B2", quantity: 1 }], { strategy: i % 2 ? LockingStrategy.OPTIMISTIC : LockingStrategy.PESSIMISTIC })),
        ),
      );
      expect(tally(carts)).to.deep.equal({ OK: 2, "FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED": 18 });
      expect([await liveUnits("FC-B1", "cart"), await liveUnits("FC-B2", "cart"), await liveUnits("FC-B3", "cart")]).to.deep.equal([2, 2, 2]);

      // Lines of one SKU are summed before the check (2 + 2 > 5 − 2), and every offending SKU is named.
      const both = await failure(hold(a, "cart", [{ sku: "FC-B2", quantity: 2 }, { sku: "FC-B1", quantity: 1 }, { sku: "FC-B2", quantity: 2 }, { sku: "FC-B3", quantity: 50 }]));
      expect(both.key).to.equal("FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED");
      expect(both.metadata).to.include({ sku: "FC-B1,FC-B2", limit: "2,5", held: "2,2" });
      expect(both.violations.map((v) => v.subject)).to.deep.equal(["sku/FC-B1", "sku/FC-B2"]);
      const reserved = await query<{ sku_code: string; reserved: number }>(knex, `SELECT sku_code, reserved FROM inventory WHERE sku_code LIKE 'FC-B%' ORDER BY sku_code`);
      expect(reserved.map((r) => r.reserved)).to.deep.equal([2, 2, 2]);
      // A request larger than the limit by itself is refused too.
      expect((await failure(hold(b, "someone-new", [{ sku: "FC-B1", quantity: 3 }]))).metadata).to.include({ sku: "FC-B1", limit: "2", held: "0" });
      await assertInvariants(knex, ["FC-B1", "FC-B2", "FC-B3"]);
    });

    it("waitlist entries count against the limit: a join is capped, and a promotion never takes a customer past it", async () => {
      const SKU = "FC-WL";
      await createSku(SKU, 2, { maxUnitsPerCustomer: 2 });
      const holdX = (await hold(a, "X", [{ sku: SKU, quantity: 2 }])).reservation!;
      // Y cannot queue for more than the limit (a STRICT_FIFO head that could never be served).
      expect((await failure(b.joinWaitlist({ requestId: rid(), customerId: "Y", sku: SKU, quantity: 3 }))).key).to.equal("FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED");
      const joinY = await b.joinWaitlist({ requestId: rid(), customerId: "Y", sku: SKU, quantity: 2 });
      expect(joinY.entry!.status).to.equal(WaitlistEntryStatus.WAITING);
      // Waiting for 2, Y may not take more elsewhere: not a hold, not another waitlisted hold.
      expect((await failure(hold(a, "Y", [{ sku: SKU, quantity: 1 }], { joinWaitlistIfShort: true }))).metadata).to.include({ held: "2" });
      // X has its limit: join_waitlist_if_short does not waitlist it either.
      expect((await failure(hold(b, "X", [{ sku: SKU, quantity: 1 }], { joinWaitlistIfShort: true }))).key).to.equal("FailedPrecondition/PER_CUSTOMER_LIMIT_EXCEEDED");
      // Z is waitlisted by a short hold, for what fits its limit.
      const joinZ = await hold(a, "Z", [{ sku: SKU, quantity: 1 }], { joinWaitlistIfShort: true });
      expect(joinZ.waitlistEntries.map((e) => e.status)).to.deep.equal([WaitlistEntryStatus.WAITING]);

      // X releases: Y gets a hold of 2 (the entry became a hold; still 2 units), Z waits.
      await b.releaseHold({ requestId: rid(), reservationId: holdX.id });
      const y = (await a.getWaitlistEntry({ waitlistEntryId: joinY.entry!.id })).entry!;
      expect(y.status).to.equal(WaitlistEntryStatus.PROMOTED);
      expect(await liveUnits(SKU, "Y")).to.equal(2);
      expect((await failure(hold(b, "Y", [{ sku: SKU, quantity: 1 }]))).metadata).to.include({ held: "2" });
      await assertInvariants(knex, [SKU]);
    });
    it("a customer's own entry past its max_wait, not yet swept, no longer counts when it joins again", async () => {
      const SKU = "FC-WL-LAPSED";
      await createSku(SKU, 0, { maxUnitsPerCustomer: 2 });
      const first = (await a.joinWaitlist({ requestId: rid(), customerId: "L", sku: SKU, quantity: 2, maxWait: secs(1) })).entry!;
      // No worker here: the entry lapses (database clock) and stays WAITING in its row.
      await until("the entry's max_wait has passed", async () => (await query<{ past: boolean }>(knex, `SELECT expires_at <= now() AS past FROM waitlist_entries WHERE id = ?`, [first.id]))[0]!.past, 5_000, 50);
      const again = (await b.joinWaitlist({ requestId: rid(), customerId: "L", sku: SKU, quantity: 2 })).entry!;
      expect(again.status).to.equal(WaitlistEntryStatus.WAITING);
      expect((await a.getWaitlistEntry({ waitlistEntryId: first.id })).entry!.status).to.equal(WaitlistEntryStatus.EXPIRED);
      // The live entry counts: one more unit would take the customer past the limit.
      expect((await failure(a.joinWaitlist({ requestId: rid(), customerId: "L", sku: SKU, quantity: 1 }))).metadata).to.include({ sku: SKU, limit: "2", held: "2" });
      await assertInvariants(knex, [SKU]);
    });
  });

  describe("customer_attempt_rate_limit", () => {
    /** The ConnectError of a call that must fail. */
    const errorOf = async (call: Promise<unknown>) => {
      try {
        await call;
      } catch (err) {
        if (err instanceof ConnectError) return err;
        throw err;
      }
      throw new Error("expected the call to fail");
    };

    it("admits exactly max_attempts of 50 concurrent attempts across two replicas; the rest are RATE_LIMITED with RetryInfo; others are unaffected", async () => {
      const SKU = "FC-RL";
      await createSku(SKU, 2, { customerAttemptRateLimit: { maxAttempts: 5, window: secs(10) } });
      const results = await Promise.all(range(50).map((i) => hold(via(i), "hammer", [{ sku: SKU, quantity: 1 }], { strategy: i % 2 ? LockingStrategy.OPTIMISTIC : LockingStrategy.PESSIMISTIC }).then(
        (r) => ({ ok: true as const, r }),
        (err: unknown) => ({ ok: false as const, err: err as ConnectError }),
      )));
      const outcomes = results.map((x) => (x.ok ? ({ ok: true, value: x.r } as const) : ({ ok: false, failure: failureOf(x.err) } as const)));
      // Five passed the limiter: two got the units, three found none.
      expect(tally(outcomes)).to.deep.equal({ OK: 2, "FailedPrecondition/INSUFFICIENT_STOCK": 3, "ResourceExhausted/RATE_LIMITED": 45 });
      for (const x of results) {
        if (x.ok || failureOf(x.err).reason !== "RATE_LIMITED") continue;
        const [retry] = x.err.findDetails(RetryInfoSchema);
        const delayMs = Number(retry!.retryDelay!.seconds) * 1000 + retry!.retryDelay!.nanos / 1e6;
        expect(delayMs).to.be.greaterThan(0).and.at.most(10_000);
        expect(x.err.findDetails(QuotaFailureSchema)[0]!.violations.map((v) => v.subject)).to.deep.equal(["customer/hammer"]);
        expect(failureOf(x.err).metadata).to.include({ sku: SKU, limit: "5", window_ms: "10000" });
      }
      // The log holds the five admitted attempts, by the database clock, within the window.
      const [row] = await query<{ n: number; span_ms: number }>(
        knex,
        `SELECT cardinality(admitted) AS n, extract(epoch FROM admitted[cardinality(admitted)] - admitted[1]) * 1000 AS span_ms
           FROM customer_attempt_windows WHERE sku_code = ? AND customer_id = 'hammer'`,
        [SKU],
      );
      expect(row!.n).to.equal(5);
      expect(Number(row!.span_ms)).to.be.below(10_000);
      // The budget is shared with JoinWaitlist; another customer has a budget of its own.
      expect((await failure(b.joinWaitlist({ requestId: rid(), customerId: "hammer", sku: SKU, quantity: 1 }))).key).to.equal("ResourceExhausted/RATE_LIMITED");
      const other = await Promise.all(range(5).map((i) => outcome(hold(via(i), "patient", [{ sku: SKU, quantity: 1 }]))));
      expect(tally(other)).to.deep.equal({ "FailedPrecondition/INSUFFICIENT_STOCK": 5 });
      expect((await b.joinWaitlist({ requestId: rid(), customerId: "someone", sku: SKU, quantity: 1 })).entry!.status).to.equal(WaitlistEntryStatus.WAITING);
      // A SKU without a limit is not limited.
      await createSku("FC-RL-FREE", 100, {});
      expect(tally(await Promise.all(range(20).map((i) => outcome(hold(via(i), "hammer", [{ sku: "FC-RL-FREE", quantity: 1 }])))))).to.deep.equal({ OK: 20 });
      // The refused attempts are in the request log with their reason.
      await until("the request log is written", async () => {
        const [logged] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM hold_attempts WHERE sku_code = ? AND reason = 'RATE_LIMITED'`, [SKU]);
        return logged!.n === 45;
      });
      await assertInvariants(knex, [SKU]);
    });

    it("admits again once the oldest admitted attempt has left the window, no earlier (database clock)", async () => {
      const SKU = "FC-RL1";
      // A 3 s window: the third attempt must come within it of the first (the first two
      // may each take an extra round trip on replicas that do not know the limit yet),
      // on a loaded CI machine too.
      await createSku(SKU, 100, { customerAttemptRateLimit: { maxAttempts: 2, window: secs(3) } });
      const windowLog = async () =>
        (await query<{ first: string; last: string }>(
          knex,
          `SELECT (extract(epoch FROM admitted[1]) * 1000)::text AS first, (extract(epoch FROM admitted[cardinality(admitted)]) * 1000)::text AS last
             FROM customer_attempt_windows WHERE sku_code = ? AND customer_id = 'w'`,
          [SKU],
        ))[0]!;
      await hold(a, "w", [{ sku: SKU, quantity: 1 }]);
      await hold(b, "w", [{ sku: SKU, quantity: 1 }]);
      const firstAdmitted = Number((await windowLog()).first);
      const refused = await errorOf(hold(a, "w", [{ sku: SKU, quantity: 1 }]));
      expect(failureOf(refused).reason).to.equal("RATE_LIMITED");
      const delay = refused.findDetails(RetryInfoSchema)[0]!.retryDelay!;
      expect(Number(delay.seconds) * 1000 + delay.nanos / 1e6).to.be.greaterThan(0).and.at.most(3000);
      // Retry until admitted (refused attempts are not logged, so retrying costs no budget).
      await until("an attempt is admitted again", async () => (await outcome(hold(via(counter), "w", [{ sku: SKU, quantity: 1 }]))).ok, 10_000, 50);
      // By the database clock, the third admission came a whole window after the first.
      expect(Number((await windowLog()).last) - firstAdmitted).to.be.at.least(3000);
    });

    it("refused by several SKUs, names the one that admits again last, with its delay", async () => {
      // The long window's SKU sorts last: the first refusal in SKU order is the short one.
      await createSku("FC-RL-A-SHORT", 100, { customerAttemptRateLimit: { maxAttempts: 1, window: secs(2) } });
      await createSku("FC-RL-B-LONG", 100, { customerAttemptRateLimit: { maxAttempts: 1, window: secs(60) } });
      const lines = [{ sku: "FC-RL-A-SHORT", quantity: 1 }, { sku: "FC-RL-B-LONG", quantity: 1 }];
      await hold(a, "cart", lines);
      const refused = await errorOf(hold(b, "cart", lines));
      expect(failureOf(refused).metadata).to.include({ sku: "FC-RL-B-LONG", limit: "1", window_ms: "60000" });
      const delay = refused.findDetails(RetryInfoSchema)[0]!.retryDelay!;
      expect(Number(delay.seconds) * 1000 + delay.nanos / 1e6).to.be.greaterThan(2_000).and.at.most(60_000);
    });

    it("counts from the first attempt after UpdateSku sets a limit, on replicas that remember the SKU without one; a replay counts too", async () => {
      const SKU = "FC-RL-LATE";
      const limit = (maxAttempts: number) =>
        a.updateSku({ requestId: rid(), sku: { code: SKU, policy: maxAttempts === 0 ? {} : { customerAttemptRateLimit: { maxAttempts, window: secs(60) } } }, updateMask: { paths: ["policy.customer_attempt_rate_limit"] } });
      await createSku(SKU, 1000, {});
      // Both replicas sell it without a limit (and so skip the limiter for it from then on).
      expect(tally(await Promise.all(range(6).map((i) => outcome(hold(via(i), "late", [{ sku: SKU, quantity: 1 }])))))).to.deep.equal({ OK: 6 });
      const earlier = { requestId: rid(), customerId: "again", lines: [{ sku: SKU, quantity: 1 }], lockingStrategy: LockingStrategy.UNSPECIFIED };
      await b.createHold(earlier);

      await limit(3);
      const outcomes = await Promise.all(range(10).map((i) => outcome(hold(via(i), "late", [{ sku: SKU, quantity: 1 }]))));
      expect(tally(outcomes)).to.deep.equal({ OK: 3, "ResourceExhausted/RATE_LIMITED": 7 });
      // A replay is an attempt too, also on a replica that still remembers no limit.
      expect((await b.createHold(earlier)).replayed).to.equal(true);
      expect(tally(await Promise.all(range(3).map((i) => outcome(hold(via(i), "again", [{ sku: SKU, quantity: 1 }])))))).to.deep.equal({ OK: 2, "ResourceExhausted/RATE_LIMITED": 1 });
      const admitted = await query<{ customer_id: string; n: number }>(
        knex,
        `SELECT customer_id, cardinality(admitted) AS n FROM customer_attempt_windows WHERE sku_code = ? ORDER BY customer_id`,
        [SKU],
      );
      expect(admitted).to.deep.equal([{ customer_id: "again", n: 3 }, { customer_id: "late", n: 3 }]);

      // Cleared: the next attempts are not limited, on either replica.
      await limit(0);
      expect(tally(await Promise.all(range(6).map((i) => outcome(hold(via(i), "late", [{ sku: SKU, quantity: 1 }])))))).to.deep.equal({ OK: 6 });
      await assertInvariants(knex, [SKU]);
    });
  });

  describe("abandonment_aware_ttl", () => {
    /**
     * `n` holds of `customerId` on `sku` with the minimum TTL (1 s), one after the other
     * (a hold whose transaction took most of its 1 s would be refused, LOCK_TIMEOUT: a
     * burst of them queued on one row on a loaded machine could), then waits (database
     * clock) until they have expired.
     */
    const abandon = async (sku: string, customerId: string, n: number) => {
      const holds: Awaited<ReturnType<typeof hold>>[] = [];
      for (const i of range(n)) holds.push(await hold(via(i), customerId, [{ sku, quantity: 1 }], { ttl: 1 }));
      await until(`${customerId}'s holds expired`, async () => {
        const [row] = await query<{ dead: boolean }>(knex, `SELECT bool_and(expires_at <= now()) AS dead FROM reservations WHERE id = ANY(?::uuid[])`, [holds.map((h) => h.reservation!.id)]);
        return row!.dead;
      }, 10_000, 50);
      return holds.map((h) => h.reservation!);
    };

    it("halves the TTL per expired hold beyond the grace (net of confirmed ones), never below the minimum; others keep theirs", async () => {
      const SKU = "FC-AB";
      await createSku(SKU, 1000, { abandonmentAwareTtl: true, defaultHoldTtl: secs(600) });
      await createSku("FC-AB-PLAIN", 1000, { defaultHoldTtl: secs(600) });
      await Promise.all([abandon(SKU, "flaky", 4), abandon(SKU, "buyer", 2), abandon(SKU, "gone", 12), abandon("FC-AB-PLAIN", "flaky", 4)]);
      // buyer confirms one hold: 2 expired − 1 confirmed − grace 1 = no strike.
      await b.confirmHold({ requestId: rid(), reservationId: (await hold(a, "buyer", [{ sku: SKU, quantity: 1 }])).reservation!.id });

      // flaky: 4 expired − 1 grace = 3 strikes: 600 s / 8, and a requested 120 s / 8.
      expect(ttlSeconds((await hold(a, "flaky", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(75);
      expect(ttlSeconds((await hold(b, "flaky", [{ sku: SKU, quantity: 1 }], { ttl: 120 })).reservation!)).to.equal(15);
      // A multi-SKU hold has one expiry: the shortest.
      expect(ttlSeconds((await hold(a, "flaky", [{ sku: "FC-AB-PLAIN", quantity: 1 }, { sku: SKU, quantity: 1 }])).reservation!)).to.equal(75);
      // Not on a SKU without the policy, whatever the history there.
      expect(ttlSeconds((await hold(b, "flaky", [{ sku: "FC-AB-PLAIN", quantity: 1 }])).reservation!)).to.equal(600);
      // gone: 11 strikes would be 0.29 s: the server's minimum hold TTL (1 s) instead.
      expect(ttlSeconds((await hold(a, "gone", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(1);
      expect(ttlSeconds((await hold(b, "buyer", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(600);
      expect(ttlSeconds((await hold(a, "newcomer", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(600);
      // The rule reads the customer's expired holds, swept or not: what GetReservation says matches.
      const r = (await hold(b, "flaky", [{ sku: SKU, quantity: 1 }])).reservation!;
      expect((await a.getReservation({ reservationId: r.id })).reservation!.expireTime).to.deep.equal(r.expireTime);
      await assertInvariants(knex, [SKU, "FC-AB-PLAIN"]);
    });

    it("does not count a lapsed hold whose header a transition holds (a ConfirmHold that read the clock in time may commit)", async () => {
      const SKU = "FC-AB-HELD";
      await createSku(SKU, 1000, { abandonmentAwareTtl: true, defaultHoldTtl: secs(600) });
      const [kept] = await abandon(SKU, "confirming", 2);
      // 2 expired − grace 1 = 1 strike: 300 s.
      expect(ttlSeconds((await hold(a, "confirming", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(300);
      // With one of them locked as an in-flight ConfirmHold would: 1 expired, no strike.
      const inFlight = await knex.transaction();
      try {
        await inFlight.raw(`SELECT 1 FROM reservations WHERE id = ? FOR UPDATE`, [kept!.id]);
        expect(ttlSeconds((await hold(b, "confirming", [{ sku: SKU, quantity: 1 }])).reservation!)).to.equal(600);
      } finally {
        await inFlight.rollback();
      }
    });
  });

  describe("policy", () => {
    it("stores and returns the three controls at their bounds; UpdateSku sets and clears them", async () => {
      const policy = { maxUnitsPerCustomer: 1_000_000, customerAttemptRateLimit: { maxAttempts: 1_000_000, window: secs(3600) }, abandonmentAwareTtl: true };
      const { sku } = await createSku("FC-POL", 1, policy);
      expect(sku!.policy).to.include({ maxUnitsPerCustomer: 1_000_000, abandonmentAwareTtl: true });
      expect(sku!.policy!.customerAttemptRateLimit).to.deep.include({ maxAttempts: 1_000_000 });
      const read = (await b.getSku({ sku: "FC-POL" })).sku!;
      expect(read.policy).to.deep.equal(sku!.policy);
      const { sku: low } = await a.updateSku({
        requestId: rid(),
        sku: { code: "FC-POL", policy: { maxUnitsPerCustomer: 1, customerAttemptRateLimit: { maxAttempts: 1, window: secs(1) } } },
        updateMask: { paths: ["policy.max_units_per_customer", "policy.customer_attempt_rate_limit"] },
      });
      expect(low!.policy).to.include({ maxUnitsPerCustomer: 1, abandonmentAwareTtl: true });
      expect(low!.policy!.customerAttemptRateLimit!.window!.seconds).to.equal(1n);
      const { sku: cleared } = await a.updateSku({ requestId: rid(), sku: { code: "FC-POL", policy: {} }, updateMask: { paths: ["policy"] } });
      expect(cleared!.policy).to.include({ maxUnitsPerCustomer: 0, abandonmentAwareTtl: false });
      expect(cleared!.policy!.customerAttemptRateLimit).to.equal(undefined);
      const bad = await failure(a.updateSku({ requestId: rid(), sku: { code: "FC-POL", policy: { maxUnitsPerCustomer: 1_000_001 } }, updateMask: { paths: ["policy.max_units_per_customer"] } }));
      expect(bad).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect((await b.getSku({ sku: "FC-POL" })).sku!.policy!.maxUnitsPerCustomer).to.equal(0);
    });
  });
});
