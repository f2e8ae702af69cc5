// Expiry under concurrency, across processes sharing one database: two worker
// replicas sweeping thousands of holds with staggered expiries while clients
// confirm and release some of them around their expiry, and a worker killed
// (SIGKILL) in the middle of a sweep. Afterwards every hold has exactly one final
// state, its units left `reserved` exactly once, and the books balance. Last, two
// replicas sweep the same lapsed waitlist entries at once: each is expired once.
import { expect } from "chai";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ExpiryWorkerService, InventoryReservationService, ReservationStatus } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { outcome, prng, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { seedHolds } from "../support/seed.js";
import { until } from "../support/wait.js";
import { testCaller } from "../support/auth.js";

// Row-lock waits are not what these tests are about: on a starved machine a sweep
// batch can hold a SKU's row past the default 2 s lock_timeout, and a hold or a
// sweep then fails LOCK_TIMEOUT. A generous bound keeps the tests about expiry.
const LOCK_TIMEOUT_MS = "20000";
const WORKER_ENV = { RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0", LOCK_TIMEOUT_MS };

/** Holds that left HELD more or less than once: (reservation, SKU) pairs whose count of closing events is not 1. */
async function linesNotClosedExactlyOnce(knex: Knex, ids: readonly string[]): Promise<{ reservation_id: string; sku_code: string; closings: number }[]> {
  return query(
    knex,
    `SELECT i.reservation_id, i.sku_code, count(a.id)::int AS closings
       FROM reservation_items i
       LEFT JOIN audit_events a ON a.reservation_id = i.reservation_id AND a.sku_code = i.sku_code
                               AND a.operation IN ('HOLD_CONFIRMED', 'HOLD_RELEASED', 'HOLD_EXPIRED')
      WHERE i.reservation_id = ANY(?::uuid[])
      GROUP BY i.reservation_id, i.sku_code
     HAVING count(a.id) <> 1`,
    [ids],
  );
}

describe("concurrency: expiry with two worker replicas", function () {
  this.timeout(120_000);

  let db: TestDatabase;
  let knex: Knex;
  let service: ServiceProcess;
  const workers: ServiceProcess[] = [];
  let inventory: GrpcJsClient<typeof InventoryReservationService>;

  before(async () => {
    db = await createTestDatabase("concurrency_expiry");
    knex = createKnex({ url: db.url, poolMax: 4 });
    service = await startService("reservation-service", db.url, { HOLD_TTL_MIN_MS: "100", LOCK_TIMEOUT_MS });
    inventory = createGrpcJsClient(InventoryReservationService, service.grpcAddress, undefined, testCaller);
  });

  after(async () => {
    inventory?.close();
    await Promise.all([service?.stop(), ...workers.map((w) => w.stop())]);
    await knex?.destroy();
    await db?.drop();
  });

  it("3,000 holds with staggered expiries, confirmed and released around their expiry: one final state each, units returned once", async () => {
    const started = await Promise.all(["replica-a", "replica-b"].map((id) => startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: id })));
    workers.push(...started);
    const skus = range(10).map((i) => `RACE-${i}`);
    for (const sku of skus) await inventory.createSku({ requestId: `create-${sku}`, sku, name: sku, initialOnHand: 10_000n });

    const random = prng(20261121);
    const HOLDS = 3_000;
    const IN_FLIGHT = 50;
    type Plan = { action: "confirm" | "release" | "none"; offsetMs: number };
    const plans: Plan[] = range(HOLDS).map(() => {
      const r = random();
      return { action: r < 1 / 3 ? "confirm" : r < 2 / 3 ? "release" : "none", offsetMs: Math.round((random() - 0.7) * 1_000) };
    });
    const holds: { id: string; expireAt: number; lines: number }[] = [];
    /** What each client was told: the final state it believes the hold reached. */
    const told = new Map<string, ReservationStatus>();
    const actions: Promise<void>[] = [];

    const act = (hold: { id: string; expireAt: number }, plan: Plan) =>
      new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, hold.expireAt + plan.offsetMs - Date.now()))).then(async () => {
        if (plan.action === "confirm") {
          const result = await outcome(inventory.confirmHold({ requestId: `confirm-${hold.id}`, reservationId: hold.id }, { timeoutMs: 20_000 }));
          if (result.ok) told.set(hold.id, result.value.reservation!.status);
          else if (result.failure.key === "FailedPrecondition/HOLD_EXPIRED") told.set(hold.id, ReservationStatus.EXPIRED);
          else throw new Error(`confirm of ${hold.id}: ${result.failure.key} ${result.failure.message}`);
        } else {
          const { reservation } = await inventory.releaseHold({ requestId: `release-${hold.id}`, reservationId: hold.id }, { timeoutMs: 20_000 });
          told.set(hold.id, reservation!.status);
        }
      });

    // Create the holds IN_FLIGHT at a time; TTLs of 1 to 3 s, so early holds expire
    // (and are confirmed / released around their expiry) while later ones are made.
    let next = 0;
    await Promise.all(
      range(IN_FLIGHT).map(async () => {
        while (next < HOLDS) {
          const i = next++;
          const two = i % 7 === 0;
          const lines = two ? [{ sku: skus[i % 10]!, quantity: 1 }, { sku: skus[(i + 3) % 10]!, quantity: 2 }] : [{ sku: skus[i % 10]!, quantity: 1 }];
          const ttlMs = 1_000 + (i % 21) * 100;
          const { reservation } = await inventory.createHold(
            { requestId: `race-${i}`, customerId: `c-${i}`, lines, ttl: { seconds: BigInt(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1_000_000 } },
            { timeoutMs: 20_000 },
          );
          const hold = { id: reservation!.id, expireAt: timestampDate(reservation!.expireTime!).getTime(), lines: lines.length };
          holds.push(hold);
          if (plans[i]!.action !== "none") actions.push(act(hold, plans[i]!));
        }
      }),
    );
    await Promise.all(actions);
    const ids = holds.map((h) => h.id);
    await until(
      "every hold to reach a final state",
      async () => (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM reservations WHERE id = ANY(?::uuid[]) AND status = 'HELD'`, [ids]))[0]!.n === 0,
      30_000,
    );

    // Exactly one final state per hold, the one its client was told (if any).
    const finals = await query<{ id: string; status: string; line_statuses: string[] }>(
      knex,
      `SELECT r.id, r.status, array_agg(DISTINCT i.status) AS line_statuses
         FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
        WHERE r.id = ANY(?::uuid[]) GROUP BY r.id`,
      [ids],
    );
    expect(finals).to.have.length(HOLDS);
    const byStatus: Record<string, number> = {};
    for (const f of finals) {
      expect(f.line_statuses, `lines of ${f.id}`).to.deep.equal([f.status]);
      expect(["ALLOCATED", "RELEASED", "EXPIRED"]).to.include(f.status);
      const believed = told.get(f.id);
      if (believed !== undefined) expect(f.status, `what the client of ${f.id} was told`).to.equal(ReservationStatus[believed]);
      else expect(f.status, `untouched hold ${f.id}`).to.equal("EXPIRED");
      byStatus[f.status] = (byStatus[f.status] ?? 0) + 1;
    }
    // Units left `reserved` exactly once per line: one closing event each.
    expect(await linesNotClosedExactlyOnce(knex, ids)).to.deep.equal([]);

    const sweptBy = await query<{ actor: string; holds: number }>(
      knex,
      `SELECT actor, count(DISTINCT reservation_id)::int AS holds FROM audit_events
        WHERE operation = 'HOLD_EXPIRED' AND reservation_id = ANY(?::uuid[]) GROUP BY actor ORDER BY actor`,
      [ids],
    );
    console.log(`      [expiry] final states ${JSON.stringify(byStatus)}; expired by ${JSON.stringify(sweptBy)}`);
    // Both replicas took part (they wake for the same expiries and split them with SKIP LOCKED).
    expect(sweptBy.map((s) => s.actor)).to.include.members(["worker:replica-a", "worker:replica-b"]);
    const [{ allocated }] = (await query<{ allocated: number }>(
      knex,
      `SELECT coalesce(sum(quantity), 0)::int AS allocated FROM reservation_items WHERE status = 'ALLOCATED' AND sku_code = ANY(?::text[])`,
      [skus],
    )) as [{ allocated: number }];
    const counters = await query<{ reserved: number; allocated: number }>(knex, `SELECT sum(reserved)::int AS reserved, sum(allocated)::int AS allocated FROM inventory WHERE sku_code = ANY(?::text[])`, [skus]);
    expect(counters[0]).to.deep.equal({ reserved: 0, allocated });
    await assertInvariants(knex, skus);
    await checkConsistencyClean(inventory, skus);
  });

  it("a worker killed (SIGKILL) in the middle of a sweep leaves no half-applied batch; the next worker finishes the work", async () => {
    for (const w of workers.splice(0)) await w.stop();
    const skus = range(200).map((i) => `KILL-${String(i).padStart(3, "0")}`);
    for (const sku of skus) await inventory.createSku({ requestId: `create-${sku}`, sku, name: sku, initialOnHand: 1_000n });
    // 40,000 overdue holds over 200 SKUs, a tenth of them on two SKUs; batches of
    // 10,000 make each sweep transaction long enough to be caught in the middle.
    const holds = await seedHolds(knex, { prefix: "kill", skus, count: 40_000, expiresInMs: (i) => -60_000 + (i % 1000), multiSkuEvery: 10 });
    const ids = holds.map((h) => h.id);

    const victim = await startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: "victim", EXPIRY_BATCH_SIZE: "10000" });
    // The victim has committed a batch and is in the middle of the next one: a
    // transaction of it that has written (it has a transaction id) but not committed.
    await until(
      "the victim to be in the middle of its second sweep transaction",
      async () =>
        (
          await query(
            knex,
            `SELECT 1 FROM pg_stat_activity
              WHERE application_name = 'holdfast-expiry-worker:victim' AND backend_xid IS NOT NULL
                AND (SELECT count(*) FROM reservations WHERE status = 'EXPIRED') >= 10000`,
          )
        ).length > 0,
      30_000,
      2,
    );
    victim.child.kill("SIGKILL");
    await new Promise((resolve) => victim.child.once("exit", resolve));
    // Its backend notices the lost client and rolls back.
    await until(
      "the victim's database sessions to end",
      async () => (await query(knex, `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'holdfast-expiry-worker:victim%'`)).length === 0,
      20_000,
    );

    // Nothing half-applied: every hold is entirely HELD or entirely EXPIRED (header,
    // lines, one HOLD_EXPIRED event per line), and the counters agree with the lines.
    const [split] = (await query<{ expired: number; half: number }>(
      knex,
      `SELECT count(*) FILTER (WHERE r.status = 'EXPIRED')::int AS expired,
              count(*) FILTER (WHERE EXISTS (SELECT 1 FROM reservation_items i WHERE i.reservation_id = r.id AND i.status <> r.status))::int AS half
         FROM reservations r WHERE r.id = ANY(?::uuid[])`,
      [ids],
    )) as [{ expired: number; half: number }];
    console.log(`      [expiry] killed mid-sweep: ${split.expired} of ${ids.length} holds expired before the kill (whole batches only)`);
    expect(split.half).to.equal(0);
    expect(split.expired % 10_000, "only whole batches committed").to.equal(0);
    expect(split.expired).to.be.at.least(10_000).and.below(ids.length);
    await assertInvariants(knex, skus);

    const successor = await startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: "successor" });
    workers.push(successor);
    await until(
      "the successor to expire the rest",
      async () => (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM reservations WHERE id = ANY(?::uuid[]) AND status = 'HELD'`, [ids]))[0]!.n === 0,
      60_000,
      100,
    );
    expect(await linesNotClosedExactlyOnce(knex, ids)).to.deep.equal([]);
    await assertInvariants(knex, skus);
    const ops = createGrpcJsClient(ExpiryWorkerService, successor.grpcAddress, undefined, testCaller);
    try {
      const status = (await ops.getWorkerStatus({})).status!;
      expect(Number(status.holdsExpiredTotal)).to.equal(ids.length - split.expired);
      expect(status.overdueHolds).to.equal(0n);
    } finally {
      ops.close();
    }
  });

  it("two replicas sweeping WAITING entries past their max_wait at once: each entry expired once, the blocked entries promoted, no deadlock", async () => {
    for (const w of workers.splice(0)) await w.stop();
    // Ten minutes between looks: after their first (empty) sweep, the replicas only sweep when asked.
    const started = await Promise.all(
      ["lapse-a", "lapse-b"].map((id) => startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: id, EXPIRY_MAX_SLEEP_MS: "600000" })),
    );
    workers.push(...started);
    const skus = range(150).map((i) => `WL-LAPSE-${String(i).padStart(3, "0")}`);
    for (const sku of skus) await inventory.createSku({ requestId: `create-${sku}`, sku, name: sku, initialOnHand: 5n });
    // Per SKU (STRICT_FIFO, 5 units), 30 entries in seq order: the head wants 100, then
    // every third entry wants 1; all of these are past their max_wait. The other 20 want
    // 1 and wait for ever: the head blocked them. Written straight into the database
    // (max_wait cannot be in the past through the API); the waitlist counters are not
    // in the ledger. 150 SKUs: two waitlist batches per sweep.
    const [{ seeded }] = (await query<{ seeded: number }>(
      knex,
      `WITH e AS (
         INSERT INTO waitlist_entries (sku_code, customer_id, quantity, caller, request_id, created_at, updated_at, expires_at)
         SELECT s.code, 'c-' || g, CASE WHEN g = 0 THEN 100 ELSE 1 END, 'seed', 'seed-' || s.code || '-' || g,
                now() - interval '10 seconds', now() - interval '10 seconds',
                CASE WHEN g % 3 = 0 THEN now() - interval '5 seconds' + g * interval '10 milliseconds' END
           FROM unnest(?::text[]) AS s(code), generate_series(0, 29) AS g
          ORDER BY s.code, g
         RETURNING sku_code, quantity
       ), c AS (
         UPDATE inventory i SET waitlist_count = c.n, waitlist_units = c.u, version = version + 1
           FROM (SELECT sku_code, count(*) AS n, sum(quantity) AS u FROM e GROUP BY sku_code) c
          WHERE i.sku_code = c.sku_code
         RETURNING i.sku_code
       )
       SELECT (SELECT count(*) FROM e)::int AS seeded`,
      [skus],
    )) as [{ seeded: number }];
    expect(seeded).to.equal(150 * 30);

    // Both replicas sweep the same SKUs at the same moment.
    const clients = started.map((w) => createGrpcJsClient(ExpiryWorkerService, w.grpcAddress, undefined, testCaller));
    let sweeps: { waitlistPromotions: bigint }[];
    try {
      sweeps = (await Promise.all(clients.map((c, i) => c.runExpirySweep({ requestId: `lapse-sweep-${i}` })))).map((r) => r.sweep!);
    } finally {
      for (const c of clients) c.close();
    }

    const entries = await query<{ sku_code: string; status: string; reservation_id: string | null }>(
      knex,
      `SELECT sku_code, status, reservation_id FROM waitlist_entries WHERE sku_code = ANY(?::text[]) ORDER BY sku_code, seq`,
      [skus],
    );
    const expected = range(30).map((g) => (g % 3 === 0 ? "EXPIRED" : [1, 2, 4, 5, 7].includes(g) ? "PROMOTED" : "WAITING"));
    for (const sku of skus) expect(entries.filter((e) => e.sku_code === sku).map((e) => e.status), sku).to.deep.equal(expected);
    const promoted = entries.filter((e) => e.status === "PROMOTED");
    const events = await query<{ reservation_id: string; actor: string; request_id: string | null }>(
      knex,
      `SELECT reservation_id, actor, request_id FROM audit_events WHERE sku_code = ANY(?::text[]) AND operation = 'WAITLIST_PROMOTED' ORDER BY id`,
      [skus],
    );
    // One promotion event and one distinct hold per promoted entry: nothing promoted twice.
    expect(events.map((e) => e.reservation_id).sort()).to.deep.equal(promoted.map((e) => e.reservation_id!).sort());
    expect(new Set(events.map((e) => `${e.actor}/${e.request_id}`))).to.deep.equal(new Set(["system:waitlist/null"]));

    // Each entry and each promotion counted once over the two replicas, and no batch
    // rolled back (a deadlock or a lock timeout would be one).
    const metric = async (w: ServiceProcess, name: string) => {
      const text = await (await fetch(`${w.httpUrl}/metrics`)).text();
      return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1]);
    };
    const expiredBy = await Promise.all(started.map((w) => metric(w, "holdfast_waitlist_entries_expired_total")));
    const promotedBy = sweeps.map((sw) => Number(sw.waitlistPromotions));
    console.log(`      [expiry] lapsed waitlist entries expired per replica: ${expiredBy.join(" + ")}; promotions: ${promotedBy.join(" + ")}`);
    expect(expiredBy.reduce((x, y) => x + y, 0)).to.equal(150 * 10);
    expect(promotedBy.reduce((x, y) => x + y, 0)).to.equal(150 * 5);
    expect(await Promise.all(started.map((w) => metric(w, "holdfast_expiry_sweep_errors_total")))).to.deep.equal([0, 0]);
    await assertInvariants(knex, skus);
    await checkConsistencyClean(inventory, skus);
  });
});
