// Who may do what (issue 5, contract: AUTHENTICATION AND ROLES, access.proto):
// every RPC of both services × every role, on the gRPC port, the Connect port
// and the worker's port; every way a token can be bad; and a customer who
// reaches for someone else's reservation. A refused call changes nothing.
import { expect } from "chai";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { ExpiryWorkerService, InventoryReservationService, ReconciliationMode, WaitlistEntryStatus } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { allowedRoles, type RoleName } from "@holdfast/core";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex } from "@holdfast/schema";
import type { Knex } from "knex";
import { bearer, testCaller, token, TEST_JWT_SECRET } from "../support/auth.js";
import { failureOf, outcome, type Failure } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { listServices } from "../support/reflection.js";

const SKU = "AUTHZ-1";
/** Out of stock: entries on it stay WAITING. */
const SOLD_OUT = "AUTHZ-SOLD-OUT";
const ALICE = "alice";
const BOB = "bob";
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";


/** What an allowed caller gets from these fixtures, when it is not OK. */
const ALLOWED_ANSWER: Record<string, string> = { GetReconciliationRun: "NotFound/RECONCILIATION_RUN_NOT_FOUND" };

let requestCounter = 0;
const rid = () => `authz-${process.pid}-${++requestCounter}`;

type AnyClient = Record<string, (request: unknown, options?: { headers?: Record<string, string> }) => unknown>;

/** Calls `method` and settles it; a server stream counts as OK once its first message or clean end arrives. */
async function invoke(client: AnyClient, method: DescMethod, request: unknown, headers: Record<string, string>): Promise<Failure | "OK"> {
  const call = async () => {
    const result = client[method.localName](request, { headers });
    if (method.methodKind !== "server_streaming") return result;
    for await (const _ of result as AsyncIterable<unknown>) break;
    return undefined;
  };
  const settled = await outcome(call());
  return settled.ok ? "OK" : settled.failure;
}

const keyOf = (answer: Failure | "OK") => (answer === "OK" ? "OK" : answer.key);

describe("authorization: every RPC × every role, on every port", function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let knex: Knex;
  let svc: ServiceProcess;
  let worker: ServiceProcess;
  let setup: GrpcJsClient<typeof InventoryReservationService>;
  const tokens = {} as Record<RoleName, string>;
  let bobToken: string;

  before(async () => {
    db = await createTestDatabase("authorization");
    knex = createKnex({ url: db.url, poolMax: 2 });
    [svc, worker] = await Promise.all([startService("reservation-service", db.url), startService("expiry-worker", db.url)]);
    setup = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    await setup.createSku({ requestId: rid(), sku: SKU, name: "Authorization test", initialOnHand: 100_000n });
    await setup.createSku({ requestId: rid(), sku: SOLD_OUT, name: "Authorization test, sold out", initialOnHand: 0n });
    tokens.admin = await token("admin", "ops");
    tokens.service = await token("service", "checkout");
    tokens.customer = await token("customer", ALICE);
    bobToken = await token("customer", BOB);
  });
  after(async () => {
    setup?.close();
    await Promise.all([svc?.stop(), worker?.stop()]);
    await knex?.destroy();
    await db?.drop();
  });

  const hold = async (customerId: string) => (await setup.createHold({ requestId: rid(), customerId, lines: [{ sku: SKU, quantity: 1 }] })).reservation!;
  const allocation = async (customerId: string) =>
    (await setup.createAllocation({ requestId: rid(), customerId, lines: [{ sku: SKU, quantity: 1 }] })).reservation!;

  /** Idempotent waitlist calls the fixtures made (each records a request but makes no reservation). */
  let waitlistFixtureCalls = 0;
  /** Alice's WAITING entry on the sold-out SKU (made if she has none). */
  const aliceWaiting = async () => {
    const [entry] = (await setup.listWaitlistEntries({ sku: SOLD_OUT, customerId: ALICE, statuses: [WaitlistEntryStatus.WAITING] })).entries;
    if (entry !== undefined) return entry;
    waitlistFixtureCalls++;
    return (await setup.joinWaitlist({ requestId: rid(), customerId: ALICE, sku: SOLD_OUT, quantity: 1 })).entry!;
  };
  /** Alice has no active entry on the sold-out SKU (so that she may join it). */
  const aliceNotWaiting = async () => {
    const [entry] = (await setup.listWaitlistEntries({ sku: SOLD_OUT, customerId: ALICE, statuses: [WaitlistEntryStatus.WAITING] })).entries;
    if (entry === undefined) return;
    waitlistFixtureCalls++;
    await setup.leaveWaitlist({ requestId: rid(), waitlistEntryId: entry.id });
  };

  /** A valid request for each RPC as `role` would send it (prerequisites made by the test's own caller). */
  const requests: Record<string, (role: RoleName) => Promise<unknown>> = {
    CreateSku: async () => ({ requestId: rid(), sku: `AUTHZ-NEW-${++requestCounter}`, name: "new", initialOnHand: 1n }),
    GetSku: async () => ({ sku: SKU }),
    ListSkus: async () => ({}),
    UpdateSku: async () => ({ requestId: rid(), sku: { code: SKU, name: `renamed ${requestCounter}` }, updateMask: { paths: ["name"] } }),
    AdjustStock: async () => ({ requestId: rid(), sku: SKU, change: { case: "delta", value: 1n }, reason: "authorization test" }),
    CreateHold: async (role) => ({ requestId: rid(), customerId: role === "customer" ? "" : ALICE, lines: [{ sku: SKU, quantity: 1 }] }),
    ExtendHold: async () => ({ requestId: rid(), reservationId: (await hold(ALICE)).id, ttl: { seconds: 120n } }),
    ConfirmHold: async () => ({ requestId: rid(), reservationId: (await hold(ALICE)).id }),
    ReleaseHold: async () => ({ requestId: rid(), reservationId: (await hold(ALICE)).id }),
    CreateAllocation: async () => ({ requestId: rid(), customerId: ALICE, lines: [{ sku: SKU, quantity: 1 }] }),
    FulfillAllocation: async () => ({ requestId: rid(), reservationId: (await allocation(ALICE)).id }),
    CancelAllocation: async () => ({ requestId: rid(), reservationId: (await allocation(ALICE)).id }),
    GetReservation: async () => ({ reservationId: (await hold(ALICE)).id }),
    ListReservations: async (role) => ({ customerId: role === "customer" ? "" : ALICE }),
    GetAvailability: async () => ({ skus: [SKU] }),
    WatchAvailability: async () => ({ skus: [SKU] }),
    ListAvailabilitySnapshots: async () => ({}),
    CheckConsistency: async () => ({ skus: [SKU] }),
    ListAuditEvents: async () => ({ sku: SKU }),
    JoinWaitlist: async (role) => (await aliceNotWaiting(), { requestId: rid(), customerId: role === "customer" ? "" : ALICE, sku: SOLD_OUT, quantity: 1 }),
    LeaveWaitlist: async () => ({ requestId: rid(), waitlistEntryId: (await aliceWaiting()).id }),
    GetWaitlistEntry: async () => ({ waitlistEntryId: (await aliceWaiting()).id }),
    ListWaitlistEntries: async (role) => ({ customerId: role === "customer" ? "" : ALICE }),
    WatchWaitlist: async (role) => ({ customerId: role === "customer" ? "" : ALICE }),
    GetFlashSaleReport: async () => ({ sku: SKU, startTime: { seconds: BigInt(Math.floor(Date.now() / 1000) - 3600) } }),
    RunExpirySweep: async () => ({ requestId: rid() }),
    RunReconciliation: async () => ({ requestId: rid(), mode: ReconciliationMode.CHECK, skus: [SKU], returnImmediately: true }),
    GetReconciliationRun: async () => ({ runId: UNKNOWN_ID }),
    ListReconciliationRuns: async () => ({}),
    TakeSnapshot: async () => ({ requestId: rid(), skus: [SKU] }),
    GetWorkerStatus: async () => ({}),
  };

  /** Everything a call could change. */
  async function fingerprint(): Promise<string> {
    const { rows } = await knex.raw(`
      SELECT (SELECT count(*) FROM reservations) AS reservations,
             (SELECT count(*) FROM idempotency_records) AS idempotency,
             (SELECT count(*) FROM audit_events) AS events,
             (SELECT count(*) FROM reconciliation_runs) AS runs,
             (SELECT count(*) FROM inventory_snapshots) AS snapshots,
             (SELECT count(*) FROM waitlist_entries) AS waitlist,
             (SELECT string_agg(code || ':' || name, ',' ORDER BY code) FROM skus) AS skus,
             (SELECT coalesce(sum(version), 0) FROM inventory) AS versions,
             (SELECT string_agg(id || status || coalesce(expires_at::text, ''), ',' ORDER BY id) FROM reservations) AS states`);
    return JSON.stringify(rows[0]);
  }

  type Port = { name: string; service: DescService; client: () => AnyClient };
  const ports = (): Port[] => [
    { name: "gRPC", service: InventoryReservationService, client: () => createGrpcJsClient(InventoryReservationService, svc.grpcAddress) as unknown as AnyClient },
    {
      name: "Connect",
      service: InventoryReservationService,
      client: () => createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1" })) as unknown as AnyClient,
    },
    { name: "worker gRPC", service: ExpiryWorkerService, client: () => createGrpcJsClient(ExpiryWorkerService, worker.grpcAddress) as unknown as AnyClient },
  ];

  it("every RPC declares who may call it, and the declared roles are the contract's", () => {
    const table = Object.fromEntries(
      [...InventoryReservationService.methods, ...ExpiryWorkerService.methods].map((m) => [m.name, allowedRoles(m).join(",")]),
    );
    expect(Object.keys(requests).sort()).to.deep.equal(Object.keys(table).sort());
    // Spot checks of the table against the issue: admin owns the catalog and stock, services make
    // holds and allocations, customers act for themselves, the worker's API is admin only.
    expect(table).to.include({
      CreateSku: "admin",
      AdjustStock: "admin",
      CreateHold: "service,customer",
      ConfirmHold: "service",
      CreateAllocation: "service",
      GetReservation: "admin,service,customer",
      CheckConsistency: "admin",
      ListAuditEvents: "admin,service",
      RunReconciliation: "admin",
      GetWorkerStatus: "admin",
    });
  });

  for (const port of [0, 1, 2]) {
    for (const role of ["admin", "service", "customer"] as const) {
      it(`port ${["gRPC", "Connect", "worker gRPC"][port]}, role ${role}: allowed RPCs answer, the others are PERMISSION_DENIED / ROLE_NOT_PERMITTED and change nothing`, async () => {
        const { service, client: makeClient } = ports()[port];
        const client = makeClient();
        const problems: string[] = [];
        for (const method of service.methods) {
          const request = await requests[method.name](role);
          const allowed = allowedRoles(method).includes(role);
          const before = allowed ? "" : await fingerprint();
          const answer = await invoke(client, method, request, bearer(tokens[role]));
          const expected = allowed ? (ALLOWED_ANSWER[method.name] ?? "OK") : "PermissionDenied/ROLE_NOT_PERMITTED";
          if (keyOf(answer) !== expected) problems.push(`${method.name}: expected ${expected}, got ${keyOf(answer)}${answer === "OK" ? "" : ` (${answer.message})`}`);
          if (!allowed) {
            if (answer !== "OK") expect(answer.metadata).to.deep.equal({ role, allowed_roles: allowedRoles(method).join(",") });
            if ((await fingerprint()) !== before) problems.push(`${method.name}: a refused call changed the database`);
          }
        }
        (client as unknown as { close?: () => void }).close?.();
        expect(problems).to.deep.equal([]);
      });
    }
  }

  it("every way a token can be bad is UNAUTHENTICATED with its reason, on every RPC of every port (gRPC, Connect, gRPC-Web, worker)", async () => {
    const now = Math.floor(Date.now() / 1000);
    const bad: [string, Record<string, string>, string][] = [
      ["no authorization header", {}, "TOKEN_MISSING"],
      ["a bearer without a token", { authorization: "Bearer " }, "TOKEN_MISSING"],
      ["not a JWT", { authorization: "Bearer not-a-jwt" }, "TOKEN_INVALID"],
      ["another scheme", { authorization: `Basic ${Buffer.from("admin:admin").toString("base64")}` }, "TOKEN_INVALID"],
      ["expired", bearer(await token("admin", "ops", { issuedAt: now - 7200, ttlSeconds: 3600 })), "TOKEN_EXPIRED"],
      ["not valid yet", bearer(await token("admin", "ops", { notBefore: now + 3600 })), "TOKEN_EXPIRED"],
      ["wrong audience", bearer(await token("admin", "ops", { audience: "someone-else" })), "TOKEN_INVALID"],
      ["wrong issuer", bearer(await token("admin", "ops", { issuer: "https://evil.example" })), "TOKEN_INVALID"],
      ["wrong signature", bearer(await token("admin", "ops", { secret: `${TEST_JWT_SECRET}-but-not-quite` })), "TOKEN_INVALID"],
      ["unsigned (alg none)", bearer(unsigned({ role: "admin", sub: "ops", iss: "holdfast-test", aud: "holdfast-test-audience", exp: now + 3600 })), "TOKEN_INVALID"],
      ["a subject that is not a customer id", bearer(await token("admin", "has spaces")), "TOKEN_INVALID"],
      ["an unknown role", bearer(await token("root" as RoleName, "ops")), "TOKEN_INVALID"],
    ];
    const clients: [string, DescService, AnyClient][] = [
      ["gRPC", InventoryReservationService, createGrpcJsClient(InventoryReservationService, svc.grpcAddress) as unknown as AnyClient],
      ["Connect", InventoryReservationService, createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1" })) as unknown as AnyClient],
      ["gRPC-Web", InventoryReservationService, createClient(InventoryReservationService, createGrpcWebTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1" })) as unknown as AnyClient],
      ["worker", ExpiryWorkerService, createGrpcJsClient(ExpiryWorkerService, worker.grpcAddress) as unknown as AnyClient],
    ];
    const before = await fingerprint();
    const waitlistCallsBefore = waitlistFixtureCalls;
    const problems: string[] = [];
    let calls = 0;
    for (const [port, service, client] of clients) {
      for (const method of service.methods) {
        // A request that would succeed with a good token: the token alone decides.
        const request = await requests[method.name]("admin");
        for (const [what, headers, reason] of bad) {
          const answer = await invoke(client, method, request, headers);
          calls++;
          if (keyOf(answer) !== `Unauthenticated/${reason}`) problems.push(`${port} ${method.name} with ${what}: got ${keyOf(answer)}`);
        }
      }
    }
    for (const [, , client] of clients) (client as unknown as { close?: () => void }).close?.();
    expect(problems).to.deep.equal([]);
    // Three ports of the reservation-service, one of the worker.
    expect(calls).to.equal((3 * InventoryReservationService.methods.length + ExpiryWorkerService.methods.length) * bad.length);
    // The fixtures above made holds through the test's own caller; the refused calls made nothing.
    const afterFixtures = await fingerprint();
    expect(JSON.parse(afterFixtures).idempotency - JSON.parse(before).idempotency).to.equal(
      JSON.parse(afterFixtures).reservations - JSON.parse(before).reservations + (waitlistFixtureCalls - waitlistCallsBefore),
    );
  });

  describe("a customer acts only for itself", () => {
    let alice: GrpcJsClient<typeof InventoryReservationService>;
    const asAlice = () => ({ headers: bearer(tokens.customer) });

    before(() => {
      alice = createGrpcJsClient(InventoryReservationService, svc.grpcAddress);
    });
    after(() => alice?.close());

    it("CreateHold: customer_id empty means itself; another customer's id is CUSTOMER_ID_MISMATCH and holds nothing", async () => {
      const own = await alice.createHold({ requestId: rid(), lines: [{ sku: SKU, quantity: 1 }] }, asAlice());
      expect(own.reservation!.customerId).to.equal(ALICE);
      const named = await alice.createHold({ requestId: rid(), customerId: ALICE, lines: [{ sku: SKU, quantity: 1 }] }, asAlice());
      expect(named.reservation!.customerId).to.equal(ALICE);
      const before = await fingerprint();
      const refused = failureOf(await alice.createHold({ requestId: rid(), customerId: BOB, lines: [{ sku: SKU, quantity: 1 }] }, asAlice()).catch((e: unknown) => e));
      expect(refused).to.include({ code: Code.PermissionDenied, reason: "CUSTOMER_ID_MISMATCH" });
      expect(await fingerprint()).to.equal(before);
    });

    it("another customer's reservation and an unknown id look the same: NOT_RESOURCE_OWNER, nothing revealed, nothing changed", async () => {
      const bobs = await hold(BOB);
      const before = await fingerprint();
      const answers = [];
      for (const reservationId of [bobs.id, UNKNOWN_ID]) {
        for (const call of [
          () => alice.getReservation({ reservationId }, asAlice()),
          () => alice.releaseHold({ requestId: rid(), reservationId }, asAlice()),
          () => alice.extendHold({ requestId: rid(), reservationId, ttl: { seconds: 120n } }, asAlice()),
        ]) {
          const answer = failureOf(await call().catch((e: unknown) => e));
          answers.push(answer);
          expect(answer).to.include({ code: Code.PermissionDenied, reason: "NOT_RESOURCE_OWNER" });
          expect(answer.metadata).to.deep.equal({});
          expect(answer.message).to.not.include(reservationId);
        }
      }
      // The same answer, whichever RPC and whether the reservation exists or not.
      expect(new Set(answers.map((a) => JSON.stringify(a))).size).to.equal(1);
      expect(await fingerprint()).to.equal(before);
      // Bob still holds it, and can release it himself.
      const released = await alice.releaseHold({ requestId: rid(), reservationId: bobs.id }, { headers: bearer(bobToken) });
      expect(released.reservation!.customerId).to.equal(BOB);
    });

    it("someone else's reservation is never locked or waited for: NOT_RESOURCE_OWNER at once even while its row is busy", async () => {
      const bobs = await hold(BOB);
      const busy = await knex.transaction();
      try {
        await busy.raw(`SELECT 1 FROM reservations WHERE id = ? FOR UPDATE`, [bobs.id]);
        const started = Date.now();
        const answer = failureOf(await alice.releaseHold({ requestId: rid(), reservationId: bobs.id }, asAlice()).catch((e: unknown) => e));
        // Not a LOCK_TIMEOUT naming bob's SKUs after the lock wait (LOCK_TIMEOUT_MS is 2 s).
        expect(answer).to.include({ code: Code.PermissionDenied, reason: "NOT_RESOURCE_OWNER" });
        expect(answer.metadata).to.deep.equal({});
        expect(Date.now() - started).to.be.below(1000);
      } finally {
        await busy.rollback();
      }
    });

    it("its own holds: it may read, extend and release them (not confirm: that is the checkout service's)", async () => {
      const own = await hold(ALICE);
      expect((await alice.getReservation({ reservationId: own.id }, asAlice())).reservation!.id).to.equal(own.id);
      await alice.extendHold({ requestId: rid(), reservationId: own.id, ttl: { seconds: 120n } }, asAlice());
      const confirm = failureOf(await alice.confirmHold({ requestId: rid(), reservationId: own.id }, asAlice()).catch((e: unknown) => e));
      expect(confirm).to.include({ code: Code.PermissionDenied, reason: "ROLE_NOT_PERMITTED" });
      expect((await alice.releaseHold({ requestId: rid(), reservationId: own.id }, asAlice())).reservation!.customerId).to.equal(ALICE);
    });

    it("ListReservations: forced to its own; naming another customer is CUSTOMER_ID_MISMATCH", async () => {
      await hold(BOB);
      const mine = await alice.listReservations({ pageSize: 1000 }, asAlice());
      expect(mine.reservations.length).to.be.greaterThan(0);
      expect(new Set(mine.reservations.map((r) => r.customerId))).to.deep.equal(new Set([ALICE]));
      const refused = failureOf(await alice.listReservations({ customerId: BOB }, asAlice()).catch((e: unknown) => e));
      expect(refused).to.include({ code: Code.PermissionDenied, reason: "CUSTOMER_ID_MISMATCH" });
    });

    it("the same request_id from two customers is two requests (idempotency is scoped per caller)", async () => {
      const shared = rid();
      const a = await alice.createHold({ requestId: shared, lines: [{ sku: SKU, quantity: 1 }] }, asAlice());
      const b = await alice.createHold({ requestId: shared, lines: [{ sku: SKU, quantity: 1 }] }, { headers: bearer(bobToken) });
      expect(a.reservation!.id).to.not.equal(b.reservation!.id);
      expect([a.reservation!.customerId, b.reservation!.customerId]).to.deep.equal([ALICE, BOB]);
      expect(b.replayed).to.equal(false);
    });
  });

  it("health checks and reflection need no token", async () => {
    const health = createGrpcJsClient(Health, svc.grpcAddress);
    try {
      expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
    }
    expect(await listServices(svc.grpcAddress)).to.include("holdfast.inventory.v1.InventoryReservationService");
    expect((await fetch(`${svc.httpUrl}/healthz`)).status).to.equal(200);
  });

  it("reflection can be switched off (GRPC_REFLECTION=false); health stays open", async () => {
    const quiet = await startService("reservation-service", db.url, { GRPC_REFLECTION: "false" });
    const health = createGrpcJsClient(Health, quiet.grpcAddress);
    try {
      const refused = await listServices(quiet.grpcAddress).then(
        () => undefined,
        (err: { code?: number }) => err,
      );
      expect(refused?.code, "reflection answers UNIMPLEMENTED").to.equal(Code.Unimplemented);
      expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
      await quiet.stop();
    }
  });
});

/** A JWT with "alg": "none" and no signature. */
function unsigned(claims: Record<string, unknown>): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none", typ: "JWT" })}.${part(claims)}.`;
}

