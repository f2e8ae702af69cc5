// Fault tolerance (issue 9): an expiry-worker killed (SIGKILL) in the middle of a
// REPAIR reconciliation of 2,500 drifted SKUs (three chunks). Nothing is half-applied:
// each SKU has either both of its repair events or none, and the SKUs repaired are
// consistent. Another replica ends the dead run FAILED once its lease lapses, and the
// next run repairs exactly the rest. (A worker killed in the middle of an expiry sweep
// is covered by test/services/expiry-worker.test.ts.)
import { expect } from "chai";
import {
  ExpiryWorkerService,
  InventoryReservationService,
  ReconciliationMode,
  ReconciliationRunStatus,
} from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

const SKUS = range(2500).map((i) => `WD-${String(i).padStart(5, "0")}`);
/** A short lease, so the dead run is found out in seconds (at least 3 heartbeats). */
const WORKER_ENV = { RECONCILIATION_LEASE_MS: "3000", HEARTBEAT_INTERVAL_MS: "1000", RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0" };

/** RECONCILIATION_REPAIR events per SKU. */
const REPAIR_EVENTS = `
SELECT sku_code, count(*)::int AS events
  FROM audit_events
 WHERE operation = 'RECONCILIATION_REPAIR'
 GROUP BY sku_code`;

describe("faults: the expiry-worker killed in the middle of a reconciliation", function () {
  this.timeout(180_000);
  let db: TestDatabase;
  let knex: Knex;
  let svc: ServiceProcess;
  const workers: ServiceProcess[] = [];

  before(async () => {
    db = await createTestDatabase("faults-worker");
    knex = createKnex({ url: db.url, poolMax: 2 });
    svc = await startService("reservation-service", db.url);
    const inv = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    try {
      let next = 0;
      await Promise.all(
        range(16).map(async () => {
          while (next < SKUS.length) {
            const sku = SKUS[next++]!;
            await inv.createSku({ requestId: `wd-${sku}`, sku, name: sku, initialOnHand: 10n });
          }
        }),
      );
    } finally {
      inv.close();
    }
  });
  after(async () => {
    await Promise.all([svc?.stop(), ...workers.map((w) => w.stop())]);
    await knex?.destroy();
    await db?.drop();
  });

  it("leaves every SKU repaired whole or not at all; the lapsed run ends FAILED and the next run repairs the rest", async () => {
    // Drift outside the ledger on every SKU: on_hand one higher than its events say.
    await query(knex, `UPDATE inventory SET on_hand = on_hand + 1`);

    const doomed = await startService("expiry-worker", db.url, WORKER_ENV);
    workers.push(doomed);
    const toDoomed = createGrpcJsClient(ExpiryWorkerService, doomed.grpcAddress, undefined, testCaller);
    let runId: string;
    try {
      runId = (await toDoomed.runReconciliation({ requestId: "wd-repair-1", mode: ReconciliationMode.REPAIR, returnImmediately: true })).run!.id;
      // Kill it as soon as its first repairs are committed.
      await until("the first chunk repaired", async () => (await query(knex, REPAIR_EVENTS)).length > 0, 60_000, 2);
      doomed.child.kill("SIGKILL");
      await new Promise((resolve) => doomed.child.once("exit", resolve));
    } finally {
      toDoomed.close();
    }

    // Nothing half-applied: two events (the drift, the correction) per repaired SKU, and
    // the run was cut off before the end (otherwise this test proves nothing).
    const afterKill = await query<{ sku_code: string; events: number }>(knex, REPAIR_EVENTS);
    expect(afterKill.every((r) => r.events === 2), "events per repaired SKU").to.equal(true);
    console.log(`      killed after ${afterKill.length} of ${SKUS.length} SKUs were repaired`);
    expect(afterKill.length).to.be.greaterThan(0).and.below(SKUS.length);
    const [{ drifted }] = await query<{ drifted: number }>(
      knex,
      `SELECT count(*)::int AS drifted FROM inventory i WHERE i.on_hand <> (SELECT sum(delta_on_hand) FROM audit_events a WHERE a.sku_code = i.sku_code)`,
    );
    expect(drifted, "SKUs still drifted").to.equal(SKUS.length - afterKill.length);

    // Another replica: the dead run ends FAILED once its lease has lapsed, then a new run
    // repairs exactly what is left.
    const survivor = await startService("expiry-worker", db.url, WORKER_ENV);
    workers.push(survivor);
    const toSurvivor = createGrpcJsClient(ExpiryWorkerService, survivor.grpcAddress, undefined, testCaller);
    const inv = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    try {
      await until("the dead run ended FAILED", async () => (await toSurvivor.getReconciliationRun({ runId })).run!.status === ReconciliationRunStatus.FAILED, 15_000, 100);
      expect((await toSurvivor.getReconciliationRun({ runId })).run!.error).to.match(/lease expired/);
      const { run } = await toSurvivor.runReconciliation({ requestId: "wd-repair-2", mode: ReconciliationMode.REPAIR });
      expect(run!.status).to.equal(ReconciliationRunStatus.ISSUES);
      expect(Number(run!.skusWithFindings)).to.equal(SKUS.length - afterKill.length);
      expect(run!.findingCount).to.equal(run!.repairedCount);

      const finally_ = await query<{ sku_code: string; events: number }>(knex, REPAIR_EVENTS);
      expect(finally_).to.have.length(SKUS.length);
      expect(finally_.every((r) => r.events === 2), "each SKU repaired exactly once").to.equal(true);
      await assertInvariants(knex);
      await checkConsistencyClean(inv);
    } finally {
      toSurvivor.close();
      inv.close();
    }
  });
});
