// WatchAvailability (issue 6, "Live updates"): the current state first, then
// every change from any replica or the worker, coalesced under load with
// versions that never go back; heartbeats when idle; a clean end on shutdown.
// Two reservation-service replicas and an expiry-worker on one database.
import { randomUUID } from "node:crypto";
import { expect } from "chai";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService, type Availability, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex } from "@holdfast/schema";
import { testCaller, testCallerInterceptor } from "../support/auth.js";
import { failureOf } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { StreamRecorder } from "../support/streams.js";

type Grpc = GrpcJsClient<typeof InventoryReservationService>;
const rid = () => `watch-${randomUUID()}`;

/** A WatchAvailability stream read in the background. */
class Watch extends StreamRecorder<WatchAvailabilityResponse> {
  /** Latest availability seen for `sku` (initial state or updates). */
  latest(sku: string): Availability | undefined {
    let found: Availability | undefined;
    for (const m of this.messages) {
      if (m.event.case !== "initialState" && m.event.case !== "update") continue;
      for (const a of m.event.value.availabilities) if (a.sku === sku && (found === undefined || a.version > found.version)) found = a;
    }
    return found;
  }
}

const availabilityOf = (sku: string, available: bigint) => (m: WatchAvailabilityResponse) =>
  m.event.case === "update" && m.event.value.availabilities.some((a) => a.sku === sku && a.available === available);

describe("WatchAvailability: live availability from any replica", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let a: ServiceProcess;
  let b: ServiceProcess;
  let worker: ServiceProcess;
  let clientA: Grpc;
  let clientB: Grpc;
  const watches: Watch[] = [];

  before(async () => {
    db = await createTestDatabase("watch");
    [a, b, worker] = await Promise.all([
      startService("reservation-service", db.url),
      startService("reservation-service", db.url),
      startService("expiry-worker", db.url, { RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0" }),
    ]);
    clientA = createGrpcJsClient(InventoryReservationService, a.grpcAddress, undefined, testCaller);
    clientB = createGrpcJsClient(InventoryReservationService, b.grpcAddress, undefined, testCaller);
  });
  after(async () => {
    for (const w of watches) w.close();
    clientA?.close();
    clientB?.close();
    await Promise.all([a?.stop(), b?.stop(), worker?.stop()]);
    await db?.drop();
  });

  const watchGrpc = (client: Grpc, skus: string[], heartbeatS?: number) => {
    const w = new Watch((signal) => client.watchAvailability({ skus, heartbeatInterval: heartbeatS ? { seconds: BigInt(heartbeatS) } : undefined }, { signal }));
    watches.push(w);
    return w;
  };
  const watchConnect = (url: string, skus: string[]) => {
    const client = createClient(InventoryReservationService, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
    const w = new Watch((signal) => client.watchAvailability({ skus }, { signal }));
    watches.push(w);
    return w;
  };
  const sku = async (code: string, units: bigint) => {
    await clientA.createSku({ requestId: rid(), sku: code, name: code, initialOnHand: units });
    return code;
  };

  it("sends the current state first, then each change made on another replica (gRPC) or this one (Connect), and the worker's expiries", async () => {
    const code = await sku("W-ONE", 10n);
    const overGrpc = watchGrpc(clientB, [code]);
    const overConnect = watchConnect(a.httpUrl, [code]);
    for (const w of [overGrpc, overConnect]) {
      const first = await w.next("initial state", (m) => m.event.case === "initialState");
      expect(first.event.case === "initialState" && first.event.value.complete).to.equal(true);
      expect(w.latest(code)?.available).to.equal(10n);
    }
    // A hold on replica A: both watchers (one on B) see 7 within a second.
    const started = Date.now();
    const hold = (await clientA.createHold({ requestId: rid(), customerId: "c-1", lines: [{ sku: code, quantity: 3 }] })).reservation!;
    await Promise.all([overGrpc, overConnect].map((w) => w.next("available 7", availabilityOf(code, 7n), 1000)));
    const latency = Date.now() - started;
    // Released on replica B: back to 10.
    await clientB.releaseHold({ requestId: rid(), reservationId: hold.id });
    await Promise.all([overGrpc, overConnect].map((w) => w.next("available 10 again", availabilityOf(code, 10n), 1000)));
    // A hold left to expire: the worker's sweep returns the units, and the watchers see it.
    await clientA.createHold({ requestId: rid(), customerId: "c-2", lines: [{ sku: code, quantity: 4 }], ttl: { seconds: 1n } });
    const from = overGrpc.messages.length;
    await overGrpc.next("available 6", availabilityOf(code, 6n), 2000);
    await overGrpc.next("available 10 after expiry", availabilityOf(code, 10n), 5000, from);
    console.log(`      [watch] hold → update on the other replica's stream in ${latency} ms`);
  });

  it("an unknown SKU is NOT_FOUND / SKU_NOT_FOUND before any message", async () => {
    const w = watchGrpc(clientA, ["W-NO-SUCH-SKU"]);
    await w.next("the end", () => false, 5000).catch(() => undefined);
    expect(w.messages).to.have.length(0);
    expect(failureOf(w.error)).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
  });

  it("sends heartbeats when idle, at the requested interval", async () => {
    const code = await sku("W-IDLE", 1n);
    const w = watchGrpc(clientA, [code], 1);
    await w.next("initial state", (m) => m.event.case === "initialState");
    const started = Date.now();
    await w.next("a heartbeat", (m) => m.event.case === "heartbeat", 3000);
    expect(Date.now() - started).to.be.at.least(900);
  });

  it("with no SKUs named, watches the whole catalog, including SKUs created later", async () => {
    await sku("W-ALL-1", 5n);
    const w = watchGrpc(clientB, []);
    await w.next("initial state", (m) => m.event.case === "initialState" && m.event.value.complete);
    expect(w.latest("W-ALL-1")?.available).to.equal(5n);
    await sku("W-ALL-2", 8n);
    await w.next("the new SKU", (m) => m.event.case === "update" && m.event.value.availabilities.some((x) => x.sku === "W-ALL-2"), 2000);
  });

  it("under a burst, updates are coalesced, versions only go up, and the last one is the database's state", async () => {
    const code = await sku("W-BURST", 1000n);
    const w = watchGrpc(clientB, [code]);
    await w.next("initial state", (m) => m.event.case === "initialState");
    const holds = await Promise.all(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? clientA : clientB).createHold({ requestId: rid(), customerId: `c-${i}`, lines: [{ sku: code, quantity: 1 }] })),
    );
    expect(holds).to.have.length(200);
    const final = (await clientA.getAvailability({ skus: [code] })).availabilities[0]!;
    await w.next("the final state", (m) => m.event.case === "update" && m.event.value.availabilities.some((x) => x.sku === code && x.version === final.version), 3000);
    const versions = w.messages.flatMap((m) => (m.event.case === "update" || m.event.case === "initialState" ? m.event.value.availabilities.map((x) => x.version) : []));
    for (let i = 1; i < versions.length; i++) expect(versions[i]! > versions[i - 1]!, `versions ${versions[i - 1]} then ${versions[i]}`).to.equal(true);
    const updates = w.messages.filter((m) => m.event.case === "update").length;
    expect(updates, "coalesced: fewer updates than changes").to.be.lessThan(200);
    expect(w.latest(code)?.available).to.equal(800n);
    console.log(`      [watch] 200 holds on two replicas → ${updates} updates on one stream`);
    const knex = createKnex({ url: db.url, poolMax: 1 });
    try {
      await assertInvariants(knex, [code]);
    } finally {
      await knex.destroy();
    }
  });

  it("a stream ends with UNAVAILABLE / SHUTTING_DOWN when its replica shuts down", async () => {
    const third = await startService("reservation-service", db.url);
    const client = createGrpcJsClient(InventoryReservationService, third.grpcAddress, undefined, testCaller);
    try {
      const w = watchGrpc(client, []);
      await w.next("initial state", (m) => m.event.case === "initialState");
      expect(await third.stop()).to.equal(0);
      await w.next("the end", () => false, 5000).catch(() => undefined);
      expect(w.ended).to.equal(true);
      expect(failureOf(w.error)).to.include({ code: Code.Unavailable, reason: "SHUTTING_DOWN" });
    } finally {
      client.close();
    }
  });
});
