// The reservation lifecycle over gRPC against a real reservation-service process
// (contract: ReservationStatus in resources.proto, the lifecycle RPCs in
// service.proto, the reasons in errors.proto):
//   HELD -> ALLOCATED (ConfirmHold) | RELEASED (ReleaseHold) | EXPIRED (expiry);
//   ALLOCATED -> FULFILLED (FulfillAllocation) | CANCELLED (CancelAllocation).
// Every legal transition, every no-op repeat and every illegal call, each followed
// by SQL checks of the ledger events written and of the SKU's counters. No
// expiry-worker runs here: expiry is observed before any sweep.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { AssertionError, expect } from "chai";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService, ReservationStatus, ReservationType, type Reservation } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema, PreconditionFailureSchema, ResourceInfoSchema, type ErrorInfo } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { testCaller, testCallerInterceptor } from "../support/auth.js";
import { untilALockWait } from "../support/wait.js";

const DOMAIN = "holdfast.inventory.v1";
/** Until authentication lands every caller is this principal (core/context.ts). */
/** Holds and allocations are made by the checkout service (testCaller's service token). */
const ACTOR = "service:test-checkout";
/** Server hold bounds of the process under test (small, so lifetime limits are reachable). */
const SERVER_ENV = { HOLD_TTL_MAX_MS: "60000", MAX_HOLD_LIFETIME_MS: "90000", LOCK_TIMEOUT_MS: "10000" };

type Grpc = GrpcJsClient<typeof InventoryReservationService>;

const rid = (label = "req") => `${label}-${randomUUID()}`;
const secs = (s: number) => ({ seconds: BigInt(Math.trunc(s)), nanos: Math.round((s - Math.trunc(s)) * 1e9) });
const date = (t: Timestamp | undefined): Date => {
  if (t === undefined) throw new AssertionError("expected a timestamp, got none");
  return timestampDate(t);
};

interface Counters {
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  version: number;
}

interface EventRow {
  id: number;
  operation: string;
  sku_code: string;
  reservation_id: string | null;
  delta_on_hand: number;
  delta_reserved: number;
  delta_allocated: number;
  version_after: number;
  actor: string;
  request_id: string | null;
  reason: string | null;
}

interface StoredReservation {
  id: string;
  type: string;
  status: string;
  close_reason: string | null;
  created_at: Date;
  updated_at: Date;
  expires_at: Date | null;
  max_expires_at: Date | null;
  confirmed_at: Date | null;
  closed_at: Date | null;
  line_statuses: string[];
  line_expires: (Date | null)[];
}

/** The ledger deltas of one expected event. */
const ev = (operation: string, sku: string, reservationId: string | null, d: { onHand?: number; reserved?: number; allocated?: number }) => ({
  operation,
  sku_code: sku,
  reservation_id: reservationId,
  delta_on_hand: d.onHand ?? 0,
  delta_reserved: d.reserved ?? 0,
  delta_allocated: d.allocated ?? 0,
});
const article = (word: string) => (/^[AEIOU]/i.test(word) ? "an" : "a");
const shape = (e: EventRow) => ev(e.operation, e.sku_code, e.reservation_id, { onHand: e.delta_on_hand, reserved: e.delta_reserved, allocated: e.delta_allocated });

describe("reservation lifecycle over gRPC (real process, no sweeper)", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  let grpc: Grpc;
  let connect: Client<typeof InventoryReservationService>;
  let seq = 0;
  const code = (label: string) => `${label}-${++seq}`;

  before(async () => {
    db = await createTestDatabase("lifecycle");
    svc = await startService("reservation-service", db.url, SERVER_ENV);
    knex = createKnex({ url: db.url, poolMax: 4 });
    grpc = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
  });
  after(async () => {
    grpc?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });
  afterEach(async function () {
    // Whatever a test did, the books must still balance (plain SQL, trusts no service code).
    if (this.currentTest?.state === "passed") await assertInvariants(knex);
  });

  // ---------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------

  /** A SKU through CreateSku. */
  async function seedSku(sku: string, onHand: number, policy: { maxHoldTtlS?: number; maxHoldLifetimeS?: number } = {}): Promise<void> {
    await grpc.createSku({
      requestId: rid("sku"),
      sku,
      name: `SKU ${sku}`,
      initialOnHand: BigInt(onHand),
      policy: {
        maxHoldTtl: policy.maxHoldTtlS === undefined ? undefined : secs(policy.maxHoldTtlS),
        maxHoldLifetime: policy.maxHoldLifetimeS === undefined ? undefined : secs(policy.maxHoldLifetimeS),
      },
    });
  }

  /** Changes a SKU's hold policy after the fact (UpdateSku). */
  async function setPolicy(sku: string, policy: { maxHoldTtlS?: number; maxHoldLifetimeS?: number }): Promise<void> {
    const paths = [
      ...(policy.maxHoldTtlS !== undefined ? ["policy.max_hold_ttl"] : []),
      ...(policy.maxHoldLifetimeS !== undefined ? ["policy.max_hold_lifetime"] : []),
    ];
    await grpc.updateSku({
      requestId: rid("upd"),
      sku: {
        code: sku,
        policy: {
          maxHoldTtl: policy.maxHoldTtlS === undefined ? undefined : secs(policy.maxHoldTtlS),
          maxHoldLifetime: policy.maxHoldLifetimeS === undefined ? undefined : secs(policy.maxHoldLifetimeS),
        },
      },
      updateMask: { paths },
    });
  }

  async function counters(sku: string): Promise<Counters> {
    const [row] = await query<Counters>(knex, `SELECT on_hand, reserved, allocated, available, version FROM inventory WHERE sku_code = ?`, [sku]);
    if (row === undefined) throw new AssertionError(`no inventory row for ${sku}`);
    return { ...row };
  }

  async function lastEventId(): Promise<number> {
    const [row] = await query<{ id: number | null }>(knex, `SELECT max(id) AS id FROM audit_events`);
    return row?.id ?? 0;
  }

  async function eventsSince(mark: number): Promise<EventRow[]> {
    return query<EventRow>(
      knex,
      `SELECT id, operation, sku_code, reservation_id, delta_on_hand, delta_reserved, delta_allocated, version_after, actor, request_id, reason
         FROM audit_events WHERE id > ? ORDER BY id`,
      [mark],
    );
  }

  async function stored(id: string): Promise<StoredReservation> {
    const [row] = await query<StoredReservation>(
      knex,
      `SELECT r.id, r.type, r.status, r.close_reason, r.created_at, r.updated_at, r.expires_at, r.max_expires_at, r.confirmed_at, r.closed_at,
              (SELECT array_agg(i.status ORDER BY i.sku_code) FROM reservation_items i WHERE i.reservation_id = r.id) AS line_statuses,
              (SELECT array_agg(i.expires_at ORDER BY i.sku_code) FROM reservation_items i WHERE i.reservation_id = r.id) AS line_expires
         FROM reservations r WHERE r.id = ?`,
      [id],
    );
    if (row === undefined) throw new AssertionError(`no reservation ${id} in the database`);
    return row;
  }

  async function idempotencyRecords(requestId: string): Promise<number> {
    const [row] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM idempotency_records WHERE request_id = ?`, [requestId]);
    return row!.n;
  }

  async function dbClock(): Promise<Date> {
    const [row] = await query<{ now: Date }>(knex, `SELECT clock_timestamp() AS now`);
    return row!.now;
  }

  /**
   * Waits until the database clock has passed the stored expires_at of every hold
   * (polls `now() > expires_at`; the stored value has microseconds, the message's
   * expire_time only milliseconds, so the column itself is the exact bound).
   */
  async function untilLapsed(ids: string[], timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [row] = await query<{ passed: boolean }>(knex, `SELECT bool_and(now() > expires_at) AS passed FROM reservations WHERE id = ANY(?::uuid[])`, [ids]);
      if (row?.passed) return;
      if (Date.now() > deadline) throw new AssertionError(`holds ${ids.join(", ")} did not lapse within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  async function hold(lines: { sku: string; quantity: number }[], ttlS = 60, customerId = "cust-1"): Promise<Reservation> {
    const response = await grpc.createHold({ requestId: rid("hold"), customerId, lines, ttl: secs(ttlS) });
    expect(response.reservation, "CreateHold reservation").to.not.equal(undefined);
    return response.reservation!;
  }

  async function allocation(lines: { sku: string; quantity: number }[], customerId = "cust-1"): Promise<Reservation> {
    const response = await grpc.createAllocation({ requestId: rid("alloc"), customerId, lines });
    expect(response.reservation, "CreateAllocation reservation").to.not.equal(undefined);
    return response.reservation!;
  }

  async function failure(promise: PromiseLike<unknown>): Promise<ConnectError> {
    const err = await rejectionOf(promise);
    if (!(err instanceof ConnectError)) throw new AssertionError(`expected a ConnectError, got ${String(err)}`);
    return err;
  }

  function errorInfo(err: ConnectError): ErrorInfo {
    const infos = err.findDetails(ErrorInfoSchema);
    expect(infos, `ErrorInfo of "${err.rawMessage}"`).to.have.length(1);
    expect(infos[0]!.domain).to.equal(DOMAIN);
    return infos[0]!;
  }

  async function expectFailure(promise: PromiseLike<unknown>, code: Code, reason: string): Promise<{ err: ConnectError; info: ErrorInfo }> {
    const err = await failure(promise);
    const info = errorInfo(err);
    expect({ code: Code[err.code], reason: info.reason }, err.rawMessage).to.deep.equal({ code: Code[code], reason });
    return { err, info };
  }

  /** FAILED_PRECONDITION / INVALID_TRANSITION with its metadata and PreconditionFailure "STATUS". */
  async function expectInvalidTransition(promise: PromiseLike<unknown>, r: { id: string; status: string; type: string }): Promise<ConnectError> {
    const { err, info } = await expectFailure(promise, Code.FailedPrecondition, "INVALID_TRANSITION");
    expect(info.metadata).to.include({ reservation_id: r.id, status: r.status, type: r.type });
    const failures = err.findDetails(PreconditionFailureSchema);
    expect(failures, "PreconditionFailure").to.have.length(1);
    expect(failures[0]!.violations).to.have.length(1);
    expect(failures[0]!.violations[0]).to.include({ type: "STATUS", subject: `reservation/${r.id}` });
    expect(failures[0]!.violations[0]!.description).to.not.equal("");
    return err;
  }

  /** FAILED_PRECONDITION / HOLD_EXPIRED with metadata and PreconditionFailure "EXPIRY". */
  async function expectHoldExpired(promise: PromiseLike<unknown>, r: { id: string; expireTime?: Timestamp }): Promise<ConnectError> {
    const { err, info } = await expectFailure(promise, Code.FailedPrecondition, "HOLD_EXPIRED");
    expect(info.metadata.reservation_id).to.equal(r.id);
    expect(new Date(info.metadata.expire_time!).getTime(), "metadata expire_time").to.equal(date(r.expireTime).getTime());
    const failures = err.findDetails(PreconditionFailureSchema);
    expect(failures, "PreconditionFailure").to.have.length(1);
    expect(failures[0]!.violations).to.have.length(1);
    expect(failures[0]!.violations[0]).to.include({ type: "EXPIRY", subject: `reservation/${r.id}` });
    return err;
  }

  /** Everything a refused or no-op call must leave alone. */
  async function snapshot(id: string, skus: string[]) {
    return {
      reservation: await stored(id),
      counters: await Promise.all(skus.map(counters)),
      lastEvent: await lastEventId(),
    };
  }

  // ---------------------------------------------------------------------------------
  // HELD -> ALLOCATED
  // ---------------------------------------------------------------------------------

  describe("HELD → ALLOCATED (ConfirmHold)", () => {
    it("confirms a hold: reserved → allocated, one HOLD_CONFIRMED event per SKU in SKU order, same id, type HOLD", async () => {
      const [a, b] = [code("CONF-A"), code("CONF-B")];
      await seedSku(a, 10);
      await seedSku(b, 10);
      const mark0 = await lastEventId();
      // Lines in reverse SKU order and a duplicate: stored summed, in SKU order.
      const held = await hold([
        { sku: b, quantity: 2 },
        { sku: a, quantity: 1 },
        { sku: b, quantity: 1 },
      ]);
      expect(held.status).to.equal(ReservationStatus.HELD);
      expect(held.type).to.equal(ReservationType.HOLD);
      expect(held.lines.map((l) => [l.sku, l.quantity])).to.deep.equal([
        [a, 1],
        [b, 3],
      ]);
      expect((await eventsSince(mark0)).map(shape)).to.deep.equal([ev("HOLD_CREATED", a, held.id, { reserved: 1 }), ev("HOLD_CREATED", b, held.id, { reserved: 3 })]);
      expect(await counters(a)).to.deep.equal({ on_hand: 10, reserved: 1, allocated: 0, available: 9, version: 2 });
      expect(await counters(b)).to.deep.equal({ on_hand: 10, reserved: 3, allocated: 0, available: 7, version: 2 });

      const mark = await lastEventId();
      const requestId = rid("confirm");
      const { reservation, replayed } = await grpc.confirmHold({ requestId, reservationId: held.id });
      expect(replayed).to.equal(false);
      expect(reservation!.id).to.equal(held.id);
      expect(reservation!.status).to.equal(ReservationStatus.ALLOCATED);
      expect(reservation!.type).to.equal(ReservationType.HOLD);
      expect(reservation!.confirmTime, "confirm_time").to.not.equal(undefined);
      expect(reservation!.closeTime, "close_time").to.equal(undefined);
      expect(date(reservation!.expireTime).getTime(), "expire_time kept as history").to.equal(date(held.expireTime).getTime());
      expect(reservation!.lines).to.deep.equal(held.lines);

      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([
        ev("HOLD_CONFIRMED", a, held.id, { reserved: -1, allocated: 1 }),
        ev("HOLD_CONFIRMED", b, held.id, { reserved: -3, allocated: 3 }),
      ]);
      for (const e of events) expect({ actor: e.actor, request_id: e.request_id, version_after: e.version_after }).to.deep.equal({ actor: ACTOR, request_id: requestId, version_after: 3 });
      expect(await counters(a)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 1, available: 9, version: 3 });
      expect(await counters(b)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 3, available: 7, version: 3 });
      const row = await stored(held.id);
      expect({ status: row.status, lines: row.line_statuses, confirmed: row.confirmed_at !== null, closed: row.closed_at }).to.deep.equal({
        status: "ALLOCATED",
        lines: ["ALLOCATED", "ALLOCATED"],
        confirmed: true,
        closed: null,
      });
    });

    it("confirming an ALLOCATED hold again succeeds and changes nothing (no event, same version); the same request_id replays", async () => {
      const sku = code("CONF-AGAIN");
      await seedSku(sku, 5);
      const held = await hold([{ sku, quantity: 2 }]);
      const requestId = rid("confirm");
      const first = (await grpc.confirmHold({ requestId, reservationId: held.id })).reservation!;
      const before = await snapshot(held.id, [sku]);
      expect(before.counters[0]!.version).to.equal(3);

      const again = await grpc.confirmHold({ requestId: rid("confirm-again"), reservationId: held.id });
      expect(again.replayed).to.equal(false);
      expect(again.reservation!.id).to.equal(held.id);
      expect(again.reservation!.status).to.equal(ReservationStatus.ALLOCATED);
      expect(date(again.reservation!.confirmTime).getTime()).to.equal(date(first.confirmTime).getTime());
      expect(date(again.reservation!.updateTime).getTime()).to.equal(date(first.updateTime).getTime());
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);

      const replay = await grpc.confirmHold({ requestId, reservationId: held.id });
      expect(replay.replayed).to.equal(true);
      expect(replay.reservation).to.deep.equal(first);
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
    });
  });

  // ---------------------------------------------------------------------------------
  // HELD -> RELEASED
  // ---------------------------------------------------------------------------------

  describe("HELD → RELEASED (ReleaseHold)", () => {
    it("releases a hold with a reason: close_reason, close_time, HOLD_RELEASED event, units back to available", async () => {
      const sku = code("REL");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 4 }]);
      const mark = await lastEventId();
      const requestId = rid("release");
      const { reservation, replayed } = await grpc.releaseHold({ requestId, reservationId: held.id, reason: "customer left the checkout" });
      expect(replayed).to.equal(false);
      expect(reservation!.status).to.equal(ReservationStatus.RELEASED);
      expect(reservation!.closeReason).to.equal("customer left the checkout");
      expect(reservation!.closeTime, "close_time").to.not.equal(undefined);
      expect(reservation!.confirmTime, "confirm_time").to.equal(undefined);

      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([ev("HOLD_RELEASED", sku, held.id, { reserved: -4 })]);
      expect(events[0]).to.include({ actor: ACTOR, request_id: requestId, reason: "customer left the checkout", version_after: 3 });
      expect(await counters(sku)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 0, available: 10, version: 3 });
      const row = await stored(held.id);
      expect({ status: row.status, reason: row.close_reason, lines: row.line_statuses }).to.deep.equal({
        status: "RELEASED",
        reason: "customer left the checkout",
        lines: ["RELEASED"],
      });
    });

    it("releasing a RELEASED hold again succeeds and changes nothing (the first reason stays)", async () => {
      const sku = code("REL-AGAIN");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 1 }]);
      await grpc.releaseHold({ requestId: rid("release"), reservationId: held.id, reason: "first" });
      const before = await snapshot(held.id, [sku]);
      const again = await grpc.releaseHold({ requestId: rid("release-again"), reservationId: held.id, reason: "second" });
      expect(again.replayed).to.equal(false);
      expect(again.reservation!.status).to.equal(ReservationStatus.RELEASED);
      expect(again.reservation!.closeReason).to.equal("first");
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
    });

    it("a release without a reason leaves close_reason empty", async () => {
      const sku = code("REL-NOREASON");
      await seedSku(sku, 3);
      const held = await hold([{ sku, quantity: 3 }]);
      const mark = await lastEventId();
      const { reservation } = await grpc.releaseHold({ requestId: rid("release"), reservationId: held.id });
      expect(reservation!.status).to.equal(ReservationStatus.RELEASED);
      expect(reservation!.closeReason).to.equal("");
      expect((await eventsSince(mark)).map(shape)).to.deep.equal([ev("HOLD_RELEASED", sku, held.id, { reserved: -3 })]);
      expect(await counters(sku)).to.deep.equal({ on_hand: 3, reserved: 0, allocated: 0, available: 3, version: 3 });
    });
  });

  // ---------------------------------------------------------------------------------
  // HELD -> EXPIRED, before any sweep
  // ---------------------------------------------------------------------------------

  describe("HELD → EXPIRED before any sweeper runs", () => {
    const [x, y] = ["EXP-X", "EXP-Y"];
    let confirmed: Reservation; // lapsed, then ConfirmHold
    let released: Reservation; // lapsed, then ReleaseHold
    let extended: Reservation; // lapsed, then ExtendHold
    let allocationOps: Reservation; // lapsed, then Fulfill/Cancel
    let confirmRequestId: string;

    before(async () => {
      await seedSku(x, 20);
      await seedSku(y, 20);
      // ttl 1 s = the server's minimum hold TTL (HOLD_TTL_MIN_MS default).
      confirmed = await hold(
        [
          { sku: y, quantity: 1 },
          { sku: x, quantity: 2 },
        ],
        1,
      );
      released = await hold([{ sku: x, quantity: 3 }], 1);
      extended = await hold([{ sku: x, quantity: 4 }], 1);
      allocationOps = await hold([{ sku: y, quantity: 5 }], 1);
      const all = [confirmed, released, extended, allocationOps];
      for (const r of all) {
        const row = await stored(r.id);
        expect(date(r.expireTime).getTime(), "expire_time = stored expires_at (ms)").to.equal(row.expires_at!.getTime());
        expect(row.expires_at!.getTime() - row.created_at.getTime(), "ttl 1 s").to.be.within(999, 1000);
      }
      await untilLapsed(all.map((r) => r.id));
    });

    it("reads report the lapsed hold as EXPIRED while its row is still HELD and its units still reserved", async () => {
      const row = await stored(confirmed.id);
      expect(row.status, "not swept").to.equal("HELD");
      expect(await counters(x)).to.deep.include({ reserved: 2 + 3 + 4, version: 4 });
      expect(await counters(y)).to.deep.include({ reserved: 1 + 5, version: 3 });
      const read = (await grpc.getReservation({ reservationId: confirmed.id })).reservation;
      expect(read, "GetReservation reservation").to.not.equal(undefined);
      expect(read!.status).to.equal(ReservationStatus.EXPIRED);
      expect(read!.closeReason).to.equal("expired");
      expect(date(read!.closeTime).getTime(), "close_time = expire_time").to.equal(date(confirmed.expireTime).getTime());
    });

    it("ConfirmHold → FAILED_PRECONDITION / HOLD_EXPIRED (EXPIRY), and the same call expires the hold and returns its units", async () => {
      const mark = await lastEventId();
      const [cx, cy] = [await counters(x), await counters(y)];
      confirmRequestId = rid("confirm-lapsed");
      await expectHoldExpired(grpc.confirmHold({ requestId: confirmRequestId, reservationId: confirmed.id }), confirmed);

      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([
        ev("HOLD_EXPIRED", x, confirmed.id, { reserved: -2 }),
        ev("HOLD_EXPIRED", y, confirmed.id, { reserved: -1 }),
      ]);
      for (const e of events) expect(e).to.include({ actor: ACTOR, request_id: confirmRequestId });
      expect(await counters(x)).to.deep.equal({ ...cx, reserved: cx.reserved - 2, available: cx.available + 2, version: cx.version + 1 });
      expect(await counters(y)).to.deep.equal({ ...cy, reserved: cy.reserved - 1, available: cy.available + 1, version: cy.version + 1 });
      const row = await stored(confirmed.id);
      expect({ status: row.status, reason: row.close_reason, lines: row.line_statuses, closed: row.closed_at !== null, confirmed: row.confirmed_at }).to.deep.equal({
        status: "EXPIRED",
        reason: "expired",
        lines: ["EXPIRED", "EXPIRED"],
        closed: true,
        confirmed: null,
      });
    });

    it("the refusal is recorded: the same request_id replays it (metadata replayed), a new ConfirmHold is HOLD_EXPIRED again, no new event", async () => {
      const before = await snapshot(confirmed.id, [x, y]);
      const replay = await expectHoldExpired(grpc.confirmHold({ requestId: confirmRequestId, reservationId: confirmed.id }), confirmed);
      expect(errorInfo(replay).metadata.replayed).to.equal("true");
      await expectHoldExpired(grpc.confirmHold({ requestId: rid("confirm-expired"), reservationId: confirmed.id }), confirmed);
      expect(await snapshot(confirmed.id, [x, y])).to.deep.equal(before);
    });

    it("ExtendHold of the (now swept) EXPIRED hold → HOLD_EXPIRED, nothing changes", async () => {
      const before = await snapshot(confirmed.id, [x, y]);
      await expectHoldExpired(grpc.extendHold({ requestId: rid("extend"), reservationId: confirmed.id, ttl: secs(30) }), confirmed);
      expect(await snapshot(confirmed.id, [x, y])).to.deep.equal(before);
    });

    it("ExtendHold of a lapsed, unswept hold → HOLD_EXPIRED, and the same call expires it and returns its units", async () => {
      const mark = await lastEventId();
      const cx = await counters(x);
      const requestId = rid("extend-lapsed");
      await expectHoldExpired(grpc.extendHold({ requestId, reservationId: extended.id, ttl: secs(30) }), extended);
      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([ev("HOLD_EXPIRED", x, extended.id, { reserved: -4 })]);
      expect(events[0]).to.include({ request_id: requestId });
      expect(await counters(x)).to.deep.equal({ ...cx, reserved: cx.reserved - 4, available: cx.available + 4, version: cx.version + 1 });
      const row = await stored(extended.id);
      expect(row.status).to.equal("EXPIRED");
      expect(row.expires_at!.getTime(), "expire_time not moved").to.equal(date(extended.expireTime).getTime());
    });

    it("ReleaseHold of a lapsed hold succeeds with status EXPIRED (a HOLD_EXPIRED event, not HOLD_RELEASED); again is a no-op", async () => {
      const mark = await lastEventId();
      const cx = await counters(x);
      const requestId = rid("release-lapsed");
      const { reservation } = await grpc.releaseHold({ requestId, reservationId: released.id, reason: "too late" });
      expect(reservation!.status).to.equal(ReservationStatus.EXPIRED);
      expect(reservation!.closeReason).to.equal("expired");
      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([ev("HOLD_EXPIRED", x, released.id, { reserved: -3 })]);
      expect(events[0]).to.include({ request_id: requestId });
      expect(await counters(x)).to.deep.equal({ ...cx, reserved: cx.reserved - 3, available: cx.available + 3, version: cx.version + 1 });
      expect((await stored(released.id)).status).to.equal("EXPIRED");

      const before = await snapshot(released.id, [x]);
      const again = await grpc.releaseHold({ requestId: rid("release-expired"), reservationId: released.id });
      expect(again.reservation!.status).to.equal(ReservationStatus.EXPIRED);
      expect(await snapshot(released.id, [x])).to.deep.equal(before);
      // Releasing the hold that ConfirmHold expired is a no-op success too.
      const sweptBefore = await snapshot(confirmed.id, [x, y]);
      const swept = await grpc.releaseHold({ requestId: rid("release-swept"), reservationId: confirmed.id });
      expect(swept.reservation!.status).to.equal(ReservationStatus.EXPIRED);
      expect(await snapshot(confirmed.id, [x, y])).to.deep.equal(sweptBefore);
    });

    it("FulfillAllocation / CancelAllocation of a lapsed hold → INVALID_TRANSITION (status EXPIRED, type HOLD), nothing changes", async () => {
      const before = await snapshot(allocationOps.id, [y]);
      await expectInvalidTransition(grpc.fulfillAllocation({ requestId: rid("fulfill"), reservationId: allocationOps.id }), {
        id: allocationOps.id,
        status: "EXPIRED",
        type: "HOLD",
      });
      await expectInvalidTransition(grpc.cancelAllocation({ requestId: rid("cancel"), reservationId: allocationOps.id }), {
        id: allocationOps.id,
        status: "EXPIRED",
        type: "HOLD",
      });
      expect(await snapshot(allocationOps.id, [y])).to.deep.equal(before);
    });
  });

  describe("a hold that lapses while the call waits for its header lock", () => {
    // Expiry is judged when the header lock is granted (lifecycle.ts): a hold that was
    // live when the call's transaction began but lapsed while it waited for the lock
    // (held here by another transaction, as a concurrent transition would) is dead.
    // The call must then treat it exactly as a lapsed hold: expire it and return its
    // units in the same call ("recorded as EXPIRED" for ReleaseHold, contract).
    // The hold's TTL bounds the set-up (hold, lock, call waiting for the lock): far
    // more than it needs, and if it ever takes longer the test fails saying so.
    const TTL_S = 3;
    const calls = {
      ConfirmHold: (id: string) => grpc.confirmHold({ requestId: rid("confirm-race"), reservationId: id }),
      ExtendHold: (id: string) => grpc.extendHold({ requestId: rid("extend-race"), reservationId: id, ttl: secs(30) }),
      ReleaseHold: (id: string) => grpc.releaseHold({ requestId: rid("release-race"), reservationId: id }),
    };
    for (const [rpc, send] of Object.entries(calls)) {
      const outcome = rpc === "ReleaseHold" ? "succeeds with EXPIRED" : "is refused HOLD_EXPIRED";
      it(`${rpc} ${outcome} and expires the hold in the same call (HOLD_EXPIRED event, units returned)`, async () => {
        const sku = code("RACE");
        await seedSku(sku, 5);
        const held = await hold([{ sku, quantity: 2 }], TTL_S);
        const mark = await lastEventId();
        const trx = await knex.transaction();
        let pending: Promise<unknown> | undefined;
        try {
          await query(trx, `SELECT id FROM reservations WHERE id = ? FOR UPDATE`, [held.id]);
          const [live] = await query<{ live: boolean }>(trx, `SELECT clock_timestamp() < expires_at AS live FROM reservations WHERE id = ?`, [held.id]);
          expect(live!.live, "the hold must still be live when the call starts").to.equal(true);
          pending = send(held.id).then(
            (response) => response,
            (err: unknown) => err,
          );
          await untilALockWait(knex, `${rpc} waiting for the header lock`);
          // The call's transaction began before this point; it must have begun before the expiry.
          const [still] = await query<{ live: boolean }>(knex, `SELECT clock_timestamp() < expires_at AS live FROM reservations WHERE id = ?`, [held.id]);
          expect(still!.live, `the set-up (the call waiting for the header lock) took longer than the hold's ${TTL_S} s TTL`).to.equal(true);
          await untilLapsed([held.id]);
        } finally {
          await trx.commit();
        }
        const result = await pending!;
        if (rpc === "ReleaseHold") {
          expect(result, "ReleaseHold succeeds").to.not.be.instanceOf(Error);
          expect((result as { reservation?: Reservation }).reservation!.status).to.equal(ReservationStatus.EXPIRED);
        } else {
          expect(result).to.be.instanceOf(ConnectError);
          const err = result as ConnectError;
          expect({ code: Code[err.code], reason: errorInfo(err).reason }).to.deep.equal({ code: "FailedPrecondition", reason: "HOLD_EXPIRED" });
        }
        const row = await stored(held.id);
        expect(
          { status: row.status, events: (await eventsSince(mark)).map(shape), counters: await counters(sku) },
          `${rpc} answered as if the hold were expired, so it must have recorded it EXPIRED and returned its units in the same call`,
        ).to.deep.equal({
          status: "EXPIRED",
          events: [ev("HOLD_EXPIRED", sku, held.id, { reserved: -2 })],
          counters: { on_hand: 5, reserved: 0, allocated: 0, available: 5, version: 3 },
        });
      });
    }
  });

  // ---------------------------------------------------------------------------------
  // ALLOCATED -> FULFILLED / CANCELLED
  // ---------------------------------------------------------------------------------

  describe("ALLOCATED → FULFILLED (FulfillAllocation)", () => {
    it("fulfils a confirmed hold: on_hand and allocated both go down, ALLOCATION_FULFILLED; again is a no-op", async () => {
      const sku = code("FUL");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 3 }]);
      await grpc.confirmHold({ requestId: rid("confirm"), reservationId: held.id });
      const mark = await lastEventId();
      const requestId = rid("fulfill");
      const { reservation, replayed } = await grpc.fulfillAllocation({ requestId, reservationId: held.id });
      expect(replayed).to.equal(false);
      expect(reservation!.status).to.equal(ReservationStatus.FULFILLED);
      expect(reservation!.type).to.equal(ReservationType.HOLD);
      expect(reservation!.closeTime, "close_time").to.not.equal(undefined);
      expect(reservation!.confirmTime, "confirm_time kept").to.not.equal(undefined);
      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([ev("ALLOCATION_FULFILLED", sku, held.id, { onHand: -3, allocated: -3 })]);
      expect(events[0]).to.include({ actor: ACTOR, request_id: requestId, version_after: 4 });
      expect(await counters(sku)).to.deep.equal({ on_hand: 7, reserved: 0, allocated: 0, available: 7, version: 4 });
      expect((await stored(held.id)).line_statuses).to.deep.equal(["FULFILLED"]);

      const before = await snapshot(held.id, [sku]);
      const again = await grpc.fulfillAllocation({ requestId: rid("fulfill-again"), reservationId: held.id });
      expect(again.replayed).to.equal(false);
      expect(again.reservation!.status).to.equal(ReservationStatus.FULFILLED);
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
    });
  });

  describe("ALLOCATED → CANCELLED (CancelAllocation)", () => {
    it("cancels a confirmed hold: allocated → available, ALLOCATION_CANCELLED with the reason; again is a no-op", async () => {
      const sku = code("CAN");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 6 }]);
      await grpc.confirmHold({ requestId: rid("confirm"), reservationId: held.id });
      const mark = await lastEventId();
      const requestId = rid("cancel");
      const { reservation } = await grpc.cancelAllocation({ requestId, reservationId: held.id, reason: "payment failed" });
      expect(reservation!.status).to.equal(ReservationStatus.CANCELLED);
      expect(reservation!.closeReason).to.equal("payment failed");
      expect(reservation!.closeTime, "close_time").to.not.equal(undefined);
      const events = await eventsSince(mark);
      expect(events.map(shape)).to.deep.equal([ev("ALLOCATION_CANCELLED", sku, held.id, { allocated: -6 })]);
      expect(events[0]).to.include({ actor: ACTOR, request_id: requestId, reason: "payment failed", version_after: 4 });
      expect(await counters(sku)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 0, available: 10, version: 4 });

      const before = await snapshot(held.id, [sku]);
      const again = await grpc.cancelAllocation({ requestId: rid("cancel-again"), reservationId: held.id, reason: "other" });
      expect(again.reservation!.status).to.equal(ReservationStatus.CANCELLED);
      expect(again.reservation!.closeReason).to.equal("payment failed");
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
    });
  });

  describe("direct allocations (CreateAllocation)", () => {
    it("starts ALLOCATED, type ALLOCATION, confirm_time = create_time, no expire_time; ALLOCATION_CREATED", async () => {
      const sku = code("ALLOC");
      await seedSku(sku, 10);
      const mark = await lastEventId();
      const created = await allocation([{ sku, quantity: 4 }]);
      expect(created.status).to.equal(ReservationStatus.ALLOCATED);
      expect(created.type).to.equal(ReservationType.ALLOCATION);
      expect(created.expireTime, "expire_time").to.equal(undefined);
      expect(date(created.confirmTime).getTime()).to.equal(date(created.createTime).getTime());
      expect((await eventsSince(mark)).map(shape)).to.deep.equal([ev("ALLOCATION_CREATED", sku, created.id, { allocated: 4 })]);
      expect(await counters(sku)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 4, available: 6, version: 2 });
    });

    it("a direct allocation is fulfilled (ALLOCATION_FULFILLED) and cancelled (ALLOCATION_CANCELLED), each repeat a no-op", async () => {
      const sku = code("ALLOC-FC");
      await seedSku(sku, 10);
      const toFulfil = await allocation([{ sku, quantity: 2 }]);
      const toCancel = await allocation([{ sku, quantity: 3 }]);
      expect(await counters(sku)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 5, available: 5, version: 3 });

      let mark = await lastEventId();
      const fulfilled = (await grpc.fulfillAllocation({ requestId: rid("fulfill"), reservationId: toFulfil.id })).reservation!;
      expect(fulfilled.status).to.equal(ReservationStatus.FULFILLED);
      expect(fulfilled.type).to.equal(ReservationType.ALLOCATION);
      expect((await eventsSince(mark)).map(shape)).to.deep.equal([ev("ALLOCATION_FULFILLED", sku, toFulfil.id, { onHand: -2, allocated: -2 })]);
      expect(await counters(sku)).to.deep.equal({ on_hand: 8, reserved: 0, allocated: 3, available: 5, version: 4 });

      mark = await lastEventId();
      const cancelled = (await grpc.cancelAllocation({ requestId: rid("cancel"), reservationId: toCancel.id, reason: "order cancelled" })).reservation!;
      expect(cancelled.status).to.equal(ReservationStatus.CANCELLED);
      expect(cancelled.closeReason).to.equal("order cancelled");
      expect((await eventsSince(mark)).map(shape)).to.deep.equal([ev("ALLOCATION_CANCELLED", sku, toCancel.id, { allocated: -3 })]);
      expect(await counters(sku)).to.deep.equal({ on_hand: 8, reserved: 0, allocated: 0, available: 8, version: 5 });

      const before = [await snapshot(toFulfil.id, [sku]), await snapshot(toCancel.id, [sku])];
      expect((await grpc.fulfillAllocation({ requestId: rid("fulfill-again"), reservationId: toFulfil.id })).reservation!.status).to.equal(
        ReservationStatus.FULFILLED,
      );
      expect((await grpc.cancelAllocation({ requestId: rid("cancel-again"), reservationId: toCancel.id })).reservation!.status).to.equal(
        ReservationStatus.CANCELLED,
      );
      expect([await snapshot(toFulfil.id, [sku]), await snapshot(toCancel.id, [sku])]).to.deep.equal(before);
    });
  });

  // ---------------------------------------------------------------------------------
  // Every call in every state
  // ---------------------------------------------------------------------------------

  describe("illegal transitions: FAILED_PRECONDITION / INVALID_TRANSITION, nothing changes", () => {
    type Rpc = "ConfirmHold" | "ExtendHold" | "ReleaseHold" | "FulfillAllocation" | "CancelAllocation";
    const call: Record<Rpc, (id: string, requestId: string) => Promise<{ reservation?: Reservation; replayed: boolean }>> = {
      ConfirmHold: (id, requestId) => grpc.confirmHold({ requestId, reservationId: id }),
      ExtendHold: (id, requestId) => grpc.extendHold({ requestId, reservationId: id, ttl: secs(30) }),
      ReleaseHold: (id, requestId) => grpc.releaseHold({ requestId, reservationId: id, reason: "matrix" }),
      FulfillAllocation: (id, requestId) => grpc.fulfillAllocation({ requestId, reservationId: id }),
      CancelAllocation: (id, requestId) => grpc.cancelAllocation({ requestId, reservationId: id, reason: "matrix" }),
    };

    interface State {
      status: string;
      type: "HOLD" | "ALLOCATION";
      make(sku: string): Promise<string>;
      /** What each call does in this state: a no-op success or INVALID_TRANSITION (legal moves are tested above). */
      outcomes: Partial<Record<Rpc, "noop" | "invalid">>;
    }
    const heldHold = async (sku: string) => (await hold([{ sku, quantity: 1 }])).id;
    const confirmedHold = async (sku: string) => {
      const id = await heldHold(sku);
      await grpc.confirmHold({ requestId: rid("confirm"), reservationId: id });
      return id;
    };
    const directAllocation = async (sku: string) => (await allocation([{ sku, quantity: 1 }])).id;
    const then = (make: (sku: string) => Promise<string>, rpc: Rpc) => async (sku: string) => {
      const id = await make(sku);
      await call[rpc](id, rid("setup"));
      return id;
    };
    const states: Record<string, State> = {
      "HELD hold": { status: "HELD", type: "HOLD", make: heldHold, outcomes: { FulfillAllocation: "invalid", CancelAllocation: "invalid" } },
      "ALLOCATED hold": {
        status: "ALLOCATED",
        type: "HOLD",
        make: confirmedHold,
        outcomes: { ConfirmHold: "noop", ExtendHold: "invalid", ReleaseHold: "invalid" },
      },
      "ALLOCATED allocation": {
        status: "ALLOCATED",
        type: "ALLOCATION",
        make: directAllocation,
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "invalid" },
      },
      "RELEASED hold": {
        status: "RELEASED",
        type: "HOLD",
        make: then(heldHold, "ReleaseHold"),
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "noop", FulfillAllocation: "invalid", CancelAllocation: "invalid" },
      },
      "FULFILLED hold": {
        status: "FULFILLED",
        type: "HOLD",
        make: then(confirmedHold, "FulfillAllocation"),
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "invalid", FulfillAllocation: "noop", CancelAllocation: "invalid" },
      },
      "CANCELLED hold": {
        status: "CANCELLED",
        type: "HOLD",
        make: then(confirmedHold, "CancelAllocation"),
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "invalid", FulfillAllocation: "invalid", CancelAllocation: "noop" },
      },
      "FULFILLED allocation": {
        status: "FULFILLED",
        type: "ALLOCATION",
        make: then(directAllocation, "FulfillAllocation"),
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "invalid", FulfillAllocation: "noop", CancelAllocation: "invalid" },
      },
      "CANCELLED allocation": {
        status: "CANCELLED",
        type: "ALLOCATION",
        make: then(directAllocation, "CancelAllocation"),
        outcomes: { ConfirmHold: "invalid", ExtendHold: "invalid", ReleaseHold: "invalid", FulfillAllocation: "invalid", CancelAllocation: "noop" },
      },
    };

    for (const [name, state] of Object.entries(states)) {
      for (const [rpc, outcome] of Object.entries(state.outcomes) as [Rpc, "noop" | "invalid"][]) {
        const title =
          outcome === "invalid"
            ? `${rpc} on ${article(name)} ${name} → INVALID_TRANSITION (status ${state.status}, type ${state.type}, STATUS), recorded and replayed`
            : `${rpc} on ${article(name)} ${name} → success, no change`;
        it(title, async () => {
          const sku = code("MATRIX");
          await seedSku(sku, 10);
          const id = await state.make(sku);
          const before = await snapshot(id, [sku]);
          expect(before.reservation.status).to.equal(state.status);
          const requestId = rid("matrix");
          if (outcome === "invalid") {
            await expectInvalidTransition(call[rpc](id, requestId), { id, status: state.status, type: state.type });
            expect(await snapshot(id, [sku])).to.deep.equal(before);
            // FAILED_PRECONDITION is recorded: the same request replays it.
            const replay = await expectInvalidTransition(call[rpc](id, requestId), { id, status: state.status, type: state.type });
            expect(errorInfo(replay).metadata.replayed).to.equal("true");
          } else {
            const { reservation, replayed } = await call[rpc](id, requestId);
            expect(replayed).to.equal(false);
            expect(reservation!.id).to.equal(id);
            expect(ReservationStatus[reservation!.status]).to.equal(state.status);
            expect(ReservationType[reservation!.type]).to.equal(state.type);
          }
          expect(await snapshot(id, [sku])).to.deep.equal(before);
        });
      }
    }

    it("an unknown reservation id → NOT_FOUND / RESERVATION_NOT_FOUND on every lifecycle RPC (and GetReservation)", async () => {
      const id = randomUUID();
      const mark = await lastEventId();
      for (const rpc of Object.keys(call) as Rpc[]) {
        const { err, info } = await expectFailure(call[rpc](id, rid("unknown")), Code.NotFound, "RESERVATION_NOT_FOUND");
        expect(info.metadata.reservation_id, rpc).to.equal(id);
        const [resource] = err.findDetails(ResourceInfoSchema);
        expect(resource, `${rpc} ResourceInfo`).to.not.equal(undefined);
        expect(resource!.resourceName).to.equal(id);
      }
      const { info } = await expectFailure(grpc.getReservation({ reservationId: id }), Code.NotFound, "RESERVATION_NOT_FOUND");
      expect(info.metadata.reservation_id, "GetReservation").to.equal(id);
      expect(await lastEventId()).to.equal(mark);
    });
  });

  // ---------------------------------------------------------------------------------
  // ExtendHold
  // ---------------------------------------------------------------------------------

  describe("ExtendHold (server: HOLD_TTL_MAX_MS=60000, MAX_HOLD_LIFETIME_MS=90000)", () => {
    it("moves expire_time to now + ttl; no counter, version or ledger change; lines follow; the lifetime is create_time + 90 s", async () => {
      const sku = code("EXT");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 1 }], 10);
      const row0 = await stored(held.id);
      expect(row0.max_expires_at!.getTime() - row0.created_at.getTime(), "lifetime fixed at creation").to.equal(90_000);
      const before = { counters: await counters(sku), mark: await lastEventId() };

      const t0 = await dbClock();
      const { reservation, replayed } = await grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(30) });
      const t1 = await dbClock();
      expect(replayed).to.equal(false);
      expect(reservation!.status).to.equal(ReservationStatus.HELD);
      const expire = date(reservation!.expireTime).getTime();
      expect(expire, "expire_time = now + 30 s").to.be.within(t0.getTime() + 30_000 - 1, t1.getTime() + 30_000);
      expect(date(reservation!.updateTime).getTime()).to.be.greaterThan(date(held.updateTime).getTime());
      const row = await stored(held.id);
      expect(row.expires_at!.getTime()).to.equal(expire);
      expect(row.line_expires.map((d) => d?.getTime())).to.deep.equal([row.expires_at!.getTime()]);
      expect(await counters(sku)).to.deep.equal(before.counters);
      expect(await eventsSince(before.mark)).to.deep.equal([]);

      // Never earlier: a shorter ttl leaves expire_time where it is.
      const shorter = await grpc.extendHold({ requestId: rid("extend-short"), reservationId: held.id, ttl: secs(5) });
      expect(date(shorter.reservation!.expireTime).getTime()).to.equal(expire);
      expect((await stored(held.id)).expires_at!.getTime()).to.equal(expire);
      expect(await counters(sku)).to.deep.equal(before.counters);
      expect(await eventsSince(before.mark)).to.deep.equal([]);
    });

    it("replays an ExtendHold with the same request_id without extending again", async () => {
      const sku = code("EXT-REPLAY");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 1 }], 10);
      const requestId = rid("extend");
      const first = await grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(20) });
      await sleep(50);
      const replay = await grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(20) });
      expect(replay.replayed).to.equal(true);
      expect(replay.reservation).to.deep.equal(first.reservation);
      expect((await stored(held.id)).expires_at!.getTime()).to.equal(date(first.reservation!.expireTime).getTime());
    });

    for (const [label, ttl, bound] of [
      ["above the server maximum (61 s > 60 s)", 61, "max"],
      ["below the server minimum (0.5 s < 1 s)", 0.5, "min"],
    ] as const) {
      it(`a ttl ${label} → INVALID_ARGUMENT / TTL_OUT_OF_RANGE on "ttl", not recorded, nothing changes`, async () => {
        const sku = code("EXT-TTL");
        await seedSku(sku, 10);
        const held = await hold([{ sku, quantity: 1 }], 10);
        const before = await snapshot(held.id, [sku]);
        const requestId = rid("extend-bad");
        const { err, info } = await expectFailure(grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(ttl) }), Code.InvalidArgument, "TTL_OUT_OF_RANGE");
        expect(info.metadata).to.include({ min_ttl_ms: "1000", max_ttl_ms: "60000" });
        expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((f) => f.field)).to.deep.equal(["ttl"]);
        expect(await snapshot(held.id, [sku])).to.deep.equal(before);
        expect(await idempotencyRecords(requestId), `${bound}: INVALID_ARGUMENT is never recorded`).to.equal(0);
        // The request_id is still free: a valid request with it executes.
        const ok = await grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(20) });
        expect(ok.replayed).to.equal(false);
        expect(ok.reservation!.status).to.equal(ReservationStatus.HELD);
      });
    }

    it("a ttl outside the server's bounds is INVALID_ARGUMENT whatever the hold's state (a RELEASED hold too), and is not recorded", async () => {
      const sku = code("EXT-TTL-STATE");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 1 }], 10);
      await grpc.releaseHold({ requestId: rid("release"), reservationId: held.id });
      const requestId = rid("extend-released");
      await expectFailure(grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(61) }), Code.InvalidArgument, "TTL_OUT_OF_RANGE");
      expect(await idempotencyRecords(requestId)).to.equal(0);
      // With a valid ttl the same hold answers its state.
      await expectFailure(grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(20) }), Code.FailedPrecondition, "INVALID_TRANSITION");
    });

    it("a ttl above the SKU's max_hold_ttl → TTL_OUT_OF_RANGE naming the SKU; at the bound it succeeds", async () => {
      const sku = code("EXT-SKUMAX");
      await seedSku(sku, 10, { maxHoldTtlS: 20 });
      const held = await hold([{ sku, quantity: 1 }], 10);
      const before = await snapshot(held.id, [sku]);
      const { info } = await expectFailure(
        grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(25) }),
        Code.InvalidArgument,
        "TTL_OUT_OF_RANGE",
      );
      expect(info.metadata).to.include({ sku, max_ttl_ms: "20000", min_ttl_ms: "1000" });
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
      const ok = await grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(20) });
      expect(ok.reservation!.status).to.equal(ReservationStatus.HELD);
    });

    it("the ttl bound is the SKU's max_hold_ttl in force now (lowered after the hold was created)", async () => {
      const sku = code("EXT-NOW");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 1 }], 10);
      await setPolicy(sku, { maxHoldTtlS: 15 });
      const before = await snapshot(held.id, [sku]);
      const { info } = await expectFailure(
        grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(30) }),
        Code.InvalidArgument,
        "TTL_OUT_OF_RANGE",
      );
      expect(info.metadata).to.include({ sku, max_ttl_ms: "15000" });
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
      await grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(15) });
    });

    it("beyond the hold's lifetime → FAILED_PRECONDITION / HOLD_LIFETIME_EXCEEDED (EXPIRY, max_expire_time), recorded, nothing changes", async () => {
      const sku = code("EXT-LIFE");
      await seedSku(sku, 10, { maxHoldTtlS: 10, maxHoldLifetimeS: 10 });
      const held = await hold([{ sku, quantity: 1 }], 5);
      const maxExpire = date(held.createTime).getTime() + 10_000;
      expect((await stored(held.id)).max_expires_at!.getTime()).to.equal(maxExpire);
      const before = await snapshot(held.id, [sku]);
      const requestId = rid("extend-life");
      const { err, info } = await expectFailure(
        grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(10) }),
        Code.FailedPrecondition,
        "HOLD_LIFETIME_EXCEEDED",
      );
      expect(info.metadata.reservation_id).to.equal(held.id);
      expect(new Date(info.metadata.max_expire_time!).getTime()).to.equal(maxExpire);
      const [pf] = err.findDetails(PreconditionFailureSchema);
      expect(pf?.violations.map((v) => ({ type: v.type, subject: v.subject }))).to.deep.equal([{ type: "EXPIRY", subject: `reservation/${held.id}` }]);
      expect(await snapshot(held.id, [sku])).to.deep.equal(before);
      const replay = await expectFailure(grpc.extendHold({ requestId, reservationId: held.id, ttl: secs(10) }), Code.FailedPrecondition, "HOLD_LIFETIME_EXCEEDED");
      expect(replay.info.metadata.replayed).to.equal("true");
      // Within the lifetime it still succeeds: the longest whole-second ttl that, from the
      // database clock now, ends at least a second (for the call itself) before max_expire_time.
      const now = (await dbClock()).getTime();
      const ttlS = Math.floor((maxExpire - now - 1_000) / 1_000);
      expect(ttlS, `whole seconds left of the hold's lifetime (max_expire_time ${new Date(maxExpire).toISOString()}, now ${new Date(now).toISOString()})`).to.be.at.least(1);
      const ok = await grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(ttlS) });
      expect(date(ok.reservation!.expireTime).getTime()).to.be.within(now + ttlS * 1_000, maxExpire);
    });

    it("the lifetime is fixed at creation: raising the SKU's max_hold_lifetime later does not lengthen it", async () => {
      const sku = code("EXT-FIXED");
      await seedSku(sku, 10, { maxHoldTtlS: 10, maxHoldLifetimeS: 10 });
      const held = await hold([{ sku, quantity: 1 }], 5);
      await setPolicy(sku, { maxHoldLifetimeS: 3600 });
      const { info } = await expectFailure(
        grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(10) }),
        Code.FailedPrecondition,
        "HOLD_LIFETIME_EXCEEDED",
      );
      expect(new Date(info.metadata.max_expire_time!).getTime()).to.equal(date(held.createTime).getTime() + 10_000);
    });

    it("MAX_HOLD_LIFETIME_MS bounds the lifetime of a hold on a SKU without policy (second process, 60 s lifetime)", async () => {
      const second = await startService("reservation-service", db.url, { HOLD_TTL_MAX_MS: "60000", MAX_HOLD_LIFETIME_MS: "60000" });
      const client = createGrpcJsClient(InventoryReservationService, second.grpcAddress, undefined, testCaller);
      try {
        const sku = code("EXT-SERVER");
        await seedSku(sku, 10);
        const held = (await client.createHold({ requestId: rid("hold"), customerId: "cust-1", lines: [{ sku, quantity: 1 }], ttl: secs(30) })).reservation!;
        const maxExpire = date(held.createTime).getTime() + 60_000;
        const before = await snapshot(held.id, [sku]);
        const { info } = await expectFailure(
          client.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(60) }),
          Code.FailedPrecondition,
          "HOLD_LIFETIME_EXCEEDED",
        );
        expect(new Date(info.metadata.max_expire_time!).getTime()).to.equal(maxExpire);
        expect(await snapshot(held.id, [sku])).to.deep.equal(before);
        // The main process (90 s lifetime) judges the hold by the terms it was created with.
        await expectFailure(grpc.extendHold({ requestId: rid("extend"), reservationId: held.id, ttl: secs(60) }), Code.FailedPrecondition, "HOLD_LIFETIME_EXCEEDED");
      } finally {
        client.close();
        await second.stop();
      }
    });
  });

  // ---------------------------------------------------------------------------------
  // Same mapping on Connect
  // ---------------------------------------------------------------------------------

  describe("the same outcomes on a Connect client (HTTP/1.1)", () => {
    const normalise = (err: ConnectError) => {
      const info = errorInfo(err);
      return {
        code: err.code,
        reason: info.reason,
        metadata: info.metadata,
        preconditions: err.findDetails(PreconditionFailureSchema).flatMap((p) => p.violations.map((v) => ({ type: v.type, subject: v.subject, description: v.description }))),
        message: err.rawMessage,
      };
    };

    it("INVALID_TRANSITION, HOLD_EXPIRED and RESERVATION_NOT_FOUND carry the same code, reason, metadata and details", async () => {
      const sku = code("CONNECT");
      await seedSku(sku, 10);
      const released = await hold([{ sku, quantity: 1 }]);
      await grpc.releaseHold({ requestId: rid("release"), reservationId: released.id });
      const lapsed = await hold([{ sku, quantity: 1 }], 1);
      const lapsed2 = await hold([{ sku, quantity: 1 }], 1);
      await untilLapsed([lapsed.id, lapsed2.id]);

      const viaGrpc = await failure(grpc.confirmHold({ requestId: rid("c"), reservationId: released.id }));
      const viaConnect = await failure(connect.confirmHold({ requestId: rid("c"), reservationId: released.id }));
      expect(normalise(viaConnect)).to.deep.equal(normalise(viaGrpc));
      expect(normalise(viaConnect)).to.include({ code: Code.FailedPrecondition, reason: "INVALID_TRANSITION" });

      const expiredGrpc = await failure(grpc.confirmHold({ requestId: rid("c"), reservationId: lapsed.id }));
      const expiredConnect = await failure(connect.confirmHold({ requestId: rid("c"), reservationId: lapsed2.id }));
      expect(normalise(expiredConnect)).to.include({ code: Code.FailedPrecondition, reason: "HOLD_EXPIRED" });
      expect(normalise(expiredConnect).preconditions.map((p) => p.type)).to.deep.equal(normalise(expiredGrpc).preconditions.map((p) => p.type));
      expect(Object.keys(normalise(expiredConnect).metadata).sort()).to.deep.equal(Object.keys(normalise(expiredGrpc).metadata).sort());

      const unknown = randomUUID();
      const nfGrpc = await failure(grpc.fulfillAllocation({ requestId: rid("f"), reservationId: unknown }));
      const nfConnect = await failure(connect.fulfillAllocation({ requestId: rid("f"), reservationId: unknown }));
      expect(normalise(nfConnect)).to.deep.equal(normalise(nfGrpc));
      expect(nfConnect.findDetails(ResourceInfoSchema)).to.deep.equal(nfGrpc.findDetails(ResourceInfoSchema));
    });

    it("a Connect ConfirmHold succeeds with the same reservation a gRPC replay returns", async () => {
      const sku = code("CONNECT-OK");
      await seedSku(sku, 10);
      const held = await hold([{ sku, quantity: 2 }]);
      const requestId = rid("confirm");
      const viaConnect = await connect.confirmHold({ requestId, reservationId: held.id });
      expect(viaConnect.reservation!.status).to.equal(ReservationStatus.ALLOCATED);
      const viaGrpc = await grpc.confirmHold({ requestId, reservationId: held.id });
      expect(viaGrpc.replayed).to.equal(true);
      expect(viaGrpc.reservation).to.deep.equal(viaConnect.reservation);
      expect(await counters(sku)).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 2, available: 8, version: 3 });
    });
  });
});
