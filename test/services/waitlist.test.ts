// The FIFO waitlist (issue 6): returned stock goes to the waiting entries in queue
// order, in the very transaction that returns it, whichever reservation-service
// replica or the expiry-worker returned it; a promoted entry that lets its hold
// expire loses its turn to the next one.
import { AssertionError, expect } from "chai";
import { ExpiryWorkerService, InventoryReservationService, ReservationStatus, WaitlistEntryStatus, WaitlistNotificationType, WaitlistPromotionPolicy, type WatchWaitlistResponse } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failure, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { StreamRecorder } from "../support/streams.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

let counter = 0;
const rid = () => `wl-${process.pid}-${++counter}`;

describe("waitlist: FIFO promotion across two replicas and the worker", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  let replicas: ServiceProcess[] = [];
  let worker: ServiceProcess;
  let a: Client;
  let b: Client;
  let ops: GrpcJsClient<typeof ExpiryWorkerService>;

  before(async () => {
    db = await createTestDatabase("waitlist");
    knex = createKnex({ url: db.url, poolMax: 4 });
    replicas = await Promise.all([startService("reservation-service", db.url), startService("reservation-service", db.url)]);
    // The worker's longest sleep is 10 minutes here: it must wake for every hold's expiry
    // and every entry's max_wait because it was told or found it, never by polling.
    worker = await startService("expiry-worker", db.url, { RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0", EXPIRY_MAX_SLEEP_MS: "600000" });
    a = createGrpcJsClient(InventoryReservationService, replicas[0]!.grpcAddress, undefined, testCaller);
    b = createGrpcJsClient(InventoryReservationService, replicas[1]!.grpcAddress, undefined, testCaller);
    ops = createGrpcJsClient(ExpiryWorkerService, worker.grpcAddress, undefined, testCaller);
  });
  after(async () => {
    a?.close();
    b?.close();
    ops?.close();
    await Promise.all([...replicas.map((r) => r.stop()), worker?.stop()]);
    await knex?.destroy();
    await db?.drop();
  });

  const entry = async (client: Client, id: string) => (await client.getWaitlistEntry({ waitlistEntryId: id })).entry!;
  const streams: StreamRecorder<WatchWaitlistResponse>[] = [];
  afterEach(() => streams.splice(0).forEach((s) => s.close()));
  /** A WatchWaitlist stream, once its initial state has arrived. */
  const watch = async (client: Client, customerId: string, skus: string[] = []) => {
    const stream = new StreamRecorder<WatchWaitlistResponse>((signal) => client.watchWaitlist({ customerId, skus }, { signal }));
    streams.push(stream);
    const first = await stream.next(`${customerId}'s initial state`, () => true);
    if (first.event.case !== "initialState") throw new Error(`the first message is ${first.event.case}, not the initial state`);
    return { stream, initial: first.event.value };
  };
  const notified = (type: WaitlistNotificationType) => (m: WatchWaitlistResponse) => m.event.case === "notification" && m.event.value.type === type;
  /** The notifications a stream received so far: [type, entry status, position]. */
  const told = (stream: StreamRecorder<WatchWaitlistResponse>) =>
    stream.messages.flatMap((m) => (m.event.case === "notification" ? [[WaitlistNotificationType[m.event.value.type], WaitlistEntryStatus[m.event.value.entry!.status], Number(m.event.value.entry!.position)]] : []));

  it("one unit: A holds; B, C, D wait; A releases: B is promoted and E is refused; B's hold expires: C is promoted", async () => {
    const SKU = "WL-ONE";
    // Promoted holds live 1 s, so that B's expires within the test.
    await a.createSku({ requestId: rid(), sku: SKU, name: SKU, initialOnHand: 1n, policy: { promotionHoldTtl: { seconds: 1n } } });
    const holdA = (await a.createHold({ requestId: rid(), customerId: "A", lines: [{ sku: SKU, quantity: 1 }], ttl: { seconds: 600n } })).reservation!;

    const joinB = await a.joinWaitlist({ requestId: rid(), customerId: "B", sku: SKU, quantity: 1 });
    const joinC = await b.joinWaitlist({ requestId: rid(), customerId: "C", sku: SKU, quantity: 1 });
    const joinD = await a.joinWaitlist({ requestId: rid(), customerId: "D", sku: SKU, quantity: 1 });
    expect([joinB, joinC, joinD].map((j) => [j.entry!.status, j.entry!.position])).to.deep.equal([
      [WaitlistEntryStatus.WAITING, 1n],
      [WaitlistEntryStatus.WAITING, 2n],
      [WaitlistEntryStatus.WAITING, 3n],
    ]);
    expect((await a.getAvailability({ skus: [SKU] })).availabilities[0]).to.include({ waitlistLength: 3n, waitlistUnits: 3n });
    // One active entry per customer and SKU.
    expect((await failure(b.joinWaitlist({ requestId: rid(), customerId: "B", sku: SKU, quantity: 1 }))).reason).to.equal("WAITLIST_ENTRY_ALREADY_EXISTS");

    // B watches its entry through one replica, C through the other.
    const watchB = await watch(a, "B");
    expect(watchB.initial.entries.map((e) => [e.id, e.position])).to.deep.equal([[joinB.entry!.id, 1n]]);
    const watchC = await watch(b, "C", [SKU]);

    // A releases on the other replica: B is promoted in that transaction, and told within a second.
    const releasedAt = Date.now();
    await b.releaseHold({ requestId: rid(), reservationId: holdA.id });
    const toldB = await watchB.stream.next("B's PROMOTED", notified(WaitlistNotificationType.PROMOTED), 1000);
    expect(Date.now() - releasedAt).to.be.below(1000);
    if (toldB.event.case !== "notification") throw new Error("not a notification");
    expect(toldB.event.value.entry).to.include({ id: joinB.entry!.id, status: WaitlistEntryStatus.PROMOTED });
    expect(toldB.event.value.reservation).to.include({ customerId: "B", status: ReservationStatus.HELD });
    const movedC = await watchC.stream.next("C's POSITION_CHANGED", notified(WaitlistNotificationType.POSITION_CHANGED), 1000);
    expect(movedC.event.value).to.include({ previousPosition: 2n });
    const b1 = await entry(a, joinB.entry!.id);
    expect(b1.status).to.equal(WaitlistEntryStatus.PROMOTED);
    expect(b1.reservationId).to.not.equal("");
    const holdB = (await a.getReservation({ reservationId: b1.reservationId })).reservation!;
    expect(holdB).to.include({ customerId: "B", waitlistEntryId: b1.id, createdBy: "system:waitlist" });
    expect([(await entry(b, joinC.entry!.id)).position, (await entry(b, joinD.entry!.id)).position]).to.deep.equal([1n, 2n]);

    // A new buyer finds nothing: the unit went to the queue, not to the open market.
    const refused = await failure(a.createHold({ requestId: rid(), customerId: "E", lines: [{ sku: SKU, quantity: 1 }] }));
    expect(refused.reason).to.equal("INSUFFICIENT_STOCK");

    // B lets its hold expire: the worker expires it and promotes C in the same transaction.
    await until("C promoted", async () => (await entry(a, joinC.entry!.id)).status === WaitlistEntryStatus.PROMOTED, 20_000, 100);
    expect((await entry(a, joinB.entry!.id)).status).to.equal(WaitlistEntryStatus.EXPIRED);
    expect((await entry(a, joinD.entry!.id))).to.include({ status: WaitlistEntryStatus.WAITING, position: 1n });
    // Still no room for a new buyer while D waits (STRICT_FIFO).
    expect((await failure(b.createHold({ requestId: rid(), customerId: "E", lines: [{ sku: SKU, quantity: 1 }] }))).reason).to.equal("INSUFFICIENT_STOCK");

    // C confirms: its entry is CONFIRMED; D keeps waiting.
    const c = await entry(a, joinC.entry!.id);
    await b.confirmHold({ requestId: rid(), reservationId: c.reservationId });
    expect((await entry(a, c.id)).status).to.equal(WaitlistEntryStatus.CONFIRMED);

    // What the streams told, in order: B was promoted and lost its turn; C moved up, was promoted, confirmed.
    await watchC.stream.next("C's CONFIRMED", notified(WaitlistNotificationType.CONFIRMED), 2000);
    await watchB.stream.next("B's EXPIRED", notified(WaitlistNotificationType.EXPIRED), 2000);
    expect(told(watchB.stream)).to.deep.equal([
      ["PROMOTED", "PROMOTED", 0],
      ["EXPIRED", "EXPIRED", 0],
    ]);
    expect(told(watchC.stream)).to.deep.equal([
      ["POSITION_CHANGED", "WAITING", 1],
      ["PROMOTED", "PROMOTED", 0],
      ["CONFIRMED", "CONFIRMED", 0],
    ]);
    // A client that reconnects gets the current state first: C has nothing live any more, D waits first.
    expect((await watch(a, "C")).initial.entries).to.deep.equal([]);
    expect((await watch(b, "D")).initial.entries.map((e) => [e.status, e.position])).to.deep.equal([[WaitlistEntryStatus.WAITING, 1n]]);

    const events = await query<{ operation: string; reservation_id: string | null; actor: string }>(
      knex,
      `SELECT operation, reservation_id, actor FROM audit_events WHERE sku_code = ? ORDER BY id`,
      [SKU],
    );
    expect(events.map((e) => e.operation)).to.deep.equal([
      "SKU_CREATED",
      "HOLD_CREATED",
      "HOLD_RELEASED",
      "WAITLIST_PROMOTED",
      "HOLD_EXPIRED",
      "WAITLIST_PROMOTED",
      "HOLD_CONFIRMED",
    ]);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(a, [SKU]);
  });

  it("STRICT_FIFO: a head that does not fit blocks; FIRST_FIT lets later entries that fit pass; AdjustStock promotes", async () => {
    for (const [sku, policy] of [
      ["WL-STRICT", WaitlistPromotionPolicy.STRICT_FIFO],
      ["WL-FIRST-FIT", WaitlistPromotionPolicy.FIRST_FIT],
    ] as const) {
      await a.createSku({ requestId: rid(), sku, name: sku, initialOnHand: 0n, policy: { waitlistPromotionPolicy: policy } });
      const big = (await a.joinWaitlist({ requestId: rid(), customerId: "big", sku, quantity: 3 })).entry!;
      const small = (await b.joinWaitlist({ requestId: rid(), customerId: "small", sku, quantity: 1 })).entry!;
      const adjusted = await b.adjustStock({ requestId: rid(), sku, change: { case: "delta", value: 2n }, reason: "restock" });
      if (policy === WaitlistPromotionPolicy.STRICT_FIFO) {
        expect(adjusted.promotedEntries).to.have.length(0);
        expect((await entry(a, small.id)).status).to.equal(WaitlistEntryStatus.WAITING);
        // The two units are the queue's: a new buyer gets none.
        expect((await failure(a.createHold({ requestId: rid(), customerId: "E", lines: [{ sku, quantity: 1 }] }))).reason).to.equal("INSUFFICIENT_STOCK");
        // The head leaves: the entry behind it now fits and is promoted at once.
        await a.leaveWaitlist({ requestId: rid(), waitlistEntryId: big.id });
        expect((await entry(a, small.id)).status).to.equal(WaitlistEntryStatus.PROMOTED);
      } else {
        expect(adjusted.promotedEntries.map((e) => e.id)).to.deep.equal([small.id]);
        expect((await entry(a, big.id))).to.include({ status: WaitlistEntryStatus.WAITING, position: 1n });
      }
      await assertInvariants(knex, [sku]);
    }
  });

  it("CreateHold with join_waitlist_if_short: nothing held, one entry per short SKU; promoted later to a single-line hold; replayed", async () => {
    await a.createSku({ requestId: rid(), sku: "WL-IMPLICIT-A", name: "a", initialOnHand: 5n });
    await a.createSku({ requestId: rid(), sku: "WL-IMPLICIT-B", name: "b", initialOnHand: 1n });
    const request = {
      requestId: rid(),
      customerId: "implicit",
      lines: [
        { sku: "WL-IMPLICIT-B", quantity: 1 },
        { sku: "WL-IMPLICIT-A", quantity: 2 },
        { sku: "WL-IMPLICIT-B", quantity: 2 },
      ],
      joinWaitlistIfShort: true,
    };
    const first = await a.createHold(request);
    expect(first.reservation).to.equal(undefined);
    expect(first.waitlistEntries.map((e) => [e.sku, e.quantity, e.status, e.position, e.requestId])).to.deep.equal([
      ["WL-IMPLICIT-B", 3, WaitlistEntryStatus.WAITING, 1n, request.requestId],
    ]);
    const again = await b.createHold(request);
    expect(again.replayed).to.equal(true);
    expect(again.waitlistEntries.map((e) => e.id)).to.deep.equal(first.waitlistEntries.map((e) => e.id));
    expect((await a.getAvailability({ skus: ["WL-IMPLICIT-A"] })).availabilities[0]).to.include({ available: 5n });
    const adjusted = await b.adjustStock({ requestId: rid(), sku: "WL-IMPLICIT-B", change: { case: "delta", value: 2n }, reason: "restock" });
    expect(adjusted.promotedEntries.map((e) => e.id)).to.deep.equal([first.waitlistEntries[0]!.id]);
    const hold = (await a.getReservation({ reservationId: adjusted.promotedEntries[0]!.reservationId })).reservation!;
    expect(hold.lines.map((l) => [l.sku, l.quantity])).to.deep.equal([["WL-IMPLICIT-B", 3]]);
    await assertInvariants(knex, ["WL-IMPLICIT-A", "WL-IMPLICIT-B"]);
  });

  it("max_wait: the worker expires a lapsed WAITING head with no other traffic, and promotes the smaller entry it blocked", async () => {
    const SKU = "WL-MAX-WAIT";
    await a.createSku({ requestId: rid(), sku: SKU, name: SKU, initialOnHand: 1n, policy: { waitlistPromotionPolicy: WaitlistPromotionPolicy.STRICT_FIFO } });
    // The head wants 2 of the 1 unit and waits at most 2 s; the entry behind it wants 1
    // and would fit, but STRICT_FIFO keeps it behind the head.
    const head = (await a.joinWaitlist({ requestId: rid(), customerId: "head", sku: SKU, quantity: 2, maxWait: { seconds: 2n } })).entry!;
    const next = (await b.joinWaitlist({ requestId: rid(), customerId: "next", sku: SKU, quantity: 1 })).entry!;
    expect([head, next].map((e) => [e.status, e.position])).to.deep.equal([
      [WaitlistEntryStatus.WAITING, 1n],
      [WaitlistEntryStatus.WAITING, 2n],
    ]);

    // No RPC from here on: only the worker's sweep can expire the head.
    type EntryRow = { id: string; status: string; reservation_id: string | null; closed_at: Date | null };
    const rows = async (sku = SKU) =>
      new Map(
        (await query<EntryRow>(knex, `SELECT id, status, reservation_id, closed_at FROM waitlist_entries WHERE sku_code = ?`, [sku])).map((e) => [e.id, e]),
      );
    await until("the worker to expire the head and promote the next entry", async () => (await rows()).get(next.id)!.status === "PROMOTED", 20_000, 50);

    const after = await rows();
    expect(after.get(head.id)).to.include({ status: "EXPIRED", reservation_id: null });
    expect(after.get(head.id)!.closed_at).to.not.equal(null);
    const holdId = after.get(next.id)!.reservation_id!;
    const [hold] = await query<{ type: string; status: string; customer_id: string; caller: string; request_id: string | null; waitlist_entry_id: string }>(
      knex,
      `SELECT type, status, customer_id, caller, request_id, waitlist_entry_id FROM reservations WHERE id = ?`,
      [holdId],
    );
    expect(hold).to.deep.equal({ type: "HOLD", status: "HELD", customer_id: "next", caller: "system:waitlist", request_id: null, waitlist_entry_id: next.id });
    const [inv] = await query<{ on_hand: number; reserved: number; available: number; waitlist_count: number; waitlist_units: number }>(
      knex,
      `SELECT on_hand, reserved, available, waitlist_count, waitlist_units FROM inventory WHERE sku_code = ?`,
      [SKU],
    );
    expect(inv).to.deep.equal({ on_hand: 1, reserved: 1, available: 0, waitlist_count: 0, waitlist_units: 0 });
    // The expiry of the head writes no ledger event (waitlist counters are not in the
    // ledger); the promotion is the worker's: no request_id.
    const events = await query<{ operation: string; actor: string; request_id: string | null; reservation_id: string | null; delta_reserved: number }>(
      knex,
      `SELECT operation, actor, request_id, reservation_id, delta_reserved FROM audit_events WHERE sku_code = ? ORDER BY id`,
      [SKU],
    );
    expect(events.map((e) => e.operation)).to.deep.equal(["SKU_CREATED", "WAITLIST_PROMOTED"]);
    expect(events[1]).to.deep.equal({ operation: "WAITLIST_PROMOTED", actor: "system:waitlist", request_id: null, reservation_id: holdId, delta_reserved: 1 });

    // Counted by the worker: the sweep's waitlist_promotions and the expired-entries metric.
    expect((await ops.getWorkerStatus({})).status?.lastSweep?.waitlistPromotions).to.equal(1n);
    const metric = async (name: string) => new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(await (await fetch(`${worker.httpUrl}/metrics`)).text())?.[1];
    expect(await metric("holdfast_waitlist_entries_expired_total")).to.equal("1");

    expect((await entry(a, head.id)).status).to.equal(WaitlistEntryStatus.EXPIRED);
    expect((await entry(b, next.id))).to.include({ status: WaitlistEntryStatus.PROMOTED, reservationId: holdId });
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(a, [SKU]);

    // An entry behind a head that still blocks expires too (nothing is promoted).
    const BEHIND = "WL-MAX-WAIT-BEHIND";
    await a.createSku({ requestId: rid(), sku: BEHIND, name: BEHIND, initialOnHand: 1n });
    const blocker = (await a.joinWaitlist({ requestId: rid(), customerId: "blocker", sku: BEHIND, quantity: 2 })).entry!;
    const behind = (await b.joinWaitlist({ requestId: rid(), customerId: "behind", sku: BEHIND, quantity: 1, maxWait: { seconds: 1n } })).entry!;
    await until("the worker to expire the entry behind the head", async () => (await rows(BEHIND)).get(behind.id)!.status === "EXPIRED", 20_000, 50);
    expect((await rows(BEHIND)).get(blocker.id)).to.include({ status: "WAITING", reservation_id: null });
    const [counters] = await query<{ available: number; waitlist_count: number; waitlist_units: number }>(
      knex,
      `SELECT available, waitlist_count, waitlist_units FROM inventory WHERE sku_code = ?`,
      [BEHIND],
    );
    expect(counters).to.deep.equal({ available: 1, waitlist_count: 1, waitlist_units: 2 });
    expect(await metric("holdfast_waitlist_entries_expired_total")).to.equal("2");
    await assertInvariants(knex, [BEHIND]);
  });

  it("assertInvariants catches broken waitlist states: counters, a missed promotion, an entry out of step with its hold", async () => {
    // Each corruption is undone right after, so the SKUs pass again (and later checks of all SKUs).
    const expectBroken = async (sku: string, corrupt: string, restore: string, expected: string) => {
      await query(knex, corrupt, [sku]);
      try {
        const err = await assertInvariants(knex, [sku]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, `assertInvariants after "${corrupt}"`).to.be.instanceOf(AssertionError);
        expect((err as Error).message).to.include(expected);
      } finally {
        await query(knex, restore, [sku]);
      }
      await assertInvariants(knex, [sku]);
    };

    await a.createSku({ requestId: rid(), sku: "WL-BROKEN", name: "broken", initialOnHand: 0n });
    await a.joinWaitlist({ requestId: rid(), customerId: "w", sku: "WL-BROKEN", quantity: 2 });
    await assertInvariants(knex, ["WL-BROKEN"]);
    await expectBroken(
      "WL-BROKEN",
      `UPDATE inventory SET waitlist_count = waitlist_count + 1 WHERE sku_code = ?`,
      `UPDATE inventory SET waitlist_count = waitlist_count - 1 WHERE sku_code = ?`,
      "WL-BROKEN: waitlist_count 2 != WAITING entries 1",
    );
    await expectBroken(
      "WL-BROKEN",
      `UPDATE inventory SET waitlist_units = waitlist_units + 1 WHERE sku_code = ?`,
      `UPDATE inventory SET waitlist_units = waitlist_units - 1 WHERE sku_code = ?`,
      "WL-BROKEN: waitlist_units 3 != Σ WAITING quantities 2",
    );
    // Units that appear without a promotion (no ledger event either): the head fits.
    await expectBroken(
      "WL-BROKEN",
      `UPDATE inventory SET on_hand = on_hand + 2 WHERE sku_code = ?`,
      `UPDATE inventory SET on_hand = on_hand - 2 WHERE sku_code = ?`,
      "WL-BROKEN: missed promotion (STRICT_FIFO): the head WAITING entry for 2 fits available 2",
    );

    // FIRST_FIT: one unit fits the second entry, although not the head.
    await a.createSku({ requestId: rid(), sku: "WL-BROKEN-FF", name: "broken", initialOnHand: 0n, policy: { waitlistPromotionPolicy: WaitlistPromotionPolicy.FIRST_FIT } });
    await a.joinWaitlist({ requestId: rid(), customerId: "big", sku: "WL-BROKEN-FF", quantity: 3 });
    await a.joinWaitlist({ requestId: rid(), customerId: "small", sku: "WL-BROKEN-FF", quantity: 1 });
    await expectBroken(
      "WL-BROKEN-FF",
      `UPDATE inventory SET on_hand = on_hand + 1 WHERE sku_code = ?`,
      `UPDATE inventory SET on_hand = on_hand - 1 WHERE sku_code = ?`,
      "WL-BROKEN-FF: missed promotion (FIRST_FIT): a WAITING entry for 1 fits available 1",
    );

    // A promoted entry closed while its hold still holds the units.
    await a.createSku({ requestId: rid(), sku: "WL-BROKEN-HOLD", name: "broken", initialOnHand: 0n });
    await a.joinWaitlist({ requestId: rid(), customerId: "w", sku: "WL-BROKEN-HOLD", quantity: 1 });
    await a.adjustStock({ requestId: rid(), sku: "WL-BROKEN-HOLD", change: { case: "delta", value: 1n }, reason: "restock" });
    await expectBroken(
      "WL-BROKEN-HOLD",
      `UPDATE waitlist_entries SET status = 'CANCELLED', closed_at = now() WHERE sku_code = ? AND status = 'PROMOTED'`,
      `UPDATE waitlist_entries SET status = 'PROMOTED', closed_at = NULL WHERE sku_code = ? AND status = 'CANCELLED'`,
      "is CANCELLED but its reservation is",
    );
  });

  it("many concurrent returns and joins: promotions in strict arrival order, no unit given twice, invariants hold", async () => {
    const SKUS = ["WL-RACE-0", "WL-RACE-1", "WL-RACE-2"];
    const UNITS = 30;
    const WAITERS = 60;
    const clients = [a, b];
    const holds: { id: string; sku: string }[] = [];
    for (const sku of SKUS) {
      await a.createSku({ requestId: rid(), sku, name: sku, initialOnHand: BigInt(UNITS) });
      for (const i of range(UNITS)) {
        holds.push({ sku, id: (await clients[i % 2]!.createHold({ requestId: rid(), customerId: `holder-${i}`, lines: [{ sku, quantity: 1 }], ttl: { seconds: 600n } })).reservation!.id });
      }
    }
    // Every waiter watches its entries (half through each replica) while it all happens.
    const watchers = await Promise.all(range(WAITERS).map(async (i) => ({ customer: `w-${i}`, ...(await watch(clients[i % 2]!, `w-${i}`)) })));
    // Joins and releases interleaved, on both replicas.
    const joins = SKUS.flatMap((sku) => range(WAITERS).map((i) => () => clients[i % 2]!.joinWaitlist({ requestId: rid(), customerId: `w-${i}`, sku, quantity: 1 })));
    const releases = holds.map((h, i) => () => clients[(i + 1) % 2]!.releaseHold({ requestId: rid(), reservationId: h.id }));
    const work = [...joins, ...releases].sort(() => Math.random() - 0.5);
    const IN_FLIGHT = 24;
    let next = 0;
    await Promise.all(
      range(IN_FLIGHT).map(async () => {
        while (next < work.length) await work[next++]!();
      }),
    );

    for (const sku of SKUS) {
      const entries = await query<{ id: string; seq: number; status: string; reservation_id: string | null }>(
        knex,
        `SELECT id, seq, status, reservation_id FROM waitlist_entries WHERE sku_code = ? ORDER BY seq`,
        [sku],
      );
      expect(entries).to.have.length(WAITERS);
      const promoted = entries.filter((e) => e.status === "PROMOTED");
      // Every returned unit went to the queue (a join finding a free unit takes it at once).
      expect(promoted).to.have.length(UNITS);
      // The promoted entries are exactly the first UNITS arrivals...
      expect(entries.slice(0, UNITS).every((e) => e.status === "PROMOTED")).to.equal(true);
      // ...and were promoted in arrival order (the ledger of a SKU is in commit order).
      const order = await query<{ seq: number }>(
        knex,
        `SELECT w.seq FROM audit_events a JOIN reservations r ON r.id = a.reservation_id JOIN waitlist_entries w ON w.id = r.waitlist_entry_id
          WHERE a.sku_code = ? AND a.operation = 'WAITLIST_PROMOTED' ORDER BY a.id`,
        [sku],
      );
      const seqs = order.map((o) => Number(o.seq));
      expect(seqs).to.deep.equal([...seqs].sort((x, y) => x - y));
      // No unit given twice: one hold per promoted entry, distinct, each of one unit.
      expect(new Set(promoted.map((e) => e.reservation_id)).size).to.equal(UNITS);
      const [inv] = await query<{ reserved: number; available: number; waitlist_count: number; waitlist_units: number }>(
        knex,
        `SELECT reserved, available, waitlist_count, waitlist_units FROM inventory WHERE sku_code = ?`,
        [sku],
      );
      expect(inv).to.deep.include({ reserved: UNITS, available: 0, waitlist_count: WAITERS - UNITS, waitlist_units: WAITERS - UNITS });
    }
    await assertInvariants(knex, SKUS);
    await checkConsistencyClean(a, SKUS);

    // Each stream told its customer exactly what happened to its entries: one JOINED per
    // entry, places that only went down, and PROMOTED (with its hold) for exactly the
    // promoted ones.
    const final = await query<{ id: string; customer_id: string; status: string; reservation_id: string | null }>(
      knex,
      `SELECT id, customer_id, status, reservation_id FROM waitlist_entries WHERE sku_code = ANY(?::text[])`,
      [SKUS],
    );
    for (const w of watchers) {
      const mine = final.filter((e) => e.customer_id === w.customer);
      const promotedIds = mine.filter((e) => e.status === "PROMOTED").map((e) => e.id).sort();
      const toldOf = (type: WaitlistNotificationType) =>
        new Set(w.stream.messages.flatMap((m) => (m.event.case === "notification" && m.event.value.type === type ? [m.event.value.entry!.id] : [])));
      await until(`${w.customer}'s stream told every join and promotion`, async () => {
        const joined = toldOf(WaitlistNotificationType.JOINED);
        const promoted = toldOf(WaitlistNotificationType.PROMOTED);
        return mine.every((e) => joined.has(e.id)) && promotedIds.every((id) => promoted.has(id));
      }, 5_000, 50);
      const notes = w.stream.messages.flatMap((m) => (m.event.case === "notification" ? [m.event.value] : []));
      expect(notes.filter((n) => n.type === WaitlistNotificationType.JOINED).map((n) => n.entry!.id).sort()).to.deep.equal(mine.map((e) => e.id).sort());
      const promotions = notes.filter((n) => n.type === WaitlistNotificationType.PROMOTED);
      expect(promotions.map((n) => n.entry!.id).sort()).to.deep.equal(promotedIds);
      for (const n of promotions) expect(n.reservation?.id).to.equal(mine.find((e) => e.id === n.entry!.id)!.reservation_id);
      for (const e of mine) {
        const places = notes.filter((n) => n.entry!.id === e.id && n.entry!.status === WaitlistEntryStatus.WAITING).map((n) => Number(n.entry!.position));
        expect(places, `places told for ${e.id}`).to.deep.equal([...places].sort((x, y) => y - x));
      }
    }
  });
});
