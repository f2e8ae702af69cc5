// Fault tolerance (issue 9): a reservation-service replica dies in the middle of a
// burst, on SIGTERM (a deploy) or SIGKILL (a crash), while another replica serves the
// same database.
//
// - SIGTERM: the calls in flight finish and are answered, new ones are refused with
//   UNAVAILABLE (never INTERNAL), the process exits 0 within its grace period, and
//   nothing is lost or half-made: the holds in the database are exactly those the
//   clients were told about; the refused requests, retried with the same request_id
//   on the other replica, each make one hold.
// - SIGKILL: clients whose call fails retry it, with the same request_id, on the other
//   replica. Afterwards every request made exactly one hold: those committed before
//   the kill are replayed (the client learns the hold it was not told about), those
//   cut off were rolled back with their idempotency claim (one transaction) and are
//   made anew; nothing is half-made, stock is exact, CheckConsistency is clean.
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

const CLIENTS = 32;
const GRACE_MS = 5_000;

/** Two replicas on a fresh database with one well-stocked SKU: `doomed` will die, `survivor` will not. */
interface Replicas {
  knex: Knex;
  doomed: ServiceProcess;
  toDoomed: Client;
  toSurvivor: Client;
  close(): Promise<void>;
}

async function twoReplicas(name: string, sku: string): Promise<Replicas> {
  const db: TestDatabase = await createTestDatabase(name);
  const knex = createKnex({ url: db.url, poolMax: 2 });
  const env = { SHUTDOWN_GRACE_MS: String(GRACE_MS) };
  const [doomed, survivor] = await Promise.all([startService("reservation-service", db.url, env), startService("reservation-service", db.url, env)]);
  const toDoomed = createGrpcJsClient(InventoryReservationService, doomed.grpcAddress, undefined, testCaller);
  const toSurvivor = createGrpcJsClient(InventoryReservationService, survivor.grpcAddress, undefined, testCaller);
  await toSurvivor.createSku({ requestId: `${name}-sku`, sku, name, initialOnHand: 100_000n });
  return {
    knex,
    doomed,
    toDoomed,
    toSurvivor,
    async close() {
      toDoomed.close();
      toSurvivor.close();
      await Promise.all([doomed.stop(), survivor.stop()]);
      await knex.destroy();
      await db.drop();
    },
  };
}

describe("faults: a replica dies during a burst", function () {
  this.timeout(120_000);
  let r: Replicas | undefined;
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it("SIGTERM: answers what it accepted, refuses the rest with UNAVAILABLE, exits 0, and loses nothing", async () => {
    const SKU = "FAULT-TERM-1";
    r = await twoReplicas("faults-sigterm", SKU);
    const { knex, doomed, toDoomed, toSurvivor } = r;
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

  it("SIGKILL: every request ends in exactly one hold, replayed or made anew, and nothing is half-made", async () => {
    const SKU = "FAULT-KILL-1";
    r = await twoReplicas("faults-sigkill", SKU);
    const { knex, doomed, toDoomed, toSurvivor } = r;
    /** The hold each request was finally told about, and how. */
    const told = new Map<string, string>();
    const answers = new Map<string, number>();
    const count = (key: string) => answers.set(key, (answers.get(key) ?? 0) + 1);
    let sequence = 0;
    let stop = false;
    let killed = false;

    const load = range(CLIENTS).map(async (c) => {
      while (!stop) {
        const requestId = `faults-kill-${c}-${++sequence}`;
        const request = { requestId, customerId: `buyer-${c}`, lines: [{ sku: SKU, quantity: 1 }] };
        for (let attempt = 0; ; attempt++) {
          // The first try goes to the replica that will be killed (until it is), retries to the other.
          const target = attempt === 0 && !killed ? toDoomed : toSurvivor;
          try {
            const res = await target.createHold(request);
            count(target === toDoomed ? "OK" : res.replayed ? "retried: replayed" : "retried: made");
            told.set(requestId, res.reservation!.id);
            break;
          } catch (err) {
            const f = failureOf(err);
            count(`${Code[f.code]}/${f.reason || "-"}`);
            if (f.code !== Code.Unavailable || target === toSurvivor) throw err;
          }
        }
      }
    });

    await until("a burst under way", async () => told.size >= 200, 30_000);
    doomed.child.kill("SIGKILL");
    killed = true;
    await new Promise((resolve) => doomed.child.once("exit", resolve));
    // A little more traffic on the survivor alone, then stop.
    const after = told.size;
    await until("holds on the survivor", async () => told.size >= after + 100, 30_000);
    stop = true;
    await Promise.all(load); // nothing but OK, or UNAVAILABLE from the killed replica then OK from the other

    console.log(`      answers ${JSON.stringify(Object.fromEntries(answers))}`);
    for (const key of answers.keys()) expect(key, "every answer").to.match(/^OK$|^retried: |^Unavailable\//);
    expect(answers.get("Unavailable/-") ?? 0, "calls cut off by the kill").to.be.greaterThan(0);

    // Every request exactly one hold, the one its client was finally told about.
    const holds = await query<{ id: string; request_id: string }>(knex, `SELECT id, request_id FROM reservations`);
    expect(holds).to.have.length(told.size);
    expect(new Map(holds.map((h) => [h.request_id, h.id]))).to.deep.equal(told);
    // No claim is left in flight by the dead process (the claim commits with its hold).
    const [{ inFlight }] = await query<{ inFlight: number }>(knex, `SELECT count(*)::int AS "inFlight" FROM idempotency_records WHERE state = 'IN_FLIGHT'`);
    expect(inFlight).to.equal(0);
    await assertInvariants(knex, [SKU]);
    await checkConsistencyClean(toSurvivor, [SKU]);
  });
});
