// Fault tolerance (issue 9): the database goes away during a burst of holds, in two
// ways: PostgreSQL kills every connection of both services (pg_terminate_backend,
// three times), and PostgreSQL itself is stopped for two seconds and started again.
// Meanwhile the service answers UNAVAILABLE (never INTERNAL or UNKNOWN) and stays up;
// it serves again within seconds, by itself; clients that retry with the same
// request_id end up with exactly one hold each; the availability stream either keeps
// delivering or ends cleanly with UNAVAILABLE; stock and the ledger are exact.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { InventoryReservationService, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { startEmbeddedPostgres, ensureDatabase, type RunningPostgres } from "@holdfast/dev-stack";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, migrateLatest, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failureOf, range } from "../support/calls.js";
import { createTestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { freePort } from "../support/ports.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { StreamRecorder } from "../support/streams.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

const SKU = "FAULT-DB-1";
const CLIENTS = 16;
/** How long the services may take to serve again once the database is back. */
const RECOVERY_MS = 5_000;

/** Every session of the services (application_name "holdfast-..."), killed by the database. */
const KILL_SERVICE_SESSIONS = `
SELECT count(*)::int AS killed
  FROM (SELECT pg_terminate_backend(pid)
          FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'holdfast-%') t`;

/** Both services on `url`, a client, and a SKU with plenty of stock. */
interface Stack {
  svc: ServiceProcess;
  worker: ServiceProcess;
  client: Client;
  close(): Promise<void>;
}

async function startStack(url: string): Promise<Stack> {
  const [svc, worker] = await Promise.all([startService("reservation-service", url), startService("expiry-worker", url)]);
  const client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
  await client.createSku({ requestId: "faults-db-sku", sku: SKU, name: "fault injection", initialOnHand: 100_000n });
  return {
    svc,
    worker,
    client,
    async close() {
      client.close();
      await Promise.all([svc.stop(), worker.stop()]);
    },
  };
}

/**
 * CLIENTS clients making 1-unit holds one after another; a request that fails with
 * UNAVAILABLE is retried with the SAME request_id until it succeeds (a replay if it had
 * committed); any other failure ends the burst with that error.
 */
function retryingBurst(client: Client) {
  /** Every answer by status/reason, and the hold each request was told about. */
  const answers = new Map<string, number>();
  const told = new Map<string, string>();
  const count = (key: string) => answers.set(key, (answers.get(key) ?? 0) + 1);
  let stop = false;
  /** When the latest successful request was SENT (one in flight during a fault may have committed before it). */
  let lastOkSentAt = 0;
  let sequence = 0;
  const load = range(CLIENTS).map(async (c) => {
    while (!stop) {
      const requestId = `faults-db-${c}-${++sequence}`;
      for (;;) {
        const sentAt = Date.now();
        try {
          const res = await client.createHold({ requestId, customerId: `buyer-${c}`, lines: [{ sku: SKU, quantity: 1 }] });
          count(res.replayed ? "OK (replayed)" : "OK");
          told.set(requestId, res.reservation!.id);
          lastOkSentAt = Math.max(lastOkSentAt, sentAt);
          break;
        } catch (err) {
          const f = failureOf(err);
          count(`${Code[f.code]}/${f.reason}`);
          if (f.code !== Code.Unavailable) throw err;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    }
  });
  return {
    answers,
    told,
    lastOkSentAt: () => lastOkSentAt,
    /** Waits until a hold requested after `t` has succeeded; returns how long after `t`. */
    async servedAgainAfter(t: number): Promise<number> {
      await until("a hold requested after the fault", async () => lastOkSentAt > t, RECOVERY_MS, 5);
      return Date.now() - t;
    },
    async stop(): Promise<void> {
      stop = true;
      await Promise.all(load);
    },
  };
}

/** What must hold after any of these faults. */
async function checkAfterwards(stack: Stack, knex: Knex, burst: ReturnType<typeof retryingBurst>, stream: StreamRecorder<WatchAvailabilityResponse>, allowed: RegExp): Promise<void> {
  for (const key of burst.answers.keys()) expect(key, "every answer").to.match(allowed);
  expect(stack.svc.child.exitCode, "reservation-service still running").to.equal(null);
  expect(stack.worker.child.exitCode, "expiry-worker still running").to.equal(null);

  // Exactly the holds the clients were told about, each once.
  const holds = await query<{ id: string; request_id: string }>(
    knex,
    `SELECT r.id, r.request_id FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id WHERE i.sku_code = ?`,
    [SKU],
  );
  expect(new Map(holds.map((h) => [h.request_id, h.id]))).to.deep.equal(burst.told);
  expect(holds).to.have.length(burst.told.size);
  const [inventory] = await query<{ reserved: number }>(knex, `SELECT reserved FROM inventory WHERE sku_code = ?`, [SKU]);
  expect(inventory!.reserved).to.equal(burst.told.size);

  // The availability stream kept delivering (its feed reconnected) or ended cleanly with UNAVAILABLE.
  const from = stream.messages.length;
  await stack.client.releaseHold({ requestId: "faults-db-release", reservationId: holds[0]!.id });
  if (stream.ended) {
    expect(failureOf(stream.error).code, "how the stream ended").to.equal(Code.Unavailable);
  } else {
    const released = BigInt(burst.told.size - 1);
    await stream.next("the release after the fault", (m) => m.event.case === "update" && m.event.value.availabilities.some((a) => a.reserved === released), 5_000, from);
  }
  stream.close();

  await assertInvariants(knex, [SKU]);
  await checkConsistencyClean(stack.client, [SKU]);
}

/** Opens a WatchAvailability stream on SKU and waits for its initial state. */
async function watch(client: Client): Promise<StreamRecorder<WatchAvailabilityResponse>> {
  const stream = new StreamRecorder<WatchAvailabilityResponse>((signal) => client.watchAvailability({ skus: [SKU] }, { signal }));
  await stream.next("the initial state", (m) => m.event.case === "initialState");
  return stream;
}

/** On failure, what the services logged at warn and above is the first thing to read. */
function printWarnings(stack: Stack | undefined): void {
  for (const line of [...(stack?.svc.output ?? []), ...(stack?.worker.output ?? [])]) if (/"level":("(warn|error|fatal)"|[456]\d)/.test(line)) console.log(line);
}

describe("faults: the database kills every connection during a burst", function () {
  this.timeout(120_000);
  let dbDrop: (() => Promise<void>) | undefined;
  let knex: Knex;
  let stack: Stack | undefined;

  before(async () => {
    const db = await createTestDatabase("faults-db");
    dbDrop = db.drop;
    knex = createKnex({ url: db.url, poolMax: 2 });
    stack = await startStack(db.url);
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") printWarnings(stack);
  });
  after(async () => {
    await stack?.close();
    await knex?.destroy();
    await dbDrop?.();
  });

  it("answers UNAVAILABLE meanwhile, reconnects by itself, and every retried request ends in exactly one hold", async () => {
    const stream = await watch(stack!.client);
    const burst = retryingBurst(stack!.client);
    const recoveries: number[] = [];
    try {
      for (const _ of range(3)) {
        await until("holds being made", async () => Date.now() - burst.lastOkSentAt() < 100, 10_000);
        const [{ killed }] = await query<{ killed: number }>(knex, KILL_SERVICE_SESSIONS);
        expect(killed, "sessions killed").to.be.greaterThan(0);
        recoveries.push(await burst.servedAgainAfter(Date.now()));
      }
    } finally {
      await burst.stop().catch(() => undefined);
    }
    await burst.stop(); // no client met anything but OK or UNAVAILABLE
    console.log(`      answers ${JSON.stringify(Object.fromEntries(burst.answers))}; served again ${recoveries.join(", ")} ms after each kill`);
    await checkAfterwards(stack!, knex, burst, stream, /^OK|^Unavailable\/DATABASE_UNAVAILABLE$/);
  });
});

describe("faults: PostgreSQL is stopped for 2 s during a burst and started again", function () {
  this.timeout(180_000);
  let root: string;
  let port: number;
  let cluster: RunningPostgres | undefined;
  let knex: Knex | undefined;
  let stack: Stack | undefined;
  const start = () => startEmbeddedPostgres({ dataDir: path.join(root, "data"), port, persistent: true, fast: true });

  before(async () => {
    // A cluster of its own: the one the other tests share must not go down.
    root = await mkdtemp(path.join(tmpdir(), "holdfast-restart-"));
    port = await freePort();
    cluster = await start();
    await ensureDatabase(cluster.url("postgres"), "holdfast");
    // The test's own connection is cut by the restart too; knex's warning about it is expected.
    knex = createKnex({ url: cluster.url("holdfast"), poolMax: 2, log: { warn: () => undefined } });
    await migrateLatest(knex);
    stack = await startStack(cluster.url("holdfast"));
  });
  afterEach(function () {
    if (this.currentTest?.state === "failed") printWarnings(stack);
  });
  after(async () => {
    await stack?.close();
    await knex?.destroy();
    await cluster?.stop();
    await rm(root, { recursive: true, force: true });
  });

  it("answers UNAVAILABLE while it is down, serves again within seconds of it coming back, and loses nothing", async () => {
    const stream = await watch(stack!.client);
    const burst = retryingBurst(stack!.client);
    let downMs = 0;
    let servedAfterMs = 0;
    try {
      await until("holds being made", async () => burst.told.size >= 100, 30_000);
      const stoppedAt = Date.now();
      await cluster!.stop(); // a fast shutdown: sessions terminated, then connections refused
      cluster = undefined;
      await new Promise((resolve) => setTimeout(resolve, 2_000)); // the outage itself, not a wait for something
      cluster = await start();
      const backAt = Date.now();
      downMs = backAt - stoppedAt;
      servedAfterMs = await burst.servedAgainAfter(backAt);
    } finally {
      await burst.stop().catch(() => undefined);
    }
    await burst.stop();
    console.log(`      answers ${JSON.stringify(Object.fromEntries(burst.answers))}; down ${downMs} ms, served again ${servedAfterMs} ms after it was back`);
    expect([...burst.answers.keys()].some((k) => k.startsWith("Unavailable/")), "UNAVAILABLE while down").to.equal(true);
    await checkAfterwards(stack!, knex!, burst, stream, /^OK|^Unavailable\/(DATABASE_UNAVAILABLE|OVERLOADED)$/);
  });
});
