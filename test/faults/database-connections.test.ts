// Fault tolerance (issue 9): PostgreSQL kills every connection of both services
// (pg_terminate_backend) three times during a burst of holds. Meanwhile the service
// answers UNAVAILABLE / DATABASE_UNAVAILABLE (never INTERNAL or UNKNOWN) and stays up;
// it serves again within seconds, by itself; clients that retry with the same
// request_id end up with exactly one hold each; the availability stream either keeps
// delivering or ends cleanly with UNAVAILABLE; stock and the ledger are exact.
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { InventoryReservationService, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failureOf, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { StreamRecorder } from "../support/streams.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

const SKU = "FAULT-DB-1";
const CLIENTS = 16;
/** How long the services may take to serve again after their connections were killed. */
const RECOVERY_MS = 5_000;

/** Every session of the services (application_name "holdfast-..."), killed by the database. */
const KILL_SERVICE_SESSIONS = `
SELECT count(*)::int AS killed
  FROM (SELECT pg_terminate_backend(pid)
          FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'holdfast-%') t`;

describe("faults: the database kills every connection during a burst", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  let svc: ServiceProcess;
  let worker: ServiceProcess;
  let client: Client;

  before(async () => {
    db = await createTestDatabase("faults-db");
    knex = createKnex({ url: db.url, poolMax: 2 });
    [svc, worker] = await Promise.all([startService("reservation-service", db.url), startService("expiry-worker", db.url)]);
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    await client.createSku({ requestId: "faults-db-sku", sku: SKU, name: "fault injection", initialOnHand: 100_000n });
  });
  afterEach(function () {
    // On failure, what the services logged at warn and above is the first thing to read.
    if (this.currentTest?.state !== "failed") return;
    for (const line of [...svc.output, ...worker.output]) if (/"level":("(warn|error|fatal)"|[456]\d)/.test(line)) console.log(line);
  });
  after(async () => {
    client?.close();
    await Promise.all([svc?.stop(), worker?.stop()]);
    await knex?.destroy();
    await db?.drop();
  });

  it("answers UNAVAILABLE meanwhile, reconnects by itself, and every retried request ends in exactly one hold", async () => {
    const stream = new StreamRecorder<WatchAvailabilityResponse>((signal) => client.watchAvailability({ skus: [SKU] }, { signal }));
    await stream.next("the initial state", (m) => m.event.case === "initialState");

    /** Every answer by status/reason, and the holds the clients were told about, by request id. */
    const answers = new Map<string, number>();
    const told = new Map<string, string>();
    const count = (key: string) => answers.set(key, (answers.get(key) ?? 0) + 1);
    let stop = false;
    /** When the latest successful request was sent (not answered: one in flight during a kill may have committed before it). */
    let lastOkSentAt = 0;
    let sequence = 0;

    // Each client makes holds one after another; a request that fails for the database
    // is retried with the SAME request_id until it succeeds (a replay if it had committed).
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

    const recoveries: number[] = [];
    try {
      for (const _ of range(3)) {
        await until("holds being made", async () => Date.now() - lastOkSentAt < 100, 10_000);
        const [{ killed }] = await query<{ killed: number }>(knex, KILL_SERVICE_SESSIONS);
        expect(killed, "sessions killed").to.be.greaterThan(0);
        const killedAt = Date.now();
        await until("a hold requested after the kill", async () => lastOkSentAt > killedAt, RECOVERY_MS, 5);
        recoveries.push(Date.now() - killedAt);
      }
    } finally {
      stop = true;
      await Promise.allSettled(load);
    }
    await Promise.all(load); // no client met anything but OK or UNAVAILABLE

    const seen = Object.fromEntries(answers);
    console.log(`      answers ${JSON.stringify(seen)}; served again ${recoveries.join(", ")} ms after each kill`);
    for (const key of answers.keys()) expect(key, "every answer").to.match(/^OK|^Unavailable\/DATABASE_UNAVAILABLE$/);
    expect(svc.child.exitCode, "reservation-service still running").to.equal(null);
    expect(worker.child.exitCode, "expiry-worker still running").to.equal(null);

    // Exactly the holds the clients were told about, each once.
    const holds = await query<{ id: string; request_id: string }>(
      knex,
      `SELECT r.id, r.request_id FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id WHERE i.sku_code = ?`,
      [SKU],
    );
    expect(new Map(holds.map((h) => [h.request_id, h.id]))).to.deep.equal(told);
    expect(holds).to.have.length(told.size);
    const [inventory] = await query<{ reserved: number }>(knex, `SELECT reserved FROM inventory WHERE sku_code = ?`, [SKU]);
    expect(inventory!.reserved).to.equal(told.size);

    // The availability stream kept delivering (its feed reconnected) or ended cleanly with UNAVAILABLE.
    const after = stream.messages.length;
    const released = holds[0]!;
    await client.releaseHold({ requestId: "faults-db-release", reservationId: released.id });
    if (stream.ended) {
      expect(failureOf(stream.error).code, "how the stream ended").to.equal(Code.Unavailable);
    } else {
      await stream.next("the release after the kills", (m) => m.event.case === "update" && m.event.value.availabilities.some((a) => a.reserved === BigInt(told.size - 1)), 5_000, after);
    }
    stream.close();

    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(client, [SKU]);
  });
});
