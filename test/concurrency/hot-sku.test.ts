// HOT_SKU_MODE_GROUP_COMMIT (services/reservation-service/src/core/group-commit.ts) on
// two reservation-service processes sharing one database: many holds of one SKU made
// by shared transactions, with every guarantee of a hold kept per hold (no oversell,
// idempotent, all or nothing, in the ledger), the mode switched by UpdateSku, the
// holds' lifecycle, the waitlist, and a failed batch answered by the normal path.
//
// That holds were really batched is read from the database: the ledger is append-only,
// so the xmin of a HOLD_CREATED event is the transaction that made the hold; several
// events with one xmin were made by one transaction. A mode that silently fell back
// to the normal path would give every hold a transaction of its own.
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { HotSkuMode, InventoryReservationService, LockingStrategy, ReservationStatus, type CreateHoldRequestSchema, type CreateHoldResponse } from "@holdfast/contracts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { outcome, range, type Outcome } from "../support/calls.js";
import { testCaller } from "../support/auth.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;
type HoldRequest = MessageInitShape<typeof CreateHoldRequestSchema> & { requestId: string };

/** Far above what a call needs, below the test timeout. */
const CALL = { timeoutMs: 30_000 };

describe("concurrency: a GROUP_COMMIT hot SKU on two reservation-service processes", function () {
  this.timeout(90_000);

  let db: TestDatabase;
  let knex: Knex;
  const processes: ServiceProcess[] = [];
  const clients: Client[] = [];
  const admin = () => clients[0]!;
  let n = 0;
  const rid = (label: string) => `${label}-${++n}`;

  before(async function () {
    this.timeout(60_000);
    db = await createTestDatabase("hot_sku");
    knex = createKnex({ url: db.url, poolMax: 4 });
    // Process 0 runs one batch of a SKU at a time (the failed-batch test counts on it),
    // process 1 the default two (HOT_SKU_BATCHES_IN_FLIGHT).
    const started = await Promise.allSettled([{ HOT_SKU_BATCHES_IN_FLIGHT: "1" }, {}].map((env) => startService("reservation-service", db.url, env)));
    for (const s of started) if (s.status === "fulfilled") processes.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    for (const p of processes) {
      const client = createGrpcJsClient(InventoryReservationService, p.grpcAddress, undefined, testCaller);
      await new Promise<void>((resolve, reject) => client.raw.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
      clients.push(client);
    }
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(processes.map((p) => p.stop()));
    await knex?.destroy();
    await db?.drop();
  });

  async function createHotSku(sku: string, units: number, policy: Record<string, unknown> = {}): Promise<void> {
    const { sku: created } = await admin().createSku({ requestId: rid("create"), sku, name: sku, initialOnHand: BigInt(units), policy: { hotSkuMode: HotSkuMode.GROUP_COMMIT, ...policy } });
    expect(created?.policy?.hotSkuMode).to.equal(HotSkuMode.GROUP_COMMIT);
  }

  /** One hold on each process, so that both have read the SKU's policy (the batcher learns it from reads). */
  async function teach(sku: string): Promise<void> {
    for (const client of clients) await client.createHold({ requestId: rid("teach"), customerId: "teacher", lines: [{ sku, quantity: 1 }] });
  }

  const hold = (client: Client, req: HoldRequest) => outcome(client.createHold({ customerId: `c-${req.requestId}`, ...req }, CALL));

  /** The last ledger event so far (holdsPerTransaction counts what comes after it). */
  async function lastEvent(): Promise<number> {
    const [{ id }] = await query<{ id: number | null }>(knex, `SELECT max(id)::int AS id FROM audit_events`);
    return id ?? 0;
  }

  /** The transactions that made the SKU's holds after event `since`: the number of HOLD_CREATED events of each, largest first. */
  async function holdsPerTransaction(sku: string, since: number): Promise<number[]> {
    const rows = await query<{ n: number }>(
      knex,
      `SELECT count(*)::int AS n FROM audit_events WHERE sku_code = ? AND operation = 'HOLD_CREATED' AND id > ? GROUP BY xmin::text ORDER BY 1 DESC`,
      [sku, since],
    );
    return rows.map((r) => r.n);
  }

  async function metric(p: ServiceProcess, name: string, label: string): Promise<number> {
    const text = await (await fetch(`${p.httpUrl}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(label));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
  }

  const reservationOf = (o: Outcome<CreateHoldResponse>) => (o.ok ? o.value.reservation : undefined);

  it("400 holds over 2 processes for 150 units, with replays, duplicates in flight and bad requests: exactly 150 granted, each once, each in the ledger, batched", async () => {
    const SKU = "HOT-GC";
    const UNITS = 150;
    await createHotSku(SKU, UNITS + 2, { maxHoldTtl: { seconds: 600n } });
    await teach(SKU); // 2 units: the SKU now has 150 left
    await admin().createSku({ requestId: rid("create"), sku: "COLD", name: "COLD", initialOnHand: 1_000n });
    const since = await lastEvent();

    const requests: HoldRequest[] = range(400).map((i) => ({ requestId: `burst-${i}`, lines: [{ sku: SKU, quantity: 1 }] }));
    // Normal-path holds mixed in: two SKUs (the hot one and another), and OPTIMISTIC ones.
    const mixed: HoldRequest[] = [
      ...range(10).map((i) => ({ requestId: `multi-${i}`, lines: [{ sku: SKU, quantity: 1 }, { sku: "COLD", quantity: 1 }] })),
      ...range(5).map((i) => ({ requestId: `optimistic-${i}`, lines: [{ sku: SKU, quantity: 1 }], lockingStrategy: LockingStrategy.OPTIMISTIC })),
    ];
    // Bad requests: a TTL above the SKU's maximum (refused, not recorded), and a
    // request id reused for a different request at the same time.
    const bad: HoldRequest[] = range(5).map((i) => ({ requestId: `bad-ttl-${i}`, lines: [{ sku: SKU, quantity: 1 }], ttl: { seconds: 3_000n } }));
    const reused: HoldRequest[] = range(5).map((i) => ({ requestId: `burst-${i * 7}`, customerId: "someone-else", lines: [{ sku: SKU, quantity: 2 }] }));

    // Every burst request is sent to one process, 100 of them a second time at once to
    // the other one (a client retrying on another replica while the first is in flight).
    const calls: { req: HoldRequest; client: Client }[] = [
      ...requests.map((req, i) => ({ req, client: clients[i % 2]! })),
      ...requests.slice(0, 100).map((req, i) => ({ req, client: clients[(i + 1) % 2]! })),
      ...[...mixed, ...bad, ...reused].map((req, i) => ({ req, client: clients[i % 2]! })),
    ];
    const results = await Promise.all(calls.map((c) => hold(c.client, c.req)));
    const byId = new Map<string, Outcome<CreateHoldResponse>[]>();
    results.forEach((r, i) => byId.set(calls[i]!.req.requestId, [...(byId.get(calls[i]!.req.requestId) ?? []), r]));

    // The bad ones: refused as the normal path refuses them.
    for (const r of results.slice(500 + mixed.length, 500 + mixed.length + bad.length)) {
      expect(r.ok ? "OK" : r.failure.key).to.equal("InvalidArgument/TTL_OUT_OF_RANGE");
    }
    // A reused id: one request ran, the other was told the id is taken (or, if it
    // came first, ran, and the burst request was told).
    const reusedIds = new Set(reused.map((r) => r.requestId));
    for (const id of reusedIds) {
      const keys = byId.get(id)!.map((r) => (r.ok ? "OK" : r.failure.key));
      expect(keys.filter((k) => k === "InvalidArgument/IDEMPOTENCY_KEY_REUSED").length, `${id}: ${keys.join(", ")}`).to.be.at.least(1);
    }

    // Every grant, once per request id (duplicates name one reservation, checked below).
    const granted = new Map<string, string>(); // request id -> reservation id
    let units = 0;
    for (const r of results) {
      const reservation = reservationOf(r);
      if (reservation === undefined || granted.has(reservation.requestId)) continue;
      granted.set(reservation.requestId, reservation.id);
      units += reservation.lines.reduce((s, l) => s + (l.sku === SKU ? l.quantity : 0), 0);
      expect(reservation.status).to.equal(ReservationStatus.HELD);
    }
    // Every other outcome is a grant or INSUFFICIENT_STOCK, and duplicates agree.
    for (const [id, outcomes] of byId) {
      if (id.startsWith("bad-") || reusedIds.has(id)) continue;
      const keys = outcomes.map((r) => (r.ok ? "OK" : r.failure.key));
      for (const key of keys) expect(["OK", "FailedPrecondition/INSUFFICIENT_STOCK"], `${id}: ${keys.join(", ")}`).to.include(key);
      expect(new Set(keys).size, `${id}: duplicates disagree: ${keys.join(", ")}`).to.equal(1);
      const ids = new Set(outcomes.map((o) => reservationOf(o)?.id));
      expect(ids.size, `${id}: duplicates name different reservations`).to.equal(1);
    }
    for (const r of results) {
      if (r.ok || r.failure.reason !== "INSUFFICIENT_STOCK") continue;
      expect(r.failure.metadata.sku).to.include(SKU);
    }
    expect(units, "units granted on the hot SKU").to.equal(UNITS);

    // The database agrees: every granted hold exists once, with one HOLD_CREATED
    // event of its own request id; nothing else holds the SKU.
    const held = await query<{ id: string; request_id: string; events: number; event_request_ids: string }>(
      knex,
      `SELECT r.id, r.request_id,
              (SELECT count(*)::int FROM audit_events e WHERE e.reservation_id = r.id AND e.operation = 'HOLD_CREATED' AND e.sku_code = ?) AS events,
              (SELECT string_agg(DISTINCT e.request_id, ',') FROM audit_events e WHERE e.reservation_id = r.id) AS event_request_ids
         FROM reservations r JOIN reservation_items l ON l.reservation_id = r.id
        WHERE l.sku_code = ? AND r.customer_id <> 'teacher'`,
      [SKU, SKU],
    );
    expect(new Map(held.map((h) => [h.request_id, h.id]))).to.deep.equal(granted);
    for (const h of held) expect([h.events, h.event_request_ids]).to.deep.equal([1, h.request_id]);
    const [counters] = await query<{ reserved: number; available: number }>(knex, `SELECT reserved, available FROM inventory WHERE sku_code = ?`, [SKU]);
    expect(counters).to.deep.equal({ reserved: UNITS + 2, available: 0 });

    // Batched: several holds per transaction, on both processes.
    const perTransaction = await holdsPerTransaction(SKU, since);
    console.log(`[hot-sku] ${held.length} holds of the burst made by ${perTransaction.length} transactions; largest: ${perTransaction.slice(0, 5).join(", ")}`);
    expect(perTransaction[0], "holds made by one transaction").to.be.greaterThan(1);
    for (const p of processes) expect(await metric(p, "holdfast_hot_sku_batches_total", 'outcome="committed"')).to.be.greaterThan(0);

    // Replays, afterwards: the same answers, marked replayed.
    const replays = await Promise.all(requests.slice(0, 200).map((req, i) => hold(clients[(i + 1) % 2]!, req)));
    replays.forEach((r, i) => {
      const id = requests[i]!.requestId;
      if (reusedIds.has(id)) return;
      const first = byId.get(id)![0]!;
      if (first.ok) {
        expect(r.ok && r.value.replayed && r.value.reservation?.id, id).to.equal(first.value.reservation!.id);
      } else {
        expect(r.ok ? "OK" : [r.failure.key, r.failure.metadata.replayed], id).to.deep.equal([first.failure.key, "true"]);
      }
    });

    await assertInvariants(knex, [SKU, "COLD"]);
    await checkConsistencyClean(admin(), [SKU, "COLD"]);
  });

  it("UpdateSku switches a SKU between OFF and GROUP_COMMIT: holds are batched only in GROUP_COMMIT", async () => {
    const SKU = "HOT-SWITCH";
    await createHotSku(SKU, 10_000);
    await teach(SKU);
    const burst = async (label: string) => {
      const since = await lastEvent();
      const results = await Promise.all(range(120).map((i) => hold(clients[i % 2]!, { requestId: rid(label), lines: [{ sku: SKU, quantity: 1 }] })));
      expect(results.filter((r) => !r.ok).map((r) => !r.ok && r.failure.key)).to.deep.equal([]);
      const perTransaction = await holdsPerTransaction(SKU, since);
      expect(perTransaction.reduce((a, b) => a + b, 0)).to.equal(120);
      return perTransaction.length === 120 ? "one transaction per hold" : "batched";
    };
    const setMode = async (client: Client, mode: HotSkuMode) => {
      const { sku } = await client.updateSku({ requestId: rid("mode"), sku: { code: SKU, policy: { hotSkuMode: mode } }, updateMask: { paths: ["policy.hot_sku_mode"] } });
      expect(sku?.policy?.hotSkuMode).to.equal(mode);
    };
    expect(await burst("gc-1")).to.equal("batched");
    // Switched on one process: the other follows from its next hold's read of the policy.
    await setMode(clients[0]!, HotSkuMode.OFF);
    await teach(SKU);
    expect(await burst("off")).to.equal("one transaction per hold");
    await setMode(clients[1]!, HotSkuMode.GROUP_COMMIT);
    await teach(SKU);
    expect(await burst("gc-2")).to.equal("batched");
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(admin(), [SKU]);
  });

  it("hot-SKU holds are confirmed, released and extended like any other; expired ones are reclaimed in line by a batch", async () => {
    const SKU = "HOT-LIFE";
    await createHotSku(SKU, 10);
    await teach(SKU); // 2 units held for an hour
    const first = await Promise.all(range(8).map((i) => hold(clients[i % 2]!, { requestId: rid("life"), lines: [{ sku: SKU, quantity: 1 }], ttl: { seconds: 1n } })));
    const holds = first.map((r) => reservationOf(r)!);
    expect(holds.every((h) => h !== undefined)).to.equal(true);
    const confirmed = await admin().confirmHold({ requestId: rid("confirm"), reservationId: holds[0]!.id });
    expect(confirmed.reservation?.status).to.equal(ReservationStatus.ALLOCATED);
    const released = await clients[1]!.releaseHold({ requestId: rid("release"), reservationId: holds[1]!.id });
    expect(released.reservation?.status).to.equal(ReservationStatus.RELEASED);
    const extended = await admin().extendHold({ requestId: rid("extend"), reservationId: holds[2]!.id, ttl: { seconds: 600n } });
    expect(extended.reservation?.status).to.equal(ReservationStatus.HELD);
    // Let the other five lapse (1 s TTL): 10 − 2 − 1 allocated − 1 extended leaves 1
    // available, and 5 expired holds still counted in reserved until reclaimed.
    await new Promise((r) => setTimeout(r, 1_300));
    const second = await Promise.all(range(7).map((i) => hold(clients[i % 2]!, { requestId: rid("after"), lines: [{ sku: SKU, quantity: 1 }] })));
    expect(second.filter((r) => r.ok)).to.have.length(6);
    expect(second.filter((r) => !r.ok).map((r) => !r.ok && r.failure.key)).to.deep.equal(["FailedPrecondition/INSUFFICIENT_STOCK"]);
    // No expiry-worker runs here: only a hold's in-line reclaim can have expired them.
    const expired = await query<{ request_id: string }>(knex, `SELECT request_id FROM audit_events WHERE sku_code = ? AND operation = 'HOLD_EXPIRED'`, [SKU]);
    expect(expired).to.have.length(5);
    for (const e of expired) expect(e.request_id).to.match(/^after-/);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(admin(), [SKU]);
  });

  it("the attempt rate limit holds for batched holds, even when set on another process after this one last read the SKU", async () => {
    const SKU = "HOT-RATE";
    await createHotSku(SKU, 1_000);
    await teach(SKU); // both processes know the SKU without a limit: their batched holds skip the admission
    const { sku } = await clients[1]!.updateSku({
      requestId: rid("limit"),
      sku: { code: SKU, policy: { customerAttemptRateLimit: { maxAttempts: 3, window: { seconds: 60n } } } },
      updateMask: { paths: ["policy.customer_attempt_rate_limit"] },
    });
    expect(sku?.policy?.customerAttemptRateLimit?.maxAttempts).to.equal(3);
    // Process 0 still believes the SKU unlimited: its batch finds the limit and sends
    // the holds back to be admitted first. Then both know it; a second customer's
    // holds are admitted before they are batched.
    for (const customerId of ["eager-1", "eager-2"]) {
      const results = await Promise.all(range(10).map(() => hold(clients[0]!, { requestId: rid("rate"), customerId, lines: [{ sku: SKU, quantity: 1 }] })));
      const keys = results.map((r) => (r.ok ? "OK" : r.failure.key));
      expect(keys.filter((k) => k === "OK"), `${customerId}: ${keys.join(", ")}`).to.have.length(3);
      expect(keys.filter((k) => k === "ResourceExhausted/RATE_LIMITED")).to.have.length(7);
    }
    await assertInvariants(knex, [SKU]);
  });

  it("join_waitlist_if_short: the short members of a batch join the waitlist (on the normal path)", async () => {
    const SKU = "HOT-WAIT";
    await createHotSku(SKU, 5);
    await teach(SKU); // 3 left
    const results = await Promise.all(range(6).map((i) => hold(clients[i % 2]!, { requestId: rid("wl"), lines: [{ sku: SKU, quantity: 1 }], joinWaitlistIfShort: true })));
    expect(results.filter((r) => !r.ok).map((r) => !r.ok && r.failure.key)).to.deep.equal([]);
    expect(results.filter((r) => r.ok && r.value.reservation !== undefined)).to.have.length(3);
    expect(results.filter((r) => r.ok && r.value.waitlistEntries.length === 1)).to.have.length(3);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(admin(), [SKU]);
  });

  it("two batches of one SKU are in flight at once on a process: the second does its claim and inserts while the first waits for the row", async () => {
    const SKU = "HOT-TWO";
    await createHotSku(SKU, 100);
    await teach(SKU);
    const client = clients[1]!;
    const since = await lastEvent();
    const failedBefore = await metric(processes[1]!, "holdfast_hot_sku_batches_total", 'outcome="failed"');
    /** The service's statements waiting for a row lock (ours, the row's holder, does not wait). */
    const waiting = async () => {
      const [{ n }] = await query<{ n: number }>(
        knex,
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
      );
      return n;
    };
    const rowHolder = await knex.transaction();
    let holds: Promise<Outcome<CreateHoldResponse>>[] = [];
    try {
      await rowHolder.raw(`SELECT 1 FROM inventory WHERE sku_code = ? FOR UPDATE`, [SKU]);
      holds.push(hold(client, { requestId: rid("two-a"), lines: [{ sku: SKU, quantity: 1 }] }));
      await until("the first batch waits for the row", async () => (await waiting()) === 1);
      holds.push(hold(client, { requestId: rid("two-b"), lines: [{ sku: SKU, quantity: 1 }] }));
      // Well within lock_timeout (2 s), after which the first batch would fail and its
      // hold wait again on the normal path.
      await until("a second batch waits for the row too", async () => (await waiting()) === 2, 1_000);
      // A third waits in the process for a batch of its own: no third transaction.
      holds.push(hold(client, { requestId: rid("two-c"), lines: [{ sku: SKU, quantity: 1 }] }));
      await new Promise((r) => setTimeout(r, 200));
      expect(await waiting()).to.equal(2);
    } finally {
      await rowHolder.rollback();
    }
    const answers = await Promise.all(holds);
    expect(answers.map((r) => (r.ok ? "OK" : r.failure.key))).to.deep.equal(["OK", "OK", "OK"]);
    expect(await holdsPerTransaction(SKU, since)).to.deep.equal([1, 1, 1]);
    expect(await metric(processes[1]!, "holdfast_hot_sku_batches_total", 'outcome="failed"')).to.equal(failedBefore);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(admin(), [SKU]);
  });

  it("a batch that fails answers nobody from it: its holds take the normal path one by one", async () => {
    const SKU = "HOT-FAIL";
    await createHotSku(SKU, 100);
    await teach(SKU);
    const p = processes[0]!;
    const client = clients[0]!;
    const failedBefore = await metric(p, "holdfast_hot_sku_batches_total", 'outcome="failed"');
    const [{ caller }] = await query<{ caller: string }>(knex, `SELECT caller FROM reservations WHERE customer_id = 'teacher' LIMIT 1`);
    // Two transactions of ours: one holds the SKU's row for a moment, so that a first
    // batch waits and the next holds queue behind it; the other has a request id "in
    // flight", never committed: the second batch, which includes it, waits for it on
    // its claim until lock_timeout (2 s) and fails.
    const rowHolder = await knex.transaction();
    const idHolder = await knex.transaction();
    try {
      await idHolder.raw(`INSERT INTO idempotency_records (caller, request_id, method, request_hash) VALUES (?, 'stuck', 'x', 'x')`, [caller]);
      await rowHolder.raw(`SELECT 1 FROM inventory WHERE sku_code = ? FOR UPDATE`, [SKU]);
      const first = hold(client, { requestId: rid("fail-first"), lines: [{ sku: SKU, quantity: 1 }] });
      await new Promise((r) => setTimeout(r, 300));
      const stuck = hold(client, { requestId: "stuck", lines: [{ sku: SKU, quantity: 1 }] });
      const others = range(10).map(() => hold(client, { requestId: rid("fail"), lines: [{ sku: SKU, quantity: 1 }] }));
      await new Promise((r) => setTimeout(r, 300));
      await rowHolder.commit();
      const firstOutcome = await first;
      expect(firstOutcome.ok ? "OK" : firstOutcome.failure.key).to.equal("OK");
      // The failed batch's holds, each on the normal path: the others are granted, the
      // stuck one waits for its id again and is told it is in progress.
      const answers = await Promise.all(others);
      expect(answers.map((r) => (r.ok ? "OK" : r.failure.key))).to.deep.equal(range(10).map(() => "OK"));
      const stuckOutcome = await stuck;
      expect(stuckOutcome.ok ? "OK" : stuckOutcome.failure.key).to.equal("Aborted/REQUEST_IN_PROGRESS");
      // Each made by a transaction of its own (the normal path), after the failure.
      const ids = answers.map((r) => reservationOf(r)!.id);
      const [{ transactions }] = await query<{ transactions: number }>(
        knex,
        `SELECT count(DISTINCT xmin::text)::int AS transactions FROM audit_events WHERE operation = 'HOLD_CREATED' AND reservation_id = ANY(?::uuid[])`,
        [ids],
      );
      expect(transactions).to.equal(10);
    } finally {
      if (!rowHolder.isCompleted()) await rowHolder.rollback();
      await idHolder.rollback();
    }
    expect(await metric(p, "holdfast_hot_sku_batches_total", 'outcome="failed"')).to.equal(failedBefore + 1);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(admin(), [SKU]);
  });
});
