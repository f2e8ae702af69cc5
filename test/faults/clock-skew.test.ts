// Fault tolerance (issue 9): a service host whose clock is wrong by an hour, ahead or
// behind. Expiry is judged by the database's clock only, so holds expire on time: not
// an hour early (read as EXPIRED at once, swept at once) and not an hour late.
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { InventoryReservationService, ReservationStatus } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { bearer, token } from "../support/auth.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

const SKEWED_CLOCK = fileURLToPath(new URL("../../fixtures/clock/skewed-clock.mjs", import.meta.url));
const HOUR_MS = 3_600_000;
const TTL_S = 2;

for (const skewMs of [HOUR_MS, -HOUR_MS]) {
  const ahead = skewMs > 0;
  describe(`faults: the service hosts' clocks are an hour ${ahead ? "ahead" : "behind"}`, function () {
    this.timeout(60_000);
    let db: TestDatabase;
    let knex: Knex;
    let svc: ServiceProcess;
    let worker: ServiceProcess;
    let client: GrpcJsClient<typeof InventoryReservationService>;
    let admin: Record<string, string>;
    let checkout: Record<string, string>;

    before(async () => {
      db = await createTestDatabase(`faults-clock-${ahead ? "ahead" : "behind"}`);
      knex = createKnex({ url: db.url, poolMax: 2 });
      const env = { NODE_OPTIONS: `--import=${SKEWED_CLOCK}`, HOLDFAST_TEST_CLOCK_SKEW_MS: String(skewMs) };
      [svc, worker] = await Promise.all([startService("reservation-service", db.url, env), startService("expiry-worker", db.url, env)]);
      client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress);
      // Tokens are checked against the host's clock (that is what it is for): these are
      // valid on either host, issued two hours ago for a day.
      const issuedAt = Math.floor(Date.now() / 1000) - 7200;
      admin = bearer(await token("admin", "clock-test", { issuedAt, ttlSeconds: 24 * 3600 }));
      checkout = bearer(await token("service", "clock-test", { issuedAt, ttlSeconds: 24 * 3600 }));
    });
    after(async () => {
      client?.close();
      await Promise.all([svc?.stop(), worker?.stop()]);
      await knex?.destroy();
      await db?.drop();
    });

    it(`a ${TTL_S} s hold lives ${TTL_S} s by the database's clock, and the worker expires it then`, async () => {
      // The host's clock really is off.
      const logged = JSON.parse(svc.output.find((l) => l.includes('"time"'))!) as { time: string };
      expect(Math.abs(Date.parse(logged.time) - Date.now() - skewMs)).to.be.below(60_000);

      await client.createSku({ requestId: "clock-sku", sku: "CLOCK-1", name: "clock", initialOnHand: 10n }, { headers: admin });
      const hold = (
        await client.createHold({ requestId: "clock-hold", customerId: "c", lines: [{ sku: "CLOCK-1", quantity: 1 }], ttl: { seconds: BigInt(TTL_S) } }, { headers: checkout })
      ).reservation!;
      expect(hold.status).to.equal(ReservationStatus.HELD);

      const [row] = await query<{ lifetime_ms: number; left_ms: number; expires_at: Date }>(
        knex,
        `SELECT (extract(epoch FROM expires_at - created_at) * 1000)::int AS lifetime_ms,
                (extract(epoch FROM expires_at - now()) * 1000)::int AS left_ms, expires_at
           FROM reservations WHERE id = ?`,
        [hold.id],
      );
      expect(row!.lifetime_ms).to.equal(TTL_S * 1000);
      expect(row!.left_ms).to.be.within(0, TTL_S * 1000);
      expect(timestampDate(hold.expireTime!).getTime()).to.equal(row!.expires_at.getTime());
      // Read back at once: still HELD (judged against now() in the database, not the host's clock).
      expect((await client.getReservation({ reservationId: hold.id }, { headers: checkout })).reservation!.status).to.equal(ReservationStatus.HELD);

      // The worker returns the unit once the database's clock passes expires_at: within a
      // few seconds, not an hour later, and never before.
      await until("the hold expired by the worker", async () => (await query<{ reserved: number }>(knex, `SELECT reserved FROM inventory WHERE sku_code = 'CLOCK-1'`))[0]!.reserved === 0, 10_000);
      const [event] = await query<{ late_ms: number; actor: string }>(
        knex,
        `SELECT (extract(epoch FROM a.occurred_at - r.expires_at) * 1000)::int AS late_ms, a.actor
           FROM audit_events a JOIN reservations r ON r.id = a.reservation_id
          WHERE a.reservation_id = ? AND a.operation = 'HOLD_EXPIRED'`,
        [hold.id],
      );
      expect(event!.actor).to.match(/^worker:/);
      expect(event!.late_ms, "expired this long after expires_at").to.be.within(0, 2_000);
      expect((await client.getReservation({ reservationId: hold.id }, { headers: checkout })).reservation!.status).to.equal(ReservationStatus.EXPIRED);
      await assertInvariants(knex, ["CLOCK-1"]);
    });
  });
}
