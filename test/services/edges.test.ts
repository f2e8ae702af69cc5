// Edges of the write path found by review: request ids that outlive their
// idempotency record, lock timeouts that name what was waited for, policy durations
// with sub-millisecond fractions.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";

type Grpc = GrpcJsClient<typeof InventoryReservationService>;
const rid = (label: string) => `${label}-${randomUUID()}`;
const failureOf = async (promise: PromiseLike<unknown>) => ConnectError.from(await rejectionOf(promise));

describe("reservation-service: edges of idempotency and locking", () => {
  let db: TestDatabase;
  let sql: Knex;
  let svc: ServiceProcess;
  let client: Grpc;

  before(async () => {
    db = await createTestDatabase("edges");
    sql = createKnex({ url: db.url, poolMax: 3 });
    // A one-second idempotency window and a short lock timeout make both edges reachable quickly.
    svc = await startService("reservation-service", db.url, { IDEMPOTENCY_WINDOW_MS: "1000", LOCK_TIMEOUT_MS: "300" });
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress);
    await client.createSku({ requestId: rid("sku"), sku: "EDGE-A", name: "Edge A", initialOnHand: 10n });
  });
  after(async () => {
    client?.close();
    await svc?.stop();
    await sql?.destroy();
    await db?.drop();
  });

  /** Waits until the database clock is past `instant` (the window is judged by it). */
  async function untilDatabasePasses(instant: Date): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const [row] = await query<{ past: boolean }>(sql, `SELECT now() > ?::timestamptz AS past`, [instant]);
      if (row!.past) return;
      await sleep(50);
    }
    throw new Error(`database clock never passed ${instant.toISOString()}`);
  }

  it("keeps a request id attached to a reservation taken after its record's window, for every RPC", async () => {
    const requestId = rid("attached");
    const hold = await client.createHold({ requestId, customerId: "c-1", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    const [record] = await query<{ expires_at: Date }>(sql, `SELECT expires_at FROM idempotency_records WHERE request_id = ?`, [requestId]);
    await untilDatabasePasses(record!.expires_at);
    const before = await query(sql, `SELECT on_hand, reserved, version FROM inventory WHERE sku_code = 'EDGE-A'`);

    // The identical request, and other RPCs under the same id: all refused, naming the reservation.
    for (const call of [
      () => client.createHold({ requestId, customerId: "c-1", lines: [{ sku: "EDGE-A", quantity: 1 }] }),
      () => client.adjustStock({ requestId, sku: "EDGE-A", change: { case: "delta", value: 3n }, reason: "restock" }),
      () => client.releaseHold({ requestId, reservationId: hold.reservation!.id }),
    ]) {
      const failure = await failureOf(call());
      expect(failure.code).to.equal(Code.InvalidArgument);
      const info = failure.findDetails(ErrorInfoSchema)[0];
      expect(info?.reason).to.equal("IDEMPOTENCY_KEY_REUSED");
      expect(info?.metadata.reservation_id).to.equal(hold.reservation!.id);
    }
    expect(await query(sql, `SELECT on_hand, reserved, version FROM inventory WHERE sku_code = 'EDGE-A'`)).to.deep.equal(before);
    expect((await client.getReservation({ reservationId: hold.reservation!.id })).reservation?.status).to.equal(hold.reservation!.status);
  });

  it("forgets other request ids after the window: the same AdjustStock applies again", async () => {
    const requestId = rid("forgotten");
    const first = await client.adjustStock({ requestId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "count" });
    const [record] = await query<{ expires_at: Date }>(sql, `SELECT expires_at FROM idempotency_records WHERE request_id = ?`, [requestId]);
    await untilDatabasePasses(record!.expires_at);
    const again = await client.adjustStock({ requestId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "count" });
    expect(again.replayed).to.equal(false);
    expect(again.availability!.onHand).to.equal(first.availability!.onHand + 1n);
  });

  it("answers ABORTED / LOCK_TIMEOUT naming the SKU when a row stays locked, and records nothing", async () => {
    const hold = await client.createHold({ requestId: rid("h"), customerId: "c-2", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    const trx = await sql.transaction();
    try {
      await query(trx, `SELECT 1 FROM inventory WHERE sku_code = 'EDGE-A' FOR UPDATE`);
      // LOCK_TIMEOUT_MS is 300: a call still waiting after this deadline has ignored
      // the lock timeout, and fails here (DeadlineExceeded) instead of hanging with the lock held.
      const deadline = { timeoutMs: 5_000 };
      const holdId = rid("blocked-hold");
      const blockedHold = await failureOf(client.createHold({ requestId: holdId, customerId: "c-3", lines: [{ sku: "EDGE-A", quantity: 1 }] }, deadline));
      const confirmId = rid("blocked-confirm");
      const blockedConfirm = await failureOf(client.confirmHold({ requestId: confirmId, reservationId: hold.reservation!.id }, deadline));
      const adjustId = rid("blocked-adjust");
      const blockedAdjust = await failureOf(client.adjustStock({ requestId: adjustId, sku: "EDGE-A", change: { case: "delta", value: 1n }, reason: "r" }, deadline));
      for (const err of [blockedHold, blockedConfirm, blockedAdjust]) {
        expect(err.code).to.equal(Code.Aborted);
        const info = err.findDetails(ErrorInfoSchema)[0];
        expect(info?.reason).to.equal("LOCK_TIMEOUT");
        expect(info?.metadata.sku).to.equal("EDGE-A");
      }
      expect(blockedConfirm.findDetails(ErrorInfoSchema)[0]?.metadata.reservation_id).to.equal(hold.reservation!.id);
      const recorded = await query(sql, `SELECT 1 FROM idempotency_records WHERE request_id = ANY(?::text[])`, [[holdId, confirmId, adjustId]]);
      expect(recorded).to.have.length(0);
    } finally {
      await trx.rollback();
    }
  });

  it("answers CreateHold and CreateAllocation with exactly the reservation it stored", async () => {
    // The response is built before the insert (to record it in the same statement):
    // it must be what a read returns, field for field.
    const hold = await client.createHold({ requestId: rid("same"), customerId: "c-9", lines: [{ sku: "EDGE-A", quantity: 1 }], ttl: { seconds: 90n } });
    expect((await client.getReservation({ reservationId: hold.reservation!.id })).reservation).to.deep.equal(hold.reservation);
    const allocation = await client.createAllocation({ requestId: rid("same-a"), customerId: "c-9", lines: [{ sku: "EDGE-A", quantity: 1 }] });
    expect((await client.getReservation({ reservationId: allocation.reservation!.id })).reservation).to.deep.equal(allocation.reservation);
  });

  it("refuses a policy duration with a sub-millisecond fraction of a second", async () => {
    const failure = await failureOf(
      client.createSku({ requestId: rid("frac"), sku: "EDGE-FRAC", name: "Fraction", policy: { maxHoldTtl: { seconds: 60n, nanos: 400_000 } } }),
    );
    expect(failure.code).to.equal(Code.InvalidArgument);
    expect(failure.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("BAD_REQUEST");
    expect(await query(sql, `SELECT 1 FROM skus WHERE code = 'EDGE-FRAC'`)).to.have.length(0);
  });
});
