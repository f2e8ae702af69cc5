// Edges of the write path found by review: request ids that outlive their
// idempotency record, lock timeouts that name what was waited for, policy durations
// with sub-millisecond fractions.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService, LockingStrategy } from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf } from "../support/assertions.js";
import { range } from "../support/calls.js";
import { assertInvariants } from "../support/invariants.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { testCaller } from "../support/auth.js";
import { untilALockWait } from "../support/wait.js";

type Grpc = GrpcJsClient<typeof InventoryReservationService>;
const rid = (label: string) => `${label}-${randomUUID()}`;
const failureOf = async (promise: PromiseLike<unknown>) => ConnectError.from(await rejectionOf(promise));

/** A reservation-service process on a database of its own, with one SKU of 10 units. */
function serviceFixture(label: string, env: NodeJS.ProcessEnv, sku: string) {
  const fx = {} as { db: TestDatabase; sql: Knex; svc: ServiceProcess; client: Grpc };
  before(async () => {
    fx.db = await createTestDatabase(label);
    fx.sql = createKnex({ url: fx.db.url, poolMax: 3 });
    fx.svc = await startService("reservation-service", fx.db.url, env);
    fx.client = createGrpcJsClient(InventoryReservationService, fx.svc.grpcAddress, undefined, testCaller);
    await fx.client.createSku({ requestId: rid("sku"), sku, name: sku, initialOnHand: 10n });
  });
  after(async () => {
    fx.client?.close();
    await fx.svc?.stop();
    await fx.sql?.destroy();
    await fx.db?.drop();
  });
  return fx;
}

describe("reservation-service: edges of idempotency and locking", () => {
  // A one-second idempotency window and a short lock timeout make both edges reachable quickly.
  const fx = serviceFixture("edges", { IDEMPOTENCY_WINDOW_MS: "1000", LOCK_TIMEOUT_MS: "300" }, "EDGE-A");

  /** Waits until the database clock is past `instant` (the window is judged by it). */
  async function untilDatabasePasses(instant: Date): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const [row] = await query<{ past: boolean }>(fx.sql, `SELECT now() > ?::timestamptz AS past`, [instant]);
      if (row!.past) return;
      await sleep(50);
    }
    throw new Error(`database clock never passed ${instant.toISOString()}`);
  }

  it("keeps a request id attached to a reservation taken after its record's window, for every RPC", async () => {
    const requestId = rid("attached");
    const hold = await fx.client.createHold({ requestId, customerId: "c-1", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    const [record] = await query<{ expires_at: Date }>(fx.sql, `SELECT expires_at FROM idempotency_records WHERE request_id = ?`, [requestId]);
    await untilDatabasePasses(record!.expires_at);
    const before = await query(fx.sql, `SELECT on_hand, reserved, version FROM inventory WHERE sku_code = 'EDGE-A'`);

    // The identical request, and other RPCs under the same id: all refused, naming the reservation.
    for (const call of [
      () => fx.client.createHold({ requestId, customerId: "c-1", lines: [{ sku: "EDGE-A", quantity: 1 }] }),
      // (Request ids are scoped per caller: these are all the checkout service's RPCs.)
      () => fx.client.createAllocation({ requestId, customerId: "c-1", lines: [{ sku: "EDGE-A", quantity: 1 }] }),
      () => fx.client.releaseHold({ requestId, reservationId: hold.reservation!.id }),
    ]) {
      const failure = await failureOf(call());
      expect(failure.code).to.equal(Code.InvalidArgument);
      const info = failure.findDetails(ErrorInfoSchema)[0];
      expect(info?.reason).to.equal("IDEMPOTENCY_KEY_REUSED");
      expect(info?.metadata.reservation_id).to.equal(hold.reservation!.id);
    }
    expect(await query(fx.sql, `SELECT on_hand, reserved, version FROM inventory WHERE sku_code = 'EDGE-A'`)).to.deep.equal(before);
    expect((await fx.client.getReservation({ reservationId: hold.reservation!.id })).reservation?.status).to.equal(hold.reservation!.status);
  });

  it("forgets other request ids after the window: the same AdjustStock applies again", async () => {
    const requestId = rid("forgotten");
    const first = await fx.client.adjustStock({ requestId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "count" });
    const [record] = await query<{ expires_at: Date }>(fx.sql, `SELECT expires_at FROM idempotency_records WHERE request_id = ?`, [requestId]);
    await untilDatabasePasses(record!.expires_at);
    const again = await fx.client.adjustStock({ requestId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "count" });
    expect(again.replayed).to.equal(false);
    expect(again.availability!.onHand).to.equal(first.availability!.onHand + 1n);
  });

  it("answers ABORTED / LOCK_TIMEOUT naming the SKU when a row stays locked, and records nothing", async () => {
    const hold = await fx.client.createHold({ requestId: rid("h"), customerId: "c-2", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    const trx = await fx.sql.transaction();
    try {
      await query(trx, `SELECT 1 FROM inventory WHERE sku_code = 'EDGE-A' FOR UPDATE`);
      // LOCK_TIMEOUT_MS is 300: a call still waiting after this deadline has ignored
      // the lock timeout, and fails here (DeadlineExceeded) instead of hanging with the lock held.
      const deadline = { timeoutMs: 5_000 };
      const holdId = rid("blocked-hold");
      const blockedHold = await failureOf(fx.client.createHold({ requestId: holdId, customerId: "c-3", lines: [{ sku: "EDGE-A", quantity: 1 }] }, deadline));
      const confirmId = rid("blocked-confirm");
      const blockedConfirm = await failureOf(fx.client.confirmHold({ requestId: confirmId, reservationId: hold.reservation!.id }, deadline));
      const adjustId = rid("blocked-adjust");
      const blockedAdjust = await failureOf(fx.client.adjustStock({ requestId: adjustId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "r" }, deadline));
      for (const err of [blockedHold, blockedConfirm, blockedAdjust]) {
        expect(err.code).to.equal(Code.Aborted);
        const info = err.findDetails(ErrorInfoSchema)[0];
        expect(info?.reason).to.equal("LOCK_TIMEOUT");
        expect(info?.metadata.sku).to.equal("EDGE-A");
      }
      expect(blockedConfirm.findDetails(ErrorInfoSchema)[0]?.metadata.reservation_id).to.equal(hold.reservation!.id);
      const recorded = await query(fx.sql, `SELECT 1 FROM idempotency_records WHERE request_id = ANY(?::text[])`, [[holdId, confirmId, adjustId]]);
      expect(recorded).to.have.length(0);
    } finally {
      await trx.rollback();
    }
  });

  it("answers CreateHold and CreateAllocation with exactly the reservation it stored", async () => {
    // The response is built before the insert (to record it in the same statement):
    // it must be what a read returns, field for field.
    const hold = await fx.client.createHold({ requestId: rid("same"), customerId: "c-9", lines: [{ sku: "EDGE-A", quantity: 1 }], ttl: { seconds: 90n } });
    expect((await fx.client.getReservation({ reservationId: hold.reservation!.id })).reservation).to.deep.equal(hold.reservation);
    const allocation = await fx.client.createAllocation({ requestId: rid("same-a"), customerId: "c-9", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    expect((await fx.client.getReservation({ reservationId: allocation.reservation!.id })).reservation).to.deep.equal(allocation.reservation);
  });

  it("uses the request's strategy, else the SKUs' common default, else the server's", async () => {
    await fx.client.createSku({ requestId: rid("sku"), sku: "EDGE-OPT", name: "Optimistic by default", initialOnHand: 10n, policy: { defaultLockingStrategy: LockingStrategy.OPTIMISTIC } });
    const hold = (lines: string[], lockingStrategy = LockingStrategy.UNSPECIFIED) =>
      fx.client.createHold({ requestId: rid("strategy"), customerId: "c-4", lockingStrategy, lines: lines.map((sku) => ({ sku, quantity: 1 })) });
    expect((await hold(["EDGE-OPT"])).reservation?.lockingStrategy).to.equal(LockingStrategy.OPTIMISTIC);
    expect((await hold(["EDGE-OPT"], LockingStrategy.PESSIMISTIC)).reservation?.lockingStrategy).to.equal(LockingStrategy.PESSIMISTIC);
    // SKUs with different defaults: the server default (PESSIMISTIC unless configured).
    expect((await hold(["EDGE-OPT", "EDGE-A"])).reservation?.lockingStrategy).to.equal(LockingStrategy.PESSIMISTIC);
    expect((await hold(["EDGE-A"], LockingStrategy.OPTIMISTIC)).reservation?.lockingStrategy).to.equal(LockingStrategy.OPTIMISTIC);
  });

  it("refuses a policy duration with a sub-millisecond fraction of a second", async () => {
    const failure = await failureOf(
      fx.client.createSku({ requestId: rid("frac"), sku: "EDGE-FRAC", name: "Fraction", policy: { maxHoldTtl: { seconds: 60n, nanos: 400_000 } } }),
    );
    expect(failure.code).to.equal(Code.InvalidArgument);
    expect(failure.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("BAD_REQUEST");
    expect(await query(fx.sql, `SELECT 1 FROM skus WHERE code = 'EDGE-FRAC'`)).to.have.length(0);
  });
});

describe("reservation-service: OPTIMISTIC compare-and-set", () => {
  // One attempt: the first lost race is final, so the outcome is deterministic.
  const fx = serviceFixture("optimistic", { OPTIMISTIC_MAX_ATTEMPTS: "1", LOCK_TIMEOUT_MS: "10000" }, "CAS-A");

  const untilSomeoneWaitsForALock = () => untilALockWait(fx.sql);

  it("loses its race when the version moves after its read, and answers CONFLICT_RETRIES_EXHAUSTED when out of attempts, recording nothing", async () => {
    const requestId = rid("cas");
    const trx = await fx.sql.transaction();
    let call: Promise<unknown> | undefined;
    try {
      // Lock the row, let the optimistic hold read version v and queue behind the lock,
      // then move the row to v + 1 (no counter change) and let it go.
      await query(trx, `SELECT 1 FROM inventory WHERE sku_code = 'CAS-A' FOR UPDATE`);
      call = fx.client.createHold({ requestId, customerId: "c-1", lockingStrategy: LockingStrategy.OPTIMISTIC, lines: [{ sku: "CAS-A", quantity: 1 }] }, { timeoutMs: 15_000 });
      call.catch(() => undefined);
      await untilSomeoneWaitsForALock();
      await query(trx, `UPDATE inventory SET version = version + 1, updated_at = now() WHERE sku_code = 'CAS-A'`);
      await trx.commit();
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
    }
    const failure = await failureOf(call!);
    expect(failure.code).to.equal(Code.Aborted);
    const info = failure.findDetails(ErrorInfoSchema)[0];
    expect(info?.reason).to.equal("CONFLICT_RETRIES_EXHAUSTED");
    expect(info?.metadata).to.include({ sku: "CAS-A", attempts: "1" });
    // Nothing held, nothing recorded: the same request id may be retried, and succeeds.
    expect(await query(fx.sql, `SELECT reserved FROM inventory WHERE sku_code = 'CAS-A'`)).to.deep.equal([{ reserved: 0 }]);
    expect(await query(fx.sql, `SELECT 1 FROM idempotency_records WHERE request_id = ?`, [requestId])).to.have.length(0);
    const retried = await fx.client.createHold({ requestId, customerId: "c-1", lockingStrategy: LockingStrategy.OPTIMISTIC, lines: [{ sku: "CAS-A", quantity: 1 }] });
    expect(retried.replayed).to.equal(false);
    expect(retried.reservation?.lockingStrategy).to.equal(LockingStrategy.OPTIMISTIC);
  });

  it("answers INSUFFICIENT_STOCK only when a fresh read shows the stock is short", async () => {
    const trx = await fx.sql.transaction();
    let call: Promise<unknown> | undefined;
    try {
      // The hold reads 9 available and wants 9; meanwhile the row drops to 0 available.
      await query(trx, `SELECT 1 FROM inventory WHERE sku_code = 'CAS-A' FOR UPDATE`);
      call = fx.client.createHold({ requestId: rid("short"), customerId: "c-2", lockingStrategy: LockingStrategy.OPTIMISTIC, lines: [{ sku: "CAS-A", quantity: 9 }] }, { timeoutMs: 15_000 });
      call.catch(() => undefined);
      await untilSomeoneWaitsForALock();
      await query(trx, `UPDATE inventory SET on_hand = on_hand - 9, version = version + 1, updated_at = now() WHERE sku_code = 'CAS-A'`);
      await trx.commit();
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
    }
    const failure = await failureOf(call!);
    expect(failure.code).to.equal(Code.FailedPrecondition);
    expect(failure.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("INSUFFICIENT_STOCK");
  });
});

describe("reservation-service: a caller's deadline bounds the work done for it", () => {
  // Lock waits far longer than the caller's deadline: only the deadline can end the call.
  const fx = serviceFixture("deadlines", { LOCK_TIMEOUT_MS: "20000" }, "EDGE-D");

  it("a hold whose caller's deadline passed while it waited for a lock is rolled back, not committed for nobody; a retry with the same request_id makes it once", async () => {
    const requestId = rid("late");
    const stockBefore = await query(fx.sql, `SELECT on_hand, reserved, version FROM inventory WHERE sku_code = 'EDGE-D'`);
    const blocker = await fx.sql.transaction();
    let retried: Awaited<ReturnType<Grpc["createHold"]>> | undefined;
    try {
      await query(blocker, `SELECT 1 FROM inventory WHERE sku_code = 'EDGE-D' FOR UPDATE`);
      const late = await failureOf(fx.client.createHold({ requestId, customerId: "c-late", lines: [{ sku: "EDGE-D", quantity: 1 }] }, { timeoutMs: 300 }));
      expect(late.code).to.equal(Code.DeadlineExceeded);
      // The server's statement was cancelled at the deadline (its statement_timeout is the
      // time the caller had left). The retry below waits for the row lock itself, so it
      // answers only after the blocker has ended.
      const retry = fx.client.createHold({ requestId, customerId: "c-late", lines: [{ sku: "EDGE-D", quantity: 1 }] }, { timeoutMs: 15_000 });
      // Nothing is committed while the lock is held.
      expect(await query(fx.sql, `SELECT id FROM reservations WHERE request_id = ?`, [requestId])).to.have.length(0);
      await blocker.commit();
      retried = await retry;
    } finally {
      if (!blocker.isCompleted()) await blocker.rollback();
    }
    // Exactly one hold for the request id, made by the retry (not a replay of the abandoned one).
    expect(retried.replayed).to.equal(false);
    const rows = await query<{ id: string }>(fx.sql, `SELECT id FROM reservations WHERE request_id = ?`, [requestId]);
    expect(rows.map((r) => r.id)).to.deep.equal([retried.reservation!.id]);
    const [after] = await query<{ reserved: string; version: string }>(fx.sql, `SELECT reserved, version FROM inventory WHERE sku_code = 'EDGE-D'`);
    expect(Number(after!.reserved)).to.equal(Number((stockBefore[0] as { reserved: string }).reserved) + 1);
    // One counter change: the abandoned attempt left no trace in the ledger.
    const events = await query(fx.sql, `SELECT id FROM audit_events WHERE sku_code = 'EDGE-D' AND operation = 'HOLD_CREATED'`);
    expect(events).to.have.length(1);
  });

  it("a hold whose last statement began late and got its row after the caller's deadline is rolled back: the statement checks the deadline itself", async () => {
    // statement_timeout counts from each statement's start, set to the time the caller
    // had left when the claim was sent. Here the claim waits for the request id's record
    // most of the deadline away, so the last statement's own timeout would reach far
    // past the deadline: it is the statement's check of the deadline (ApplyOptions.finish)
    // that keeps it from committing once it gets the row.
    const requestId = rid("late-claim");
    const [{ reserved: reservedBefore }] = await query<{ reserved: string }>(fx.sql, `SELECT reserved FROM inventory WHERE sku_code = 'EDGE-D'`);
    const record = await fx.sql.transaction();
    const blocker = await fx.sql.transaction();
    let retried: Awaited<ReturnType<Grpc["createHold"]>> | undefined;
    try {
      await query(record, `INSERT INTO idempotency_records (caller, request_id, method, request_hash) VALUES ('service:test-checkout', ?, 'm', 'h')`, [requestId]);
      await query(blocker, `SELECT 1 FROM inventory WHERE sku_code = 'EDGE-D' FOR UPDATE`);
      const sent = Date.now();
      const late = failureOf(fx.client.createHold({ requestId, customerId: "c-late", lines: [{ sku: "EDGE-D", quantity: 1 }] }, { timeoutMs: 1_500 }));
      await untilALockWait(fx.sql, "the claim waiting for the request id's record");
      // 900 of the 1,500 ms go by in the claim's wait; then the claim goes on and the
      // last statement waits for the row.
      await sleep(Math.max(0, sent + 900 - Date.now()));
      await record.rollback();
      await untilALockWait(fx.sql, "the last statement waiting for the SKU's row");
      expect((await late).code).to.equal(Code.DeadlineExceeded);
      // Past the deadline by the database's clock too, by a margin; the statement's own
      // timeout (about 1,500 ms from its start at ~900) is still far off.
      await sleep(100);
      const retry = fx.client.createHold({ requestId, customerId: "c-late", lines: [{ sku: "EDGE-D", quantity: 1 }] }, { timeoutMs: 15_000 });
      await blocker.commit();
      retried = await retry;
    } finally {
      if (!record.isCompleted()) await record.rollback();
      if (!blocker.isCompleted()) await blocker.rollback();
    }
    // Made by the retry, not a replay of a hold committed for the caller who had gone.
    expect(retried.replayed).to.equal(false);
    expect(await query(fx.sql, `SELECT id FROM reservations WHERE request_id = ?`, [requestId])).to.have.length(1);
    const [{ reserved }] = await query<{ reserved: string }>(fx.sql, `SELECT reserved FROM inventory WHERE sku_code = 'EDGE-D'`);
    expect(Number(reserved)).to.equal(Number(reservedBefore) + 1);
  });
});

// A single SKU's hold sends its counter change with the COMMIT (one round trip, the row
// locked for that statement only): the service cannot look at what the statement found
// before committing, so the statement refuses instead, and the hold goes on as if it
// had looked.
describe("reservation-service: a single SKU's counter change sent with the COMMIT", () => {
  const fx = serviceFixture("finish", { LOCK_TIMEOUT_MS: "10000", HOLD_TTL_MIN_MS: "1000" }, "FIN-A");
  const stock = () => query(fx.sql, `SELECT on_hand, reserved FROM inventory WHERE sku_code = 'FIN-A'`);

  /** Holds FIN-A's row while `hold` starts and waits for it, runs `meanwhile`, then lets it go. */
  async function whileTheRowIsHeld(hold: () => Promise<unknown>, meanwhile: (trx: Knex.Transaction) => Promise<unknown>): Promise<{ call: Promise<unknown> }> {
    const trx = await fx.sql.transaction();
    let call: Promise<unknown> | undefined;
    try {
      await query(trx, `SELECT 1 FROM inventory WHERE sku_code = 'FIN-A' FOR UPDATE`);
      call = hold();
      call.catch(() => undefined);
      await untilALockWait(fx.sql);
      await meanwhile(trx);
      await trx.commit();
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
    }
    return { call: call! };
  }

  it("PESSIMISTIC: a hold whose read saw the stock but whose guard finds it gone answers INSUFFICIENT_STOCK, recorded, and holds nothing", async () => {
    const requestId = rid("gone");
    const request = { requestId, customerId: "c-1", lockingStrategy: LockingStrategy.PESSIMISTIC, lines: [{ sku: "FIN-A", quantity: 9 }] };
    // The hold reads 10 available and wants 9; meanwhile 9 leave the shelf.
    const { call } = await whileTheRowIsHeld(
      () => fx.client.createHold(request, { timeoutMs: 15_000 }),
      (trx) => query(trx, `UPDATE inventory SET on_hand = on_hand - 9, version = version + 1, updated_at = now() WHERE sku_code = 'FIN-A'`),
    );
    const failure = await failureOf(call);
    expect(failure.code).to.equal(Code.FailedPrecondition);
    const info = failure.findDetails(ErrorInfoSchema)[0];
    expect(info?.reason).to.equal("INSUFFICIENT_STOCK");
    expect(await stock()).to.deep.equal([{ on_hand: 1, reserved: 0 }]);
    expect(await query(fx.sql, `SELECT 1 FROM reservations WHERE request_id = ?`, [requestId])).to.have.length(0);
    // Recorded as the answer: the same request replays it.
    const replay = await failureOf(fx.client.createHold(request));
    expect(replay.findDetails(ErrorInfoSchema)[0]?.metadata.replayed).to.equal("true");
    await query(fx.sql, `UPDATE inventory SET on_hand = 10, version = version + 1, updated_at = now() WHERE sku_code = 'FIN-A'`);
  });

  it("writes the reservation, its line and its record before it locks the SKU's row: the row is locked for the counter change and the commit only", async () => {
    // The hold's reservation waits for another transaction's uncommitted reservation
    // with the same request id (the unique index): meanwhile FIN-A's row must not be
    // locked yet. PostgreSQL runs a statement's data-modifying CTEs after its UPDATE
    // unless the UPDATE waits for them (ledger.ts, ApplyOptions.alongside).
    const requestId = rid("rows-first");
    const [{ reserved: reservedBefore }] = await query<{ reserved: number }>(fx.sql, `SELECT reserved FROM inventory WHERE sku_code = 'FIN-A'`);
    const other = await fx.sql.transaction();
    let call: Promise<unknown> | undefined;
    try {
      await query(
        other,
        `INSERT INTO reservations (type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
         VALUES ('HOLD', 'HELD', 'c-other', 'service:test-checkout', ?, 'PESSIMISTIC', now() + interval '1 hour', now() + interval '2 hours')`,
        [requestId],
      );
      call = fx.client.createHold({ requestId, customerId: "c-first", lines: [{ sku: "FIN-A", quantity: 1 }] }, { timeoutMs: 15_000 });
      call.catch(() => undefined);
      await untilALockWait(fx.sql, "the hold's reservation waiting for the other transaction's");
      const probe = await fx.sql.transaction();
      try {
        // Fails with 55P03 (lock_not_available) if the UPDATE came first.
        expect(await query(probe, `SELECT 1 FROM inventory WHERE sku_code = 'FIN-A' FOR NO KEY UPDATE NOWAIT`)).to.have.length(1);
      } finally {
        await probe.rollback();
      }
    } finally {
      await other.rollback();
    }
    const made = (await call) as Awaited<ReturnType<Grpc["createHold"]>>;
    expect(made.reservation?.customerId).to.equal("c-first");
    const [{ reserved }] = await query<{ reserved: number }>(fx.sql, `SELECT reserved FROM inventory WHERE sku_code = 'FIN-A'`);
    expect(Number(reserved)).to.equal(Number(reservedBefore) + 1);
    await fx.client.releaseHold({ requestId: rid("rows-first-release"), reservationId: made.reservation!.id });
  });

  it("a hold whose read predates a reclaim that gave units back decides on a fresh read, not on the units it saw", async () => {
    // FIN-B: 6 units, 5 of them held for one second (then expired, still counted as reserved).
    await fx.client.createSku({ requestId: rid("sku"), sku: "FIN-B", name: "FIN-B", initialOnHand: 6n });
    const lapsing = await Promise.all(
      range(5).map(() => fx.client.createHold({ requestId: rid("lapse"), customerId: "c-3", lines: [{ sku: "FIN-B", quantity: 1 }], ttl: { seconds: 1n } })),
    );
    const [{ caller }] = await query<{ caller: string }>(fx.sql, `SELECT caller FROM reservations WHERE id = ?`, [lapsing[0]!.reservation!.id]);
    const expiry = new Date(Math.max(...lapsing.map((h) => Number(h.reservation!.expireTime!.seconds) * 1000 + h.reservation!.expireTime!.nanos / 1e6)));
    for (let i = 0; (await query(fx.sql, `SELECT 1 WHERE now() > ?::timestamptz`, [expiry])).length === 0; i++) {
      if (i > 100) throw new Error("the holds never expired by the database clock");
      await sleep(50);
    }
    // The hold wants 3 and reads 1 available, then waits for its request id (taken by
    // this test's transaction) while another hold reclaims the 5 expired ones in line
    // and takes 2: 4 are available when it goes on, and no expired hold is left.
    const requestId = rid("stale");
    const trx = await fx.sql.transaction();
    let call: Promise<unknown> | undefined;
    try {
      await query(trx, `INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, expires_at) VALUES (?, ?, 'm', 'h', 'IN_FLIGHT', now() + interval '1 hour')`, [caller, requestId]);
      call = fx.client.createHold({ requestId, customerId: "c-4", lines: [{ sku: "FIN-B", quantity: 3 }] }, { timeoutMs: 15_000 });
      call.catch(() => undefined);
      await untilALockWait(fx.sql);
      const reclaimer = await fx.client.createHold({ requestId: rid("reclaim"), customerId: "c-5", lines: [{ sku: "FIN-B", quantity: 2 }] });
      expect(reclaimer.reservation).to.not.equal(undefined);
    } finally {
      await trx.rollback();
    }
    const stale = (await call!) as Awaited<ReturnType<Grpc["createHold"]>>;
    expect(stale.reservation?.lines.map((l) => ({ sku: l.sku, quantity: l.quantity }))).to.deep.equal([{ sku: "FIN-B", quantity: 3 }]);
    expect(await query(fx.sql, `SELECT on_hand, reserved FROM inventory WHERE sku_code = 'FIN-B'`)).to.deep.equal([{ on_hand: 6, reserved: 5 }]);
    const expired = await query(fx.sql, `SELECT 1 FROM audit_events WHERE sku_code = 'FIN-B' AND operation = 'HOLD_EXPIRED'`);
    expect(expired).to.have.length(5);
    await assertInvariants(fx.sql, ["FIN-B"]);
  });

  it("a hold that waited for the row until it would be born dead answers ABORTED / LOCK_TIMEOUT, commits nothing, and its retry holds for its whole TTL", async () => {
    const requestId = rid("late");
    const request = { requestId, customerId: "c-2", lines: [{ sku: "FIN-A", quantity: 1 }], ttl: { seconds: 1n } };
    // The row stays locked for longer than the hold's one-second TTL.
    const { call } = await whileTheRowIsHeld(
      () => fx.client.createHold(request, { timeoutMs: 15_000 }),
      () => sleep(1_100),
    );
    const failure = await failureOf(call);
    expect(failure.code).to.equal(Code.Aborted);
    expect(failure.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("LOCK_TIMEOUT");
    expect(await stock()).to.deep.equal([{ on_hand: 10, reserved: 0 }]);
    expect(await query(fx.sql, `SELECT 1 FROM idempotency_records WHERE request_id = ?`, [requestId])).to.have.length(0);
    const retried = await fx.client.createHold(request);
    expect(retried.replayed).to.equal(false);
    const life = Number(retried.reservation!.expireTime!.seconds - retried.reservation!.createTime!.seconds);
    expect(life).to.equal(1);
    expect(await stock()).to.deep.equal([{ on_hand: 10, reserved: 1 }]);
  });
});
