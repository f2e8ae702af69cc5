// The read RPCs (GetReservation, ListReservations, GetAvailability, ListAuditEvents,
// ListAvailabilitySnapshots) and CheckConsistency, over a real grpc-js client against
// the service process. Data is written with SQL (through the schema's own ledger
// statement where counters move), so these tests do not depend on the write RPCs.
import { randomUUID } from "node:crypto";
import { expect } from "chai";
import type { Knex } from "knex";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { TimestampSchema, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  AuditOperation,
  ConsistencyViolationKind as Kind,
  InventoryCounter as Counter,
  InventoryReservationService,
  ReservationStatus,
  ReservationType,
  type Reservation,
} from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { applyCounterChanges, createKnex, query, type CounterChange } from "@holdfast/schema";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { rejectionOf, rpcFailureOf } from "../support/assertions.js";
import { testCaller } from "../support/auth.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;
type ListRequest = Omit<Parameters<Client["listReservations"]>[0], "pageSize" | "pageToken" | "$typeName">;
type StoredStatus = "HELD" | "ALLOCATED" | "RELEASED" | "EXPIRED" | "FULFILLED" | "CANCELLED";

const ORIGIN = { actor: "admin:test", requestId: null };

/** ErrorInfo metadata of a failed RPC. */
async function errorMetadataOf(promise: PromiseLike<unknown>): Promise<Record<string, string>> {
  const err = await rejectionOf(promise);
  if (!(err instanceof ConnectError)) throw err;
  return err.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}

/** A Timestamp with microsecond precision (the server must not round it to milliseconds). */
function timestampOfMicros(us: bigint): Timestamp {
  return create(TimestampSchema, { seconds: us / 1_000_000n, nanos: Number(us % 1_000_000n) * 1000 });
}

/** Test data written with SQL, keeping the books straight unless a test breaks them on purpose. */
class Fixture {
  constructor(readonly knex: Knex) {}

  /** A SKU with its inventory row and its SKU_CREATED event (version 1). */
  async sku(code: string, onHand: number, policy: "STRICT_FIFO" | "FIRST_FIT" | null = null): Promise<void> {
    await query(this.knex, `INSERT INTO skus (code, name, waitlist_promotion_policy) VALUES (?, ?, ?)`, [code, `SKU ${code}`, policy]);
    await query(
      this.knex,
      `WITH inv AS (INSERT INTO inventory (sku_code, on_hand) VALUES (?, ?) RETURNING *)
       INSERT INTO audit_events (operation, sku_code, delta_on_hand, on_hand_before, reserved_before, allocated_before,
                                 on_hand_after, reserved_after, allocated_after, version_after, actor)
       SELECT 'SKU_CREATED', sku_code, on_hand, 0, 0, 0, on_hand, 0, 0, 1, 'admin:test' FROM inv`,
      [code, onHand],
    );
  }

  async changeCounters(changes: CounterChange[]): Promise<void> {
    const { refused } = await applyCounterChanges(this.knex, changes, ORIGIN);
    expect(refused, "counter changes refused").to.deep.equal([]);
  }

  /**
   * A reservation with its lines, and the counter changes (with their ledger events)
   * its status implies: HELD reserves, ALLOCATED allocates; closed reservations hold
   * nothing (their events would cancel out). `createdAt` is a timestamptz literal;
   * by default now() - createdAgoMs. Holds expire ttlMs after creation.
   */
  async reservation(spec: {
    lines: Record<string, number>;
    customer?: string;
    type?: "HOLD" | "ALLOCATION";
    status?: StoredStatus;
    createdAt?: string;
    createdAgoMs?: number;
    ttlMs?: number;
  }): Promise<string> {
    const type = spec.type ?? "HOLD";
    const status = spec.status ?? (type === "HOLD" ? "HELD" : "ALLOCATED");
    const [row] = await query<{ id: string }>(
      this.knex,
      `WITH p AS (
         SELECT coalesce(?::timestamptz, now() - ?::bigint * interval '1 millisecond') AS c,
                ?::text AS type, ?::text AS status, ?::bigint * interval '1 millisecond' AS ttl
       ), r AS (
         INSERT INTO reservations (type, status, customer_id, caller, request_id, locking_strategy, created_at, updated_at,
                                   expires_at, max_expires_at, confirmed_at, closed_at, close_reason)
         SELECT p.type, p.status, ?, 'service:test', ?, 'PESSIMISTIC', p.c, p.c,
                CASE WHEN p.type = 'HOLD' THEN p.c + p.ttl END,
                CASE WHEN p.type = 'HOLD' THEN p.c + p.ttl + interval '1 hour' END,
                CASE WHEN p.status IN ('ALLOCATED', 'FULFILLED', 'CANCELLED') THEN p.c END,
                CASE WHEN p.status IN ('RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED') THEN p.c END,
                CASE WHEN p.status = 'EXPIRED' THEN 'expired' END
           FROM p
         RETURNING *
       ), items AS (
         INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
         SELECT r.id, l.sku_code, l.quantity, r.status, r.expires_at, r.created_at
           FROM r, unnest(?::text[], ?::int[]) AS l(sku_code, quantity)
       )
       SELECT id FROM r`,
      [
        spec.createdAt ?? null,
        spec.createdAgoMs ?? 0,
        type,
        status,
        spec.ttlMs ?? 3_600_000,
        spec.customer ?? "c-1",
        randomUUID(),
        Object.keys(spec.lines),
        Object.values(spec.lines),
      ],
    );
    const lines = Object.entries(spec.lines);
    if (status === "HELD") {
      await this.changeCounters(lines.map(([sku, q]) => ({ sku, operation: "HOLD_CREATED", reservationId: row.id, reserved: q })));
    } else if (status === "ALLOCATED" && type === "HOLD") {
      await this.changeCounters([
        ...lines.map(([sku, q]) => ({ sku, operation: "HOLD_CREATED" as const, reservationId: row.id, reserved: q })),
        ...lines.map(([sku, q]) => ({ sku, operation: "HOLD_CONFIRMED" as const, reservationId: row.id, reserved: -q, allocated: q })),
      ]);
    } else if (status === "ALLOCATED") {
      await this.changeCounters(lines.map(([sku, q]) => ({ sku, operation: "ALLOCATION_CREATED", reservationId: row.id, allocated: q })));
    }
    return row.id;
  }

  /** A WAITING waitlist entry (and the SKU's waitlist counters). */
  async waiting(sku: string, customer: string, quantity: number): Promise<string> {
    const [row] = await query<{ id: string }>(
      this.knex,
      `WITH u AS (UPDATE inventory SET waitlist_count = waitlist_count + 1, waitlist_units = waitlist_units + ?, version = version + 1
                   WHERE sku_code = ? RETURNING sku_code)
       INSERT INTO waitlist_entries (sku_code, customer_id, quantity, caller, request_id)
       SELECT u.sku_code, ?, ?, 'service:test', ? FROM u
       RETURNING id`,
      [quantity, sku, customer, quantity, randomUUID()],
    );
    return row.id;
  }

  async dbMicros(): Promise<bigint> {
    const [row] = await query<{ us: string }>(this.knex, `SELECT ((extract(epoch from clock_timestamp()) * 1000000)::bigint)::text AS us`);
    return BigInt(row.us);
  }
}

/** The parts of a page token (page-token.ts): version, filter fingerprint, keyset. */
interface TokenParts {
  v: unknown;
  f: unknown;
  k: unknown[];
}

function tokenParts(token: string): TokenParts {
  expect(token, "a page token to take apart").to.not.equal("");
  const parts = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as TokenParts;
  expect(parts).to.have.all.keys("v", "f", "k");
  expect(parts.f, "filter fingerprint").to.be.a("string");
  expect(parts.k, "keyset").to.be.an("array");
  return parts;
}

/**
 * `token` (issued by the server) with its keyset replaced by `key`, keeping its
 * version and filter fingerprint: the forgery passes the fingerprint check, so only
 * the checks of the key itself can refuse it.
 */
function withKey(token: string, key: unknown[]): string {
  const { v, f } = tokenParts(token);
  return Buffer.from(JSON.stringify({ v, f, k: key })).toString("base64url");
}

/** Follows next_page_token to the end; returns every page. */
async function allPages<T>(fetch: (pageToken: string) => Promise<{ items: T[]; next: string }>): Promise<T[][]> {
  const pages: T[][] = [];
  let token = "";
  do {
    const { items, next } = await fetch(token);
    pages.push(items);
    token = next;
  } while (token !== "" && pages.length < 1000);
  return pages;
}

describe("reservation-service: reads", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  let client: Client;
  let fx: Fixture;

  before(async () => {
    db = await createTestDatabase("reads");
    svc = await startService("reservation-service", db.url);
    knex = createKnex({ url: db.url, poolMax: 2 });
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    fx = new Fixture(knex);
    await fx.sku("R-A", 1000);
    await fx.sku("R-B", 1000);
    await fx.sku("R-c", 1000); // lower case sorts after upper case in SKU order
  });
  after(async () => {
    client?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  describe("GetReservation", () => {
    it("returns a hold with its lines in SKU order", async () => {
      const id = await fx.reservation({ lines: { "R-c": 1, "R-A": 2, "R-B": 3 }, customer: "c-get" });
      const { reservation } = await client.getReservation({ reservationId: id });
      expect(reservation).to.include({ id, type: ReservationType.HOLD, status: ReservationStatus.HELD, customerId: "c-get", createdBy: "service:test", closeReason: "" });
      expect(reservation!.lines.map((l) => [l.sku, l.quantity])).to.deep.equal([
        ["R-A", 2],
        ["R-B", 3],
        ["R-c", 1],
      ]);
      expect(reservation!.expireTime).to.not.equal(undefined);
      expect(reservation!.closeTime).to.equal(undefined);
    });

    it("reports a HELD hold past its expire_time as EXPIRED before any sweep", async () => {
      const id = await fx.reservation({ lines: { "R-A": 1 }, createdAgoMs: 20_000, ttlMs: 10_000 });
      const { reservation } = await client.getReservation({ reservationId: id });
      expect(reservation).to.include({ status: ReservationStatus.EXPIRED, closeReason: "expired" });
      expect(timestampDate(reservation!.closeTime!).getTime()).to.equal(timestampDate(reservation!.expireTime!).getTime());
      const [stored] = await query<{ status: string }>(knex, `SELECT status FROM reservations WHERE id = ?`, [id]);
      expect(stored.status).to.equal("HELD");
    });

    it("answers NOT_FOUND for an unknown id and BAD_REQUEST for a malformed one", async () => {
      const unknown = randomUUID();
      expect(await rpcFailureOf(client.getReservation({ reservationId: unknown }))).to.include({ code: Code.NotFound, reason: "RESERVATION_NOT_FOUND" });
      expect(await errorMetadataOf(client.getReservation({ reservationId: unknown }))).to.include({ reservation_id: unknown });
      for (const bad of ["", "nope", unknown.toUpperCase()]) {
        expect(await rpcFailureOf(client.getReservation({ reservationId: bad }))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      }
    });
  });

  describe("ListReservations", () => {
    // Its own SKUs and customers so the other tests' rows do not interfere.
    const ids: Record<string, string> = {};

    before(async () => {
      await fx.sku("L-X", 1000);
      await fx.sku("L-Y", 1000);
      // Four created in one transaction-like instant (same created_at), two a microsecond
      // apart within one millisecond, and ordinary ones: pages must split ties by id and
      // keep microsecond order.
      const tie = "2024-01-01T00:00:00.000500Z";
      for (const n of [1, 2, 3, 4]) ids[`tie${n}`] = await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-1", createdAt: tie, type: "ALLOCATION" });
      ids.us1 = await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-2", createdAt: "2024-01-01T00:00:00.000501Z", type: "ALLOCATION" });
      ids.us2 = await fx.reservation({ lines: { "L-Y": 1 }, customer: "c-list-2", createdAt: "2024-01-01T00:00:00.000502Z", type: "ALLOCATION" });
      ids.held = await fx.reservation({ lines: { "L-X": 2, "L-Y": 1 }, customer: "c-list-1", createdAgoMs: 5_000 });
      ids.lapsed = await fx.reservation({ lines: { "L-Y": 2 }, customer: "c-list-2", createdAgoMs: 7_200_000, ttlMs: 3_600_000 });
      ids.expired = await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-1", createdAgoMs: 9_000_000, status: "EXPIRED", ttlMs: 60_000 });
      ids.released = await fx.reservation({ lines: { "L-Y": 1 }, customer: "c-list-2", createdAgoMs: 8_000_000, status: "RELEASED" });
      ids.confirmed = await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-1", createdAgoMs: 3_000, status: "ALLOCATED" });
      ids.fulfilled = await fx.reservation({ lines: { "L-Y": 4 }, customer: "c-list-2", createdAgoMs: 4_000, status: "FULFILLED", type: "ALLOCATION" });
    });

    async function listAll(req: ListRequest, pageSize: number): Promise<Reservation[][]> {
      return allPages(async (pageToken) => {
        const res = await client.listReservations({ ...req, pageSize, pageToken });
        expect(res.reservations.length).to.be.at.most(pageSize);
        return { items: res.reservations, next: res.nextPageToken };
      });
    }

    /** Every reservation of the L-* SKUs, in the contract's order, according to the database itself. */
    async function expectedOrder(): Promise<string[]> {
      const rows = await query<{ id: string }>(
        knex,
        `SELECT r.id FROM reservations r
          WHERE EXISTS (SELECT 1 FROM reservation_items i WHERE i.reservation_id = r.id AND i.sku_code IN ('L-X', 'L-Y'))
          ORDER BY r.created_at DESC, r.id DESC`,
      );
      return rows.map((r) => r.id);
    }

    const ours = (r: Reservation) => r.lines.some((l) => l.sku.startsWith("L-"));

    it("lists newest first across pages of every size, ties broken by id, microseconds kept", async () => {
      const expected = await expectedOrder();
      expect(expected).to.have.length(12);
      // The tie and microsecond rows are the oldest: us2, us1, then the four ties by id DESC.
      const tieIds = [ids.tie1, ids.tie2, ids.tie3, ids.tie4].sort().reverse();
      expect(expected.slice(-6)).to.deep.equal([ids.us2, ids.us1, ...tieIds]);
      for (const pageSize of [1, 2, 5, 1000]) {
        const pages = await listAll({}, pageSize);
        const got = pages.flat().filter(ours).map((r) => r.id);
        expect(got, `page_size ${pageSize}`).to.deep.equal(expected);
        expect(pages.at(-1)!.length).to.be.greaterThan(0);
      }
      // 0 = the default (50), all of ours on one page here.
      const page = await client.listReservations({ customerId: "c-list-1" });
      expect(page.nextPageToken).to.equal("");
    });

    it("paginates on each index path: customer, status, SKU, type", async () => {
      const all = (await listAll({}, 1000)).flat().filter(ours);
      const cases: [ListRequest, (r: Reservation) => boolean][] = [
        [{ customerId: "c-list-1" }, (r) => r.customerId === "c-list-1"],
        [{ statuses: [ReservationStatus.ALLOCATED] }, (r) => r.status === ReservationStatus.ALLOCATED],
        [{ statuses: [ReservationStatus.ALLOCATED, ReservationStatus.FULFILLED] }, (r) => [ReservationStatus.ALLOCATED, ReservationStatus.FULFILLED].includes(r.status)],
        [{ sku: "L-Y" }, (r) => r.lines.some((l) => l.sku === "L-Y")],
        [{ sku: "L-X", type: ReservationType.ALLOCATION }, (r) => r.lines.some((l) => l.sku === "L-X") && r.type === ReservationType.ALLOCATION],
        [{ type: ReservationType.HOLD, customerId: "c-list-2" }, (r) => r.type === ReservationType.HOLD && r.customerId === "c-list-2"],
        [{ sku: "L-X", statuses: [ReservationStatus.ALLOCATED], customerId: "c-list-1" }, (r) => r.lines.some((l) => l.sku === "L-X") && r.status === ReservationStatus.ALLOCATED && r.customerId === "c-list-1"],
      ];
      for (const [req, match] of cases) {
        const expected = all.filter(match).map((r) => r.id);
        expect(expected.length, JSON.stringify(req)).to.be.greaterThan(1);
        for (const pageSize of [1, 3]) {
          const got = (await listAll(req, pageSize)).flat().filter(ours).map((r) => r.id);
          expect(got, `${JSON.stringify(req)} page_size ${pageSize}`).to.deep.equal(expected);
        }
      }
    });

    it("filters on the status as reported: a lapsed HELD hold is EXPIRED, not HELD", async () => {
      const listed = async (statuses: ReservationStatus[]) =>
        (await listAll({ statuses }, 2)).flat().filter(ours).map((r) => [r.id, r.status] as const);
      expect(await listed([ReservationStatus.HELD])).to.deep.equal([[ids.held, ReservationStatus.HELD]]);
      expect(await listed([ReservationStatus.EXPIRED])).to.deep.equal([
        [ids.lapsed, ReservationStatus.EXPIRED],
        [ids.expired, ReservationStatus.EXPIRED],
      ]);
      expect(await listed([ReservationStatus.EXPIRED, ReservationStatus.HELD])).to.deep.equal([
        [ids.held, ReservationStatus.HELD],
        [ids.lapsed, ReservationStatus.EXPIRED],
        [ids.expired, ReservationStatus.EXPIRED],
      ]);
      // The same rule on the SKU path and the customer path.
      expect((await listAll({ statuses: [ReservationStatus.HELD], sku: "L-Y" }, 1)).flat().map((r) => r.id)).to.deep.equal([ids.held]);
      expect((await listAll({ statuses: [ReservationStatus.EXPIRED], customerId: "c-list-2" }, 1)).flat().map((r) => r.id)).to.deep.equal([ids.lapsed]);
    });

    it("keeps pages stable while reservations are inserted", async () => {
      const expected = (await listAll({ sku: "L-X" }, 1000)).flat().map((r) => r.id);
      const first = await client.listReservations({ sku: "L-X", pageSize: 3 });
      const newer = [
        await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-3" }),
        await fx.reservation({ lines: { "L-X": 1 }, customer: "c-list-3", type: "ALLOCATION" }),
      ];
      const rest = await allPages(async (token) => {
        const res = await client.listReservations({ sku: "L-X", pageSize: 3, pageToken: token || first.nextPageToken });
        return { items: res.reservations, next: res.nextPageToken };
      });
      const got = [...first.reservations, ...rest.flat()].map((r) => r.id);
      expect(got).to.deep.equal(expected);
      expect(got).to.not.include.members(newer);
      // A new first page shows them on top.
      const fresh = await client.listReservations({ sku: "L-X", pageSize: 2 });
      expect(fresh.reservations.map((r) => r.id)).to.deep.equal([...newer].reverse());
    });

    it("refuses a garbage page token and a token reused with other filters", async () => {
      const first = await client.listReservations({ customerId: "c-list-1", pageSize: 1 });
      expect(first.nextPageToken).to.not.equal("");
      // Another page_size is fine: it is not a filter.
      expect((await client.listReservations({ customerId: "c-list-1", pageSize: 2, pageToken: first.nextPageToken })).reservations).to.have.length(2);
      const other = [
        { customerId: "c-list-2" },
        { customerId: "c-list-1", statuses: [ReservationStatus.HELD] },
        { customerId: "c-list-1", sku: "L-X" },
        { customerId: "c-list-1", type: ReservationType.HOLD },
      ];
      for (const req of other) {
        expect(await rpcFailureOf(client.listReservations({ ...req, pageToken: first.nextPageToken })), JSON.stringify(req)).to.include({
          code: Code.InvalidArgument,
          reason: "INVALID_PAGE_TOKEN",
        });
      }
      for (const token of ["garbage!", "Z2FyYmFnZQ", first.nextPageToken.slice(0, -3)]) {
        expect(await rpcFailureOf(client.listReservations({ customerId: "c-list-1", pageToken: token })), token).to.include({
          code: Code.InvalidArgument,
          reason: "INVALID_PAGE_TOKEN",
        });
      }
    });

    it("refuses a token whose keyset was forged under the right filter fingerprint", async () => {
      const req = { customerId: "c-list-1" };
      const first = await client.listReservations({ ...req, pageSize: 1 });
      const [createdUs, id] = tokenParts(first.nextPageToken).k;
      expect(createdUs, "created_at in microseconds").to.be.a("number");
      expect(id, "reservation id").to.equal(first.reservations[0]!.id);
      // Control: the same key re-encoded is accepted, so the forgeries below differ only in their key.
      const again = await client.listReservations({ ...req, pageSize: 2, pageToken: withKey(first.nextPageToken, [createdUs, id]) });
      expect(again.reservations.map((r) => r.id)).to.deep.equal((await client.listReservations({ ...req, pageSize: 2, pageToken: first.nextPageToken })).reservations.map((r) => r.id));
      const keys: [string, unknown[]][] = [
        ["an id that is not a UUID", [createdUs, "not-a-uuid"]],
        ["an upper-case UUID", [createdUs, (id as string).toUpperCase()]],
        ["an id with a NUL", [createdUs, `${id as string}\u0000`]],
        ["a numeric id", [createdUs, 7]],
        ["created_at as a string", [String(createdUs), id]],
        ["a fractional created_at", [(createdUs as number) + 0.5, id]],
        ["a created_at beyond the safe integers", [Number.MAX_SAFE_INTEGER * 4, id]],
        ["a key part missing", [createdUs]],
        ["a key part too many", [createdUs, id, 1]],
      ];
      for (const [what, key] of keys) {
        expect(await rpcFailureOf(client.listReservations({ ...req, pageToken: withKey(first.nextPageToken, key) })), what).to.include({
          code: Code.InvalidArgument,
          reason: "INVALID_PAGE_TOKEN",
        });
      }
    });

    it("refuses bad filters with BAD_REQUEST", async () => {
      for (const req of [
        { pageSize: -1 },
        { customerId: "bad customer" },
        { sku: "bad/sku" },
        { statuses: [ReservationStatus.UNSPECIFIED] },
        { statuses: [42 as ReservationStatus] },
        { type: 9 as ReservationType },
      ]) {
        expect(await rpcFailureOf(client.listReservations(req)), JSON.stringify(req)).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      }
    });
  });

  describe("GetAvailability", () => {
    it("returns one entry per distinct SKU, in request order, from one read", async () => {
      await fx.reservation({ lines: { "R-B": 7 } });
      const before = Date.now();
      const res = await client.getAvailability({ skus: ["R-c", "R-B", "R-c", "R-A"] });
      expect(res.availabilities.map((a) => a.sku)).to.deep.equal(["R-c", "R-B", "R-A"]);
      const [row] = await query<{ on_hand: number; reserved: number; allocated: number; version: number }>(knex, `SELECT * FROM inventory WHERE sku_code = 'R-B'`);
      const b = res.availabilities[1];
      expect(b).to.include({ onHand: BigInt(row.on_hand), reserved: BigInt(row.reserved), allocated: BigInt(row.allocated), version: BigInt(row.version) });
      expect(b.available).to.equal(b.onHand - b.reserved - b.allocated);
      expect(Number(b.reserved)).to.be.greaterThanOrEqual(7);
      const asOf = timestampDate(res.asOf!).getTime();
      expect(asOf).to.be.within(before - 5_000, Date.now() + 5_000);
    });

    it("answers NOT_FOUND listing every unknown SKU", async () => {
      const req = { skus: ["R-A", "Nope-2", "Nope-1", "Nope-2"] };
      expect(await rpcFailureOf(client.getAvailability(req))).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
      expect(await errorMetadataOf(client.getAvailability(req))).to.include({ sku: "Nope-1,Nope-2" });
    });

    it("refuses no SKUs, a malformed SKU and more than 1000 SKUs", async () => {
      for (const skus of [[], ["bad sku"], Array.from({ length: 1001 }, (_, i) => `S${i}`)]) {
        expect(await rpcFailureOf(client.getAvailability({ skus })), String(skus.length)).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      }
    });
  });

  describe("ListAuditEvents", () => {
    let hold: string;
    let between: bigint;

    before(async () => {
      await fx.sku("E-1", 100);
      await fx.sku("E-2", 100);
      hold = await fx.reservation({ lines: { "E-1": 3, "E-2": 4 } });
      between = await fx.dbMicros();
      await fx.changeCounters([{ sku: "E-1", operation: "STOCK_ADJUSTED", onHand: 5, reason: "restock" }]);
      await fx.reservation({ lines: { "E-1": 1 }, type: "ALLOCATION" });
    });

    async function listAll(req: Parameters<Client["listAuditEvents"]>[0], pageSize: number) {
      return (
        await allPages(async (pageToken) => {
          const res = await client.listAuditEvents({ ...req, pageSize, pageToken });
          return { items: res.events, next: res.nextPageToken };
        })
      ).flat();
    }

    it("lists the ledger in ascending id order, by SKU, reservation, operation and time", async () => {
      const e1 = await listAll({ sku: "E-1" }, 2);
      expect(e1.map((e) => e.operation)).to.deep.equal([
        AuditOperation.SKU_CREATED,
        AuditOperation.HOLD_CREATED,
        AuditOperation.STOCK_ADJUSTED,
        AuditOperation.ALLOCATION_CREATED,
      ]);
      const idsInOrder = e1.map((e) => e.id);
      expect(idsInOrder).to.deep.equal([...idsInOrder].sort((a, b) => (a < b ? -1 : 1)));
      expect(e1[2]).to.include({ sku: "E-1", onHandDelta: 5n, onHandBefore: 100n, onHandAfter: 105n, reason: "restock", actor: "admin:test" });

      const byHold = await listAll({ reservationId: hold }, 1);
      expect(byHold.map((e) => [e.sku, e.reservedDelta])).to.deep.equal([
        ["E-1", 3n],
        ["E-2", 4n],
      ]);
      expect(byHold.every((e) => e.reservationId === hold)).to.equal(true);

      const ops = await listAll({ sku: "E-1", operations: [AuditOperation.STOCK_ADJUSTED, AuditOperation.SKU_CREATED] }, 1);
      expect(ops.map((e) => e.operation)).to.deep.equal([AuditOperation.SKU_CREATED, AuditOperation.STOCK_ADJUSTED]);

      const after = await listAll({ sku: "E-1", startTime: timestampOfMicros(between) }, 1);
      expect(after.map((e) => e.operation)).to.deep.equal([AuditOperation.STOCK_ADJUSTED, AuditOperation.ALLOCATION_CREATED]);
      const beforeIt = await listAll({ sku: "E-1", endTime: timestampOfMicros(between) }, 1);
      expect(beforeIt.map((e) => e.operation)).to.deep.equal([AuditOperation.SKU_CREATED, AuditOperation.HOLD_CREATED]);

      // The whole ledger, unfiltered, contains them in the same relative order.
      const all = (await listAll({}, 7)).filter((e) => e.sku === "E-1").map((e) => e.id);
      expect(all).to.deep.equal(idsInOrder);
    });

    it("refuses end before start, bad filters and foreign page tokens", async () => {
      const now = BigInt(Date.now()) * 1000n;
      expect(await rpcFailureOf(client.listAuditEvents({ startTime: timestampOfMicros(now), endTime: timestampOfMicros(now - 1n) }))).to.include({
        code: Code.InvalidArgument,
        reason: "BAD_REQUEST",
      });
      // An empty window is not an error.
      expect((await client.listAuditEvents({ startTime: timestampOfMicros(now), endTime: timestampOfMicros(now) })).events).to.deep.equal([]);
      for (const req of [{ reservationId: "x" }, { operations: [AuditOperation.UNSPECIFIED] }, { sku: "no way" }, { pageSize: -5 }]) {
        expect(await rpcFailureOf(client.listAuditEvents(req)), JSON.stringify(req)).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      }
      const first = await client.listAuditEvents({ sku: "E-1", pageSize: 1 });
      expect(await rpcFailureOf(client.listAuditEvents({ sku: "E-2", pageToken: first.nextPageToken }))).to.include({ reason: "INVALID_PAGE_TOKEN" });
      const listToken = (await client.listReservations({ pageSize: 1 })).nextPageToken;
      expect(await rpcFailureOf(client.listAuditEvents({ pageToken: listToken }))).to.include({ reason: "INVALID_PAGE_TOKEN" });
    });
  });

  describe("ListAvailabilitySnapshots", () => {
    const T1 = "2025-03-01T10:00:00.000001Z";
    const T1b = "2025-03-01T10:00:00.000002Z"; // same millisecond, one microsecond later
    const T2 = "2025-03-01T11:00:00.000000Z";
    const runs = { a: randomUUID(), b: randomUUID(), c: randomUUID(), d: randomUUID() };
    let expected: [string, string, string][]; // [run, sku, taken_at]

    before(async () => {
      await fx.sku("P-1", 10);
      await fx.sku("P-2", 20);
      await fx.sku("P-10", 30);
      const snap = (run: string, takenAt: string, sku: string) =>
        query(
          knex,
          `INSERT INTO inventory_snapshots (snapshot_run_id, taken_at, sku_code, on_hand, reserved, allocated, available, version,
                                            waitlist_count, waitlist_units, inventory_updated_at, trigger)
           VALUES (?, ?, ?, 10, 1, 2, 7, 3, 0, 0, ?, 'SCHEDULED')`,
          [run, takenAt, sku, takenAt],
        );
      // Recorded out of order on purpose: the listing orders them, not insertion.
      await snap(runs.d, T2, "P-1");
      await snap(runs.b, T1, "P-1"); // same taken_at and SKU as run a: recording order (id) decides
      await snap(runs.a, T1, "P-2");
      await snap(runs.a, T1, "P-1");
      await snap(runs.c, T1b, "P-1");
      await snap(runs.a, T1, "P-10");
      expected = [
        [runs.b, "P-1", T1],
        [runs.a, "P-1", T1],
        [runs.a, "P-10", T1],
        [runs.a, "P-2", T1],
        [runs.c, "P-1", T1b],
        [runs.d, "P-1", T2],
      ];
    });

    async function listAll(req: Parameters<Client["listAvailabilitySnapshots"]>[0], pageSize: number) {
      return (
        await allPages(async (pageToken) => {
          const res = await client.listAvailabilitySnapshots({ ...req, pageSize, pageToken });
          return { items: res.snapshots, next: res.nextPageToken };
        })
      ).flat();
    }

    it("lists oldest first, then SKU order, then recording order, across pages", async () => {
      for (const pageSize of [1, 2, 4, 100]) {
        const got = await listAll({}, pageSize);
        expect(got.map((s) => [s.snapshotRunId, s.availability!.sku]), `page_size ${pageSize}`).to.deep.equal(expected.map(([run, sku]) => [run, sku]));
      }
      const first = (await listAll({}, 100))[0];
      expect(first.availability).to.include({ onHand: 10n, reserved: 1n, allocated: 2n, available: 7n, version: 3n });
      expect(first.id).to.match(/^\d+$/);
    });

    it("filters by SKU and by time window, to the microsecond", async () => {
      for (const pageSize of [1, 3]) {
        const p1 = await listAll({ sku: "P-1" }, pageSize);
        expect(p1.map((s) => s.snapshotRunId)).to.deep.equal([runs.b, runs.a, runs.c, runs.d]);
      }
      const us = (iso: string) => BigInt(Date.parse(`${iso.slice(0, 23)}Z`)) * 1000n + BigInt(iso.slice(23, 26));
      const fromT1b = await listAll({ startTime: timestampOfMicros(us(T1b)) }, 1);
      expect(fromT1b.map((s) => s.snapshotRunId)).to.deep.equal([runs.c, runs.d]);
      const beforeT1b = await listAll({ endTime: timestampOfMicros(us(T1b)) }, 2);
      expect(beforeT1b.map((s) => s.snapshotRunId)).to.deep.equal([runs.b, runs.a, runs.a, runs.a]);
      const window = await listAll({ sku: "P-1", startTime: timestampOfMicros(us(T1b)), endTime: timestampOfMicros(us(T2)) }, 1);
      expect(window.map((s) => s.snapshotRunId)).to.deep.equal([runs.c]);
    });

    it("refuses end before start and a token minted for another SKU", async () => {
      const t = BigInt(Date.parse(T2)) * 1000n;
      expect(await rpcFailureOf(client.listAvailabilitySnapshots({ startTime: timestampOfMicros(t), endTime: timestampOfMicros(t - 1n) }))).to.include({
        code: Code.InvalidArgument,
        reason: "BAD_REQUEST",
      });
      const first = await client.listAvailabilitySnapshots({ sku: "P-1", pageSize: 1 });
      expect(await rpcFailureOf(client.listAvailabilitySnapshots({ sku: "P-2", pageToken: first.nextPageToken }))).to.include({ reason: "INVALID_PAGE_TOKEN" });
      expect(await rpcFailureOf(client.listAvailabilitySnapshots({ pageToken: "%%%" }))).to.include({ reason: "INVALID_PAGE_TOKEN" });
    });

    it("refuses a token whose keyset was forged under the right filter fingerprint", async () => {
      // No SKU filter: the key's SKU is a bound of the scan.
      const first = await client.listAvailabilitySnapshots({ pageSize: 1 });
      const [takenUs, sku, id] = tokenParts(first.nextPageToken).k;
      expect([typeof takenUs, sku, typeof id]).to.deep.equal(["number", expected[0]![1], "number"]);
      // Control: the same key re-encoded is accepted.
      const again = await client.listAvailabilitySnapshots({ pageSize: 1, pageToken: withKey(first.nextPageToken, [takenUs, sku, id]) });
      expect(again.snapshots.map((s) => [s.snapshotRunId, s.availability!.sku])).to.deep.equal([[expected[1]![0], expected[1]![1]]]);
      const keys: [string, unknown[]][] = [
        ["a SKU with a NUL", [takenUs, `${sku as string}\u0000`, id]],
        ["a SKU that is only a NUL", [takenUs, "\u0000", id]],
        ["a SKU with a slash", [takenUs, "P/1", id]],
        ["an empty SKU", [takenUs, "", id]],
        ["a SKU longer than 64 characters", [takenUs, "P".repeat(65), id]],
        ["a numeric SKU", [takenUs, 1, id]],
        ["an id as a string", [takenUs, sku, String(id)]],
        ["taken_at as a string", [String(takenUs), sku, id]],
        ["a key part missing", [takenUs, sku]],
      ];
      for (const [what, key] of keys) {
        expect(await rpcFailureOf(client.listAvailabilitySnapshots({ pageToken: withKey(first.nextPageToken, key) })), what).to.include({
          code: Code.InvalidArgument,
          reason: "INVALID_PAGE_TOKEN",
        });
      }
    });
  });

  describe("ListSkus page tokens", () => {
    it("refuses a token whose SKU key was forged under the right filter fingerprint", async () => {
      const req = { codePrefix: "R-" };
      const first = await client.listSkus({ ...req, pageSize: 1 });
      expect(first.skus.map((s) => s.code)).to.deep.equal(["R-A"]);
      const [code] = tokenParts(first.nextPageToken).k;
      expect(code).to.equal("R-A");
      // Control: the same key re-encoded is accepted (SKU order: R-A < R-B < R-c).
      const again = await client.listSkus({ ...req, pageSize: 1, pageToken: withKey(first.nextPageToken, [code]) });
      expect(again.skus.map((s) => s.code)).to.deep.equal(["R-B"]);
      const keys: [string, unknown[]][] = [
        ["a code with a NUL", ["R-A\u0000"]],
        ["a code that is only a NUL", ["\u0000"]],
        ["a code with a slash", ["R/A"]],
        ["a code longer than 64 characters", ["R".repeat(65)]],
        ["a numeric code", [1]],
        ["no key", []],
      ];
      for (const [what, key] of keys) {
        expect(await rpcFailureOf(client.listSkus({ ...req, pageToken: withKey(first.nextPageToken, key) })), what).to.include({
          code: Code.InvalidArgument,
          reason: "INVALID_PAGE_TOKEN",
        });
      }
    });
  });
});

describe("reservation-service: CheckConsistency", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  let client: Client;
  let fx: Fixture;

  before(async () => {
    // A database of its own: "empty = every SKU" must only see the books built here.
    db = await createTestDatabase("consistency");
    svc = await startService("reservation-service", db.url, { OVERDUE_HOLD_GRACE_MS: "60000" });
    knex = createKnex({ url: db.url, poolMax: 2 });
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    fx = new Fixture(knex);
  });
  after(async () => {
    client?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  const summary = (vs: { sku: string; kind: Kind; counter: Counter; expected: bigint; actual: bigint; reservationId: string; waitlistEntryId: string }[]) =>
    vs.map((v) => ({ sku: v.sku, kind: Kind[v.kind], counter: Counter[v.counter], expected: v.expected, actual: v.actual, reservationId: v.reservationId, waitlistEntryId: v.waitlistEntryId }));

  it("finds nothing wrong with consistent books, for every SKU or the named ones", async () => {
    await fx.sku("C-ok", 50);
    await fx.sku("C-ok2", 50, "FIRST_FIT");
    await fx.reservation({ lines: { "C-ok": 3, "C-ok2": 4 } });
    await fx.reservation({ lines: { "C-ok": 5 }, status: "ALLOCATED" });
    await fx.reservation({ lines: { "C-ok2": 6 }, type: "ALLOCATION" });
    await fx.reservation({ lines: { "C-ok": 2 }, status: "RELEASED" });
    // Expired within the grace: not overdue yet.
    await fx.reservation({ lines: { "C-ok": 1 }, createdAgoMs: 20_000, ttlMs: 10_000 });
    // Waiting for more than is available: nothing to promote.
    await fx.waiting("C-ok", "w-1", 100);

    const before = Date.now();
    const all = await client.checkConsistency({});
    expect(summary(all.violations)).to.deep.equal([]);
    expect(all).to.include({ consistent: true, skusChecked: 2n });
    expect(timestampDate(all.asOf!).getTime()).to.be.within(before - 5_000, Date.now() + 5_000);
    const one = await client.checkConsistency({ skus: ["C-ok2", "C-ok2"] });
    expect(one).to.include({ consistent: true, skusChecked: 1n });
  });

  it("answers NOT_FOUND listing every unknown SKU, and BAD_REQUEST for a malformed one", async () => {
    const req = { skus: ["C-ok", "C-none-b", "C-none-a"] };
    expect(await rpcFailureOf(client.checkConsistency(req))).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
    expect(await errorMetadataOf(client.checkConsistency(req))).to.include({ sku: "C-none-a,C-none-b" });
    expect(await rpcFailureOf(client.checkConsistency({ skus: ["x y"] }))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
  });

  it("reports counters that disagree with the lines and the ledger", async () => {
    await fx.sku("C-res", 50);
    await fx.reservation({ lines: { "C-res": 4 } });
    await fx.sku("C-alloc", 50);
    await fx.reservation({ lines: { "C-alloc": 6 }, type: "ALLOCATION" });
    await fx.sku("C-hand", 50);
    // Changed outside the ledger (the CHECKs still hold).
    await query(knex, `UPDATE inventory SET reserved = reserved + 2 WHERE sku_code = 'C-res'`);
    await query(knex, `UPDATE inventory SET allocated = allocated - 1 WHERE sku_code = 'C-alloc'`);
    await query(knex, `UPDATE inventory SET on_hand = on_hand + 9 WHERE sku_code = 'C-hand'`);

    const res = await client.checkConsistency({ skus: ["C-res", "C-hand", "C-alloc"] });
    expect(res).to.include({ consistent: false, skusChecked: 3n });
    const none = { reservationId: "", waitlistEntryId: "" };
    expect(summary(res.violations)).to.deep.equal([
      { sku: "C-alloc", kind: "ALLOCATED_MISMATCH", counter: "ALLOCATED", expected: 6n, actual: 5n, ...none },
      { sku: "C-alloc", kind: "LEDGER_MISMATCH", counter: "ALLOCATED", expected: 6n, actual: 5n, ...none },
      { sku: "C-hand", kind: "LEDGER_MISMATCH", counter: "ON_HAND", expected: 50n, actual: 59n, ...none },
      { sku: "C-res", kind: "RESERVED_MISMATCH", counter: "RESERVED", expected: 4n, actual: 6n, ...none },
      { sku: "C-res", kind: "LEDGER_MISMATCH", counter: "RESERVED", expected: 4n, actual: 6n, ...none },
    ]);
    expect(res.violations[0].detail).to.include("allocated is 5");
  });

  it("reports a line whose status differs from its reservation's", async () => {
    await fx.sku("C-line", 50);
    await fx.sku("C-line2", 50);
    const hold = await fx.reservation({ lines: { "C-line": 2, "C-line2": 3 } });
    // The header is released (counters returned through the ledger) but one line stays HELD.
    await query(knex, `UPDATE reservations SET status = 'RELEASED', closed_at = now() WHERE id = ?`, [hold]);
    await query(knex, `UPDATE reservation_items SET status = 'RELEASED' WHERE reservation_id = ? AND sku_code = 'C-line2'`, [hold]);
    await fx.changeCounters([
      { sku: "C-line", operation: "HOLD_RELEASED", reservationId: hold, reserved: -2 },
      { sku: "C-line2", operation: "HOLD_RELEASED", reservationId: hold, reserved: -3 },
    ]);
    // An allocation whose line says HELD.
    const alloc = await fx.reservation({ lines: { "C-line2": 5 }, type: "ALLOCATION" });
    await query(knex, `UPDATE reservation_items SET status = 'HELD', expires_at = now() + interval '1 hour' WHERE reservation_id = ?`, [alloc]);

    const res = await client.checkConsistency({ skus: ["C-line", "C-line2"] });
    expect(summary(res.violations)).to.deep.equal([
      { sku: "C-line", kind: "RESERVED_MISMATCH", counter: "RESERVED", expected: 0n, actual: 2n, reservationId: hold, waitlistEntryId: "" },
      { sku: "C-line2", kind: "RESERVED_MISMATCH", counter: "RESERVED", expected: 0n, actual: 5n, reservationId: alloc, waitlistEntryId: "" },
      { sku: "C-line2", kind: "ALLOCATED_MISMATCH", counter: "ALLOCATED", expected: 5n, actual: 0n, reservationId: alloc, waitlistEntryId: "" },
    ]);
    expect(res.violations[0].detail).to.include("HELD").and.include("RELEASED");
  });

  it("reports a HELD hold overdue by more than the grace", async () => {
    await fx.sku("C-late", 50);
    await fx.sku("C-late2", 50);
    const overdue = await fx.reservation({ lines: { "C-late": 1, "C-late2": 1 }, createdAgoMs: 7_200_000, ttlMs: 3_600_000 });
    await fx.reservation({ lines: { "C-late": 1 }, createdAgoMs: 30_000, ttlMs: 10_000 }); // within the grace
    const res = await client.checkConsistency({ skus: ["C-late", "C-late2"] });
    expect(summary(res.violations)).to.deep.equal([
      { sku: "C-late", kind: "OVERDUE_HOLD", counter: "UNSPECIFIED", expected: 0n, actual: 0n, reservationId: overdue, waitlistEntryId: "" },
      { sku: "C-late2", kind: "OVERDUE_HOLD", counter: "UNSPECIFIED", expected: 0n, actual: 0n, reservationId: overdue, waitlistEntryId: "" },
    ]);
    // Its units still count in reserved until the sweep: no counter violation.
    expect(res.violations[0].detail).to.include(overdue);
  });

  it("reports a missed waitlist promotion per the SKU's policy", async () => {
    await fx.sku("C-fifo", 10, "STRICT_FIFO");
    await fx.sku("C-default", 10);
    await fx.sku("C-fit", 10, "FIRST_FIT");
    await fx.sku("C-blocked", 10, "STRICT_FIFO");
    const fifoHead = await fx.waiting("C-fifo", "w-1", 4);
    await fx.waiting("C-fifo", "w-2", 1);
    const defaultHead = await fx.waiting("C-default", "w-1", 10);
    await fx.waiting("C-fit", "w-1", 11);
    const fits = await fx.waiting("C-fit", "w-2", 3);
    await fx.waiting("C-fit", "w-3", 2);
    await fx.waiting("C-blocked", "w-1", 11); // the head does not fit: it blocks the others
    await fx.waiting("C-blocked", "w-2", 1);

    const res = await client.checkConsistency({ skus: ["C-fifo", "C-default", "C-fit", "C-blocked"] });
    const kinds = summary(res.violations).map((v) => [v.sku, v.kind, v.waitlistEntryId]);
    expect(kinds).to.deep.equal([
      ["C-default", "WAITLIST_NOT_PROMOTED", defaultHead],
      ["C-fifo", "WAITLIST_NOT_PROMOTED", fifoHead],
      ["C-fit", "WAITLIST_NOT_PROMOTED", fits],
    ]);
    expect(res.violations[2].detail).to.include("position 2");
  });

  it("orders violations by SKU then kind, and reports negative counters and a wrong available", async () => {
    // The schema forbids both states (CHECKs, a generated column); this database is
    // loosened on purpose to prove the check would see them. Last test of the file.
    await fx.sku("C-neg", 10);
    const late = await fx.reservation({ lines: { "C-neg": 1 }, createdAgoMs: 7_200_000, ttlMs: 3_600_000 });
    await query(knex, `ALTER TABLE inventory DROP CONSTRAINT inventory_reserved_non_negative`);
    await query(knex, `ALTER TABLE inventory DROP CONSTRAINT inventory_not_oversold`);
    await query(knex, `ALTER TABLE inventory ALTER COLUMN available DROP EXPRESSION`);
    await query(knex, `UPDATE inventory SET reserved = -2, available = -1 WHERE sku_code = 'C-neg'`);

    const res = await client.checkConsistency({ skus: ["C-ok2", "C-neg"] });
    expect(summary(res.violations).map((v) => [v.sku, v.kind, v.counter, v.expected, v.actual])).to.deep.equal([
      ["C-neg", "RESERVED_MISMATCH", "RESERVED", 1n, -2n],
      ["C-neg", "NEGATIVE_COUNTER", "RESERVED", 0n, -2n],
      ["C-neg", "NEGATIVE_COUNTER", "AVAILABLE", 0n, -1n],
      ["C-neg", "LEDGER_MISMATCH", "RESERVED", 1n, -2n],
      ["C-neg", "OVERDUE_HOLD", "UNSPECIFIED", 0n, 0n],
      ["C-neg", "AVAILABLE_MISMATCH", "AVAILABLE", 12n, -1n],
    ]);
    expect(res.violations[4].reservationId).to.equal(late);
    expect(res.skusChecked).to.equal(2n);
  });
});
