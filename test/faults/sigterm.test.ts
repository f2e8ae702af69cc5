// Fault tolerance (issue 9): SIGTERM in the middle of a burst. The calls in flight
// finish and are answered, new ones are refused with UNAVAILABLE (never INTERNAL), the
// process exits 0 within its grace period, and nothing is lost or half-made: the holds
// in the database are exactly those the clients were told about, and the refused
// requests, retried with the same request_id on another replica, each make one hold.
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failureOf, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

const SKU = "FAULT-TERM-1";
const CLIENTS = 32;
const GRACE_MS = 5_000;

describe("faults: SIGTERM during a burst", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  let doomed: ServiceProcess;
  let survivor: ServiceProcess;
  let toDoomed: Client;
  let toSurvivor: Client;

  before(async () => {
    db = await createTestDatabase("faults-sigterm");
    knex = createKnex({ url: db.url, poolMax: 2 });
    const env = { SHUTDOWN_GRACE_MS: String(GRACE_MS) };
    [doomed, survivor] = await Promise.all([startService("reservation-service", db.url, env), startService("reservation-service", db.url, env)]);
    toDoomed = createGrpcJsClient(InventoryReservationService, doomed.grpcAddress, undefined, testCaller);
    toSurvivor = createGrpcJsClient(InventoryReservationService, survivor.grpcAddress, undefined, testCaller);
    await toSurvivor.createSku({ requestId: "faults-term-sku", sku: SKU, name: "sigterm", initialOnHand: 100_000n });
  });
  after(async () => {
    toDoomed?.close();
    toSurvivor?.close();
    await Promise.all([doomed?.stop(), survivor?.stop()]);
    await knex?.destroy();
    await db?.drop();
  });

  it("answers what it accepted, refuses the rest with UNAVAILABLE, exits 0, and loses nothing", async () => {
    const told = new Map<string, string>();
    const refused: string[] = [];
    const answers = new Map<string, number>();
    const count = (key: string) => answers.set(key, (answers.get(key) ?? 0) + 1);
    let sequence = 0;
    let stop = false;

    // Until the process is gone, every client sends holds to the replica being stopped.
    const load = range(CLIENTS).map(async (c) => {
      while (!stop) {
        const requestId = `faults-term-${c}-${++sequence}`;
        try {
          const res = await toDoomed.createHold({ requestId, customerId: `buyer-${c}`, lines: [{ sku: SKU, quantity: 1 }] });
          told.set(requestId, res.reservation!.id);
          count("OK");
        } catch (err) {
          const f = failureOf(err);
          count(`${Code[f.code]}/${f.reason || "-"}`);
          if (f.code !== Code.Unavailable) throw err;
          refused.push(requestId);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
    });

    await until("a burst under way", async () => told.size >= 200, 30_000);
    const termAt = Date.now();
    doomed.child.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => doomed.child.once("exit", (c) => resolve(c)));
    const exitedAfterMs = Date.now() - termAt;
    stop = true;
    await Promise.all(load); // no client met anything but OK or UNAVAILABLE

    console.log(`      answers ${JSON.stringify(Object.fromEntries(answers))}; exited ${code} after ${exitedAfterMs} ms`);
    expect(code, "exit status").to.equal(0);
    expect(exitedAfterMs).to.be.below(GRACE_MS + 2_000);
    expect(doomed.output.join("\n")).to.include("stopped cleanly");
    for (const key of answers.keys()) expect(key, "every answer").to.match(/^OK$|^Unavailable\//);
    expect(refused.length, "requests refused during shutdown").to.be.greaterThan(0);

    // Exactly the holds the clients were told about: none lost, none half-made.
    const holds = await query<{ id: string; request_id: string }>(knex, `SELECT id, request_id FROM reservations`);
    expect(new Map(holds.map((h) => [h.request_id, h.id]))).to.deep.equal(told);

    // The refused requests, retried with the same request_id on the other replica: one hold each.
    const retried = new Set(refused);
    for (const requestId of retried) {
      const c = Number(requestId.split("-")[2]);
      const res = await toSurvivor.createHold({ requestId, customerId: `buyer-${c}`, lines: [{ sku: SKU, quantity: 1 }] });
      expect(res.replayed, `${requestId} had not been made`).to.equal(false);
    }
    const [{ n }] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM reservations`);
    expect(n).to.equal(told.size + retried.size);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(toSurvivor, [SKU]);
  });
});
