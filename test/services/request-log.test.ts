// The request log (issue 7): every CreateHold attempt leaves one hold_attempts row per
// requested SKU, whatever its answer, written in batches after the answer; a replay is
// logged as such; shutdown writes what is still queued.
import { expect } from "chai";
import { InventoryReservationService } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query, type HoldAttemptRow } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller, TEST_CALLERS } from "../support/auth.js";
import { failure, outcome, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;


describe("request log: every CreateHold attempt, one row per SKU, whatever the answer", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let knex: Knex;
  let svc: ServiceProcess | undefined;
  let client: Client;

  before(async () => {
    db = await createTestDatabase("request-log");
    knex = createKnex({ url: db.url, poolMax: 2 });
    svc = await startService("reservation-service", db.url);
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
  });
  after(async () => {
    client?.close();
    await svc?.stop();
    await knex?.destroy();
    await db?.drop();
  });

  it("a burst: granted, refused, waitlisted, invalid and replayed attempts are all logged, and shutdown writes the last ones", async () => {
    await client.createSku({ requestId: "rl-sku-a", sku: "RL-A", name: "a", initialOnHand: 5n });
    await client.createSku({ requestId: "rl-sku-b", sku: "RL-B", name: "b", initialOnHand: 100n });
    // 20 one-unit attempts for 5 units, at once, with the pessimistic strategy.
    const burst = await Promise.all(
      range(20).map((i) => outcome(client.createHold({ requestId: `rl-${i}`, customerId: `c-${i}`, lines: [{ sku: "RL-A", quantity: 1 }], lockingStrategy: 2 }))),
    );
    const granted = burst.flatMap((o) => (o.ok ? [o.value.reservation!.id] : []));
    expect(granted).to.have.length(5);
    // A two-SKU cart (duplicate lines summed), refused as a whole: RL-A is sold out.
    expect((await failure(client.createHold({ requestId: "rl-cart", customerId: "cart", lines: [{ sku: "RL-B", quantity: 1 }, { sku: "RL-A", quantity: 1 }, { sku: "RL-B", quantity: 2 }] }))).reason).to.equal("INSUFFICIENT_STOCK");
    // Waitlisted instead of refused.
    const waitlisted = await client.createHold({ requestId: "rl-wait", customerId: "patient", lines: [{ sku: "RL-A", quantity: 2 }], joinWaitlistIfShort: true });
    // Refused by the logic's own check (a service caller must name the customer).
    expect((await failure(client.createHold({ requestId: "rl-nobody", lines: [{ sku: "RL-B", quantity: 1 }] }))).reason).to.equal("BAD_REQUEST");
    // Replays: of a grant, and of a refusal.
    const first = burst.findIndex((o) => o.ok);
    const refusedIndex = burst.findIndex((o) => !o.ok);
    expect((await client.createHold({ requestId: `rl-${first}`, customerId: `c-${first}`, lines: [{ sku: "RL-A", quantity: 1 }], lockingStrategy: 2 })).replayed).to.equal(true);
    expect((await failure(client.createHold({ requestId: `rl-${refusedIndex}`, customerId: `c-${refusedIndex}`, lines: [{ sku: "RL-A", quantity: 1 }], lockingStrategy: 2 }))).reason).to.equal("INSUFFICIENT_STOCK");

    // Stop at once: whatever is still queued is written on the way down.
    await svc!.stop();
    svc = undefined;

    const rows = await query<HoldAttemptRow>(knex, `SELECT * FROM hold_attempts ORDER BY id`);
    const service = `service:${TEST_CALLERS.service}`;
    const burstRows = rows.filter((r) => r.request_id?.match(/^rl-\d+$/) && !r.replayed);
    expect(burstRows).to.have.length(20);
    expect(burstRows.filter((r) => r.outcome === "GRANTED").map((r) => r.reservation_id).sort()).to.deep.equal([...granted].sort());
    expect(burstRows.filter((r) => r.outcome === "REFUSED").map((r) => r.reason)).to.deep.equal(Array(15).fill("INSUFFICIENT_STOCK"));
    for (const r of burstRows) {
      expect(r).to.include({ caller: service, sku_code: "RL-A", quantity: 1, locking_strategy: "PESSIMISTIC" });
      expect(r.customer_id).to.equal(`c-${r.request_id!.slice(3)}`);
      expect(r.latency_us).to.be.at.least(0);
    }
    // A granted attempt arrived before its hold was created (server arrival time, not the commit).
    const holds = await query<{ id: string; created_at: Date }>(knex, `SELECT id, created_at FROM reservations WHERE id = ANY(?::uuid[])`, [granted]);
    for (const h of holds) expect(burstRows.find((r) => r.reservation_id === h.id)!.received_at.getTime()).to.be.at.most(h.created_at.getTime() + 5);

    const cart = rows.filter((r) => r.request_id === "rl-cart");
    expect(cart.map((r) => [r.sku_code, r.quantity, r.outcome, r.reason])).to.deep.equal([
      ["RL-A", 1, "REFUSED", "INSUFFICIENT_STOCK"],
      ["RL-B", 3, "REFUSED", "INSUFFICIENT_STOCK"],
    ]);
    expect(new Set(cart.map((r) => r.attempt_id)).size).to.equal(1);

    const wait = rows.filter((r) => r.request_id === "rl-wait");
    expect(wait.map((r) => [r.outcome, r.reason, r.waitlist_entry_id])).to.deep.equal([["WAITLISTED", "INSUFFICIENT_STOCK", waitlisted.waitlistEntries[0]!.id]]);

    expect(rows.filter((r) => r.request_id === "rl-nobody").map((r) => [r.outcome, r.reason, r.customer_id])).to.deep.equal([["REFUSED", "BAD_REQUEST", ""]]);

    const replays = rows.filter((r) => r.replayed);
    expect(replays.map((r) => [r.request_id, r.outcome]).sort()).to.deep.equal(
      [
        [`rl-${first}`, "GRANTED"],
        [`rl-${refusedIndex}`, "REFUSED"],
      ].sort(),
    );
    expect(rows).to.have.length(20 + 2 + 1 + 1 + 2);
  });
});
