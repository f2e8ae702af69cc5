// Availability snapshots (TakeSnapshot and scheduled passes), retention and the
// replica heartbeat of the expiry-worker, against real processes on one database:
// a reservation-service (SKUs, holds, GetAvailability, ListAvailabilitySnapshots)
// and expiry-worker replicas started per group. What the worker wrote is checked
// through the contract and in SQL. Anything that happens in another process is
// waited for by polling with a deadline.
import { randomUUID } from "node:crypto";
import { expect } from "chai";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { DemandStatus, ExpiryWorkerService, InventoryReservationService, SnapshotTrigger, type Availability, type AvailabilitySnapshot } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { rpcFailureOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";
import { testCaller } from "../support/auth.js";

/** The advisory lock every snapshot pass takes: ('Hold', 'Snap') (expiry-worker core/snapshots.ts). */
const SNAPSHOT_LOCK = [0x486f6c64, 0x536e6170] as const;
/** Worker settings of every replica here: no scheduled work unless a test asks for it. */
const WORKER_ENV = { RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0", LOCK_TIMEOUT_MS: "10000" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Worker = { process: ServiceProcess; client: GrpcJsClient<typeof ExpiryWorkerService> };

const rid = (label: string) => `${label}-${randomUUID()}`;
const date = (t: Timestamp | undefined): Date => {
  expect(t, "timestamp").to.not.equal(undefined);
  return timestampDate(t!);
};

/** The fields a snapshot records of an availability row (demand_status is not recorded). */
const recorded = (a: Availability | undefined) => {
  expect(a, "availability").to.not.equal(undefined);
  return {
    sku: a!.sku,
    onHand: a!.onHand,
    reserved: a!.reserved,
    allocated: a!.allocated,
    available: a!.available,
    version: a!.version,
    waitlistLength: a!.waitlistLength,
    waitlistUnits: a!.waitlistUnits,
    updateTime: date(a!.updateTime).getTime(),
  };
};

/** A counter of a worker's /metrics, summed over label sets that match `labels`. */
async function metric(worker: Worker, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${worker.process.httpUrl}/metrics`)).text();
  return text
    .split("\n")
    .filter((line) => line.startsWith(`${name}{`) && line.includes(labels))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}

describe("expiry-worker: snapshots, retention and replicas (real processes)", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  let inventory: GrpcJsClient<typeof InventoryReservationService>;
  const SKUS = ["snap-1", "snap-2", "snap-3", "snap-4", "snap-5", "snap-6"];
  const started: Worker[] = [];

  async function startWorker(id: string, env: NodeJS.ProcessEnv = {}): Promise<Worker> {
    const proc = await startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: id, ...env });
    const worker = { process: proc, client: createGrpcJsClient(ExpiryWorkerService, proc.grpcAddress, undefined, testCaller) };
    started.push(worker);
    return worker;
  }

  async function stopWorker(worker: Worker): Promise<void> {
    started.splice(started.indexOf(worker), 1);
    worker.client.close();
    expect(await worker.process.stop(), "worker exit code").to.equal(0);
  }

  /** After a test that starts its own replicas: whatever it left running, even when it failed. */
  async function stopAll(): Promise<void> {
    for (const worker of [...started]) await stopWorker(worker).catch(() => undefined);
  }

  async function snapshotRows(): Promise<number> {
    const [row] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM inventory_snapshots`);
    return row!.n;
  }

  async function availability(skus: string[]): Promise<Availability[]> {
    return (await inventory.getAvailability({ skus })).availabilities;
  }

  /** Every row of one pass through ListAvailabilitySnapshots (paged), by its time and run id. */
  async function listedPass(runId: string, at: Timestamp | undefined): Promise<AvailabilitySnapshot[]> {
    const end = timestampFromDate(new Date(date(at).getTime() + 1));
    const rows: AvailabilitySnapshot[] = [];
    let pageToken = "";
    do {
      const page = await inventory.listAvailabilitySnapshots({ pageSize: 2, pageToken, startTime: at, endTime: end });
      rows.push(...page.snapshots);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    return rows.filter((r) => r.snapshotRunId === runId);
  }

  before(async () => {
    db = await createTestDatabase("snapshots_retention");
    svc = await startService("reservation-service", db.url);
    knex = createKnex({ url: db.url, poolMax: 4 });
    inventory = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    for (const sku of SKUS) await inventory.createSku({ requestId: rid("sku"), sku, name: sku, initialOnHand: 100n });
    // Some rows with reserved and allocated units and versions past 1.
    await inventory.createHold({ requestId: rid("hold"), customerId: "cust-1", lines: [{ sku: "snap-1", quantity: 2 }, { sku: "snap-3", quantity: 1 }], ttl: { seconds: 600n } });
    await inventory.createAllocation({ requestId: rid("alloc"), customerId: "cust-2", lines: [{ sku: "snap-2", quantity: 3 }] });
  });
  after(async () => {
    await stopAll();
    inventory?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  describe("TakeSnapshot (two replicas, no scheduled passes)", () => {
    let a: Worker;
    let b: Worker;

    before(async () => {
      [a, b] = await Promise.all([startWorker("snap-a"), startWorker("snap-b")]);
    });
    after(async () => {
      await Promise.all([stopWorker(a), stopWorker(b)]);
    });

    it("records every SKU as GetAvailability shows it, readable through ListAvailabilitySnapshots", async () => {
      const before = await availability(SKUS);
      const response = await a.client.takeSnapshot({ requestId: rid("snap"), skus: [] });
      const after = await availability(SKUS);
      expect(after.map(recorded), "nothing changed around the pass").to.deep.equal(before.map(recorded));

      expect(response.snapshotRunId).to.match(UUID);
      expect(response.skusSnapshotted).to.equal(BigInt(SKUS.length));
      expect(response.replayed).to.equal(false);
      const listed = await listedPass(response.snapshotRunId, response.snapshotTime);
      expect(listed.map((s) => s.availability!.sku)).to.deep.equal(SKUS);
      for (const s of listed) {
        expect(s.trigger).to.equal(SnapshotTrigger.ON_DEMAND);
        expect(date(s.snapshotTime).getTime()).to.equal(date(response.snapshotTime).getTime());
        expect(s.availability!.demandStatus).to.equal(DemandStatus.UNSPECIFIED);
      }
      expect(listed.map((s) => recorded(s.availability))).to.deep.equal(before.map(recorded));
      expect(listed.find((s) => s.availability!.sku === "snap-1")!.availability!.reserved).to.equal(2n);
      expect(listed.find((s) => s.availability!.sku === "snap-2")!.availability!.allocated).to.equal(3n);

      // Each row names the SKU's newest ledger event, and all rows share one time.
      const rows = await query<{ sku_code: string; last_audit_event_id: number | null; newest: number; times: number }>(
        knex,
        `SELECT s.sku_code, s.last_audit_event_id,
                (SELECT max(a.id) FROM audit_events a WHERE a.sku_code = s.sku_code) AS newest,
                (SELECT count(DISTINCT t.taken_at) FROM inventory_snapshots t WHERE t.snapshot_run_id = s.snapshot_run_id)::int AS times
           FROM inventory_snapshots s WHERE s.snapshot_run_id = ? ORDER BY s.sku_code`,
        [response.snapshotRunId],
      );
      expect(rows).to.have.length(SKUS.length);
      for (const row of rows) {
        expect(row.last_audit_event_id, row.sku_code).to.equal(row.newest);
        expect(row.times).to.equal(1);
      }

      const status = (await b.client.getWorkerStatus({})).status!;
      expect(date(status.lastSnapshotTime).getTime(), "last_snapshot_time (database-wide)").to.equal(date(response.snapshotTime).getTime());
      expect(status.snapshotInterval, "no scheduled snapshots").to.equal(undefined);
    });

    it("records only the named SKUs (duplicates ignored)", async () => {
      const response = await b.client.takeSnapshot({ requestId: rid("subset"), skus: ["snap-4", "snap-2", "snap-4"] });
      expect(response.skusSnapshotted).to.equal(2n);
      const listed = await listedPass(response.snapshotRunId, response.snapshotTime);
      expect(listed.map((s) => s.availability!.sku)).to.deep.equal(["snap-2", "snap-4"]);
      expect(listed.map((s) => recorded(s.availability))).to.deep.equal((await availability(["snap-2", "snap-4"])).map(recorded));
    });

    it("replays a repeated request_id as the same pass, on any replica, without a new one", async () => {
      const request = { requestId: rid("replay"), skus: ["snap-1"] };
      const first = await a.client.takeSnapshot(request);
      const rows = await snapshotRows();
      const again = await b.client.takeSnapshot(request);
      expect(again.replayed).to.equal(true);
      expect({ ...again, replayed: false }).to.deep.equal(first);
      expect(await snapshotRows()).to.equal(rows);
    });

    it("refuses the same request_id for a different request: INVALID_ARGUMENT / IDEMPOTENCY_KEY_REUSED", async () => {
      const requestId = rid("reuse");
      await a.client.takeSnapshot({ requestId, skus: ["snap-1"] });
      const rows = await snapshotRows();
      expect(await rpcFailureOf(a.client.takeSnapshot({ requestId, skus: ["snap-2"] }))).to.include({ code: Code.InvalidArgument, reason: "IDEMPOTENCY_KEY_REUSED" });
      expect(await snapshotRows()).to.equal(rows);
    });

    it("refuses unknown SKUs with NOT_FOUND / SKU_NOT_FOUND and writes nothing (replayed as such)", async () => {
      const rows = await snapshotRows();
      const request = { requestId: rid("unknown"), skus: ["snap-1", "no-such-sku"] };
      const failure = await rpcFailureOf(a.client.takeSnapshot(request));
      expect(failure).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
      expect(failure.message).to.include("no-such-sku").and.not.include("snap-1");
      expect(await rpcFailureOf(b.client.takeSnapshot(request))).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
      expect(await snapshotRows()).to.equal(rows);
    });

    it("refuses bad input with INVALID_ARGUMENT and writes nothing", async () => {
      const rows = await snapshotRows();
      const cases = [
        { requestId: "", skus: [] },
        { requestId: "has spaces", skus: [] },
        { requestId: rid("bad"), skus: ["snap-1", "bad code!"] },
        { requestId: rid("bad"), skus: [""] },
        { requestId: rid("bad"), skus: Array.from({ length: 10_001 }, () => "snap-1") },
      ];
      for (const request of cases) {
        const failure = await rpcFailureOf(a.client.takeSnapshot(request));
        expect(failure, JSON.stringify(request).slice(0, 80)).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      }
      // The upper bound itself is accepted.
      const most = await a.client.takeSnapshot({ requestId: rid("most"), skus: Array.from({ length: 10_000 }, (_, i) => SKUS[i % SKUS.length]!) });
      expect(most.skusSnapshotted).to.equal(BigInt(SKUS.length));
      expect(await snapshotRows()).to.equal(rows + SKUS.length);
    });

    it("stamps a pass that waited for another after that one committed", async () => {
      // The test plays a pass in progress: it holds the snapshot lock while a
      // TakeSnapshot waits for it, then commits. The waiting pass must be stamped
      // after that commit, although its transaction began before it.
      const holder = await knex.transaction();
      let call: Promise<unknown> | undefined;
      try {
        await query(holder, `SELECT pg_advisory_xact_lock(?, ?)`, SNAPSHOT_LOCK);
        call = a.client.takeSnapshot({ requestId: rid("waited"), skus: [] });
        await until("the pass to wait for the snapshot lock", async () => {
          const [row] = await query<{ n: number }>(
            knex,
            `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = ? AND objid = ? AND objsubid = 2`,
            SNAPSHOT_LOCK,
          );
          return row!.n === 1;
        });
        const [{ released }] = (await query<{ released: string }>(holder, `SELECT clock_timestamp()::text AS released`)) as [{ released: string }];
        await holder.commit();
        const response = (await call) as { snapshotRunId: string };
        const [row] = await query<{ after: boolean | null }>(
          knex,
          `SELECT bool_and(taken_at > ?::timestamptz) AS after FROM inventory_snapshots WHERE snapshot_run_id = ?`,
          [released, response.snapshotRunId],
        );
        expect(row!.after, "stamped after the pass it waited for committed").to.equal(true);
      } finally {
        if (!holder.isCompleted()) await holder.rollback();
        await call?.catch(() => undefined);
      }
    });

    it("serialises concurrent passes of two replicas: no interleaving, snapshot_time order = commit order", async () => {
      const sinceRows = await query<{ t: Date }>(knex, `SELECT clock_timestamp() AS t`);
      const since = sinceRows[0]!.t;
      // Counter changes keep landing while the passes run.
      let writing = true;
      let i = 0;
      const adjust = () => inventory.adjustStock({ requestId: rid("adj"), sku: SKUS[i++ % SKUS.length]!, change: { case: "delta", value: 1n }, reason: "snapshot test" });
      await adjust();
      const writer = (async () => {
        while (writing) await adjust();
      })();
      const passes = await Promise.all(
        Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? a : b).client.takeSnapshot({ requestId: rid("concurrent"), skus: i % 3 === 0 ? ["snap-1", "snap-2"] : [] })),
      );
      writing = false;
      await writer;

      const runs = await query<{ run: string; times: number; rows: number; taken_at: string }>(
        knex,
        `SELECT snapshot_run_id AS run, count(DISTINCT taken_at)::int AS times, count(*)::int AS rows, min(taken_at)::text AS taken_at
           FROM inventory_snapshots WHERE taken_at >= ? GROUP BY snapshot_run_id ORDER BY min(taken_at)`,
        [since],
      );
      expect(runs.map((r) => r.run).sort()).to.deep.equal(passes.map((p) => p.snapshotRunId).sort());
      for (const run of runs) {
        expect(run.times, `rows of pass ${run.run} share one time`).to.equal(1);
        const expected = passes.find((p) => p.snapshotRunId === run.run)!.skusSnapshotted;
        expect(BigInt(run.rows), `rows of pass ${run.run}`).to.equal(expected);
      }
      expect(new Set(runs.map((r) => r.taken_at)).size, "no two passes share a time").to.equal(runs.length);
      // Read in time order, each SKU only moves forward: a pass stamped later read
      // later (a later pass never sees an older version or ledger position).
      const backwards = await query<{ sku_code: string; run: string }>(
        knex,
        `SELECT sku_code, snapshot_run_id AS run FROM (
           SELECT sku_code, snapshot_run_id, version, last_audit_event_id,
                  lag(version) OVER w AS prev_version, lag(last_audit_event_id) OVER w AS prev_event
             FROM inventory_snapshots WHERE taken_at >= ?
           WINDOW w AS (PARTITION BY sku_code ORDER BY taken_at)) x
          WHERE version < prev_version OR last_audit_event_id < prev_event`,
        [since],
      );
      expect(backwards).to.deep.equal([]);
      // And the versions did move during the test (the check above is not vacuous).
      const [moved] = await query<{ n: number }>(knex, `SELECT count(DISTINCT version)::int AS n FROM inventory_snapshots WHERE taken_at >= ? AND sku_code = 'snap-1'`, [since]);
      expect(moved!.n).to.be.greaterThan(1);
    });
  });

  describe("scheduled passes", () => {
    afterEach(stopAll);

    it("two replicas take one complete pass per interval between them", async () => {
      const INTERVAL_MS = 400;
      const [since] = await query<{ t: Date }>(knex, `SELECT clock_timestamp() AS t`);
      const env = { SNAPSHOT_INTERVAL_MS: String(INTERVAL_MS), HEARTBEAT_INTERVAL_MS: "20" };
      const [a, b] = await Promise.all([startWorker("sched-a", env), startWorker("sched-b", env)]);
      const passes = async () =>
        query<{ run: string; rows: number; times: number; gap_ms: number | null }>(
          knex,
          `SELECT run, rows, times, extract(epoch FROM taken_at - lag(taken_at) OVER (ORDER BY taken_at)) * 1000 AS gap_ms
             FROM (SELECT snapshot_run_id AS run, count(*)::int AS rows, count(DISTINCT taken_at)::int AS times, min(taken_at) AS taken_at
                     FROM inventory_snapshots WHERE trigger = 'SCHEDULED' AND taken_at >= ? GROUP BY snapshot_run_id) p
            ORDER BY taken_at`,
          [since!.t],
        );
      await until("eight scheduled passes", async () => (await passes()).length >= 8, 20_000);

      // Hold the snapshot lock: a pass in progress has committed, no new one starts
      // (scheduled passes skip their turn), so the count is final while we look.
      const holder = await knex.transaction();
      try {
        await query(holder, `SELECT pg_advisory_xact_lock(?, ?)`, SNAPSHOT_LOCK);
        const taken = await passes();
        for (const pass of taken) {
          expect(pass.rows, `pass ${pass.run} is complete`).to.equal(SKUS.length);
          expect(pass.times, `rows of pass ${pass.run} share one time`).to.equal(1);
        }
        const gaps = taken.slice(1).map((p) => p.gap_ms!);
        expect(Math.min(...gaps), `gaps between passes (ms): ${gaps.map((g) => g.toFixed(1)).join(", ")}`).to.be.at.least(INTERVAL_MS);
        // Both replicas look every 20 ms, so a due pass is not late by much.
        expect(Math.max(...gaps)).to.be.below(INTERVAL_MS + 1_000);
        // Each pass was counted once, by the replica that took it.
        await until("the metrics to count every pass", async () => {
          const counted = (await metric(a, "holdfast_snapshot_passes_total", 'trigger="scheduled"')) + (await metric(b, "holdfast_snapshot_passes_total", 'trigger="scheduled"'));
          return counted === taken.length;
        }, 5_000);
        const status = (await a.client.getWorkerStatus({})).status!;
        expect(status.snapshotInterval).to.deep.include({ seconds: 0n, nanos: INTERVAL_MS * 1_000_000 });
      } finally {
        await holder.rollback();
      }
    });

    it("replicas that fall due at the same moment take one pass between them", async () => {
      const INTERVAL_MS = 300;
      const [since] = await query<{ t: Date }>(knex, `SELECT clock_timestamp() AS t`);
      const env = { SNAPSHOT_INTERVAL_MS: String(INTERVAL_MS), HEARTBEAT_INTERVAL_MS: "20" };
      const workers = await Promise.all([startWorker("due-a", env), startWorker("due-b", env)]);
      const times = async () =>
        (
          await query<{ taken_at: string }>(
            knex,
            `SELECT DISTINCT taken_at::text AS taken_at FROM inventory_snapshots WHERE trigger = 'SCHEDULED' AND taken_at >= ? ORDER BY 1`,
            [since!.t],
          )
        ).map((r) => r.taken_at);
      await until("a first scheduled pass", async () => (await times()).length >= 1);
      // Retention (which deletes from the table too) runs at start: let it finish first.
      for (const w of workers) await until("a retention pass", async () => (await w.client.getWorkerStatus({})).status!.lastRetentionTime !== undefined);

      // Block every write to inventory_snapshots for longer than the interval: both
      // replicas fall due while it lasts and look every 20 ms. A pass that has the
      // snapshot lock queues behind our table lock; the other replica must skip its
      // turn rather than queue a second pass (whose snapshot would not see the first).
      const waiters = async () =>
        (
          await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'inventory_snapshots'::regclass AND NOT granted`)
        )[0]!.n;
      const blocker = await knex.transaction();
      let most = 0;
      try {
        await query(blocker, `LOCK TABLE inventory_snapshots IN SHARE MODE`);
        const window = Date.now() + INTERVAL_MS + 500;
        await until("a due pass to queue behind the table lock", async () => (most = Math.max(most, await waiters())) >= 1);
        while (Date.now() < window) most = Math.max(most, await waiters());
      } finally {
        await blocker.rollback();
      }
      expect(most, "passes queued at once").to.equal(1);
      const before = (await times()).length;
      await until("two more scheduled passes", async () => (await times()).length >= before + 2);
      const gaps = await query<{ gap_ms: number }>(
        knex,
        `SELECT extract(epoch FROM t - lag(t) OVER (ORDER BY t)) * 1000 AS gap_ms
           FROM unnest(?::timestamptz[]) AS x(t) ORDER BY t OFFSET 1`,
        [await times()],
      );
      expect(Math.min(...gaps.map((g) => g.gap_ms)), `gaps (ms): ${gaps.map((g) => g.gap_ms.toFixed(1)).join(", ")}`).to.be.at.least(INTERVAL_MS);
    });
  });

  describe("replicas", () => {
    afterEach(stopAll);

    it("GetWorkerStatus lists every live replica; one that stops leaves the list", async () => {
      const [a, b] = await Promise.all([startWorker("replica-a"), startWorker("replica-b")]);
      const listed = async (w: Worker) => (await w.client.getWorkerStatus({})).status!.replicas;
      for (const w of [a, b]) {
        const replicas = await listed(w);
        expect(replicas.map((r) => r.workerId)).to.deep.equal(["replica-a", "replica-b"]);
        expect(replicas.map((r) => r.host.slice(r.host.lastIndexOf("/") + 1))).to.deep.equal([String(a.process.child.pid), String(b.process.child.pid)]);
        for (const r of replicas) {
          expect(r.host).to.match(/^.+\/\d+$/);
          expect(date(r.lastHeartbeatTime).getTime()).to.be.at.least(date(r.startTime).getTime() - 1_000);
        }
      }
      // The start time is the replica's own (WorkerStatus.start_time).
      const own = (await a.client.getWorkerStatus({})).status!;
      expect(date(own.replicas[0]!.startTime).getTime()).to.equal(date(own.startTime).getTime());

      await stopWorker(b);
      expect((await listed(a)).map((r) => r.workerId)).to.deep.equal(["replica-a"]);
      const [row] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM worker_replicas WHERE worker_id = 'replica-b'`);
      expect(row!.n, "a clean stop removes the replica's row").to.equal(0);
    });

    it("renews the heartbeat, and puts back a row that vanished", async () => {
      const w = await startWorker("replica-hb", { HEARTBEAT_INTERVAL_MS: "100" });
      const heartbeat = async () => (await query<{ at: string | null }>(knex, `SELECT max(heartbeat_at)::text AS at FROM worker_replicas WHERE worker_id = 'replica-hb'`))[0]!.at;
      const first = await heartbeat();
      expect(first).to.not.equal(null);
      await until("a newer heartbeat", async () => (await heartbeat()) !== first, 5_000);
      await query(knex, `DELETE FROM worker_replicas WHERE worker_id = 'replica-hb'`);
      await until("the row to come back", async () => (await heartbeat()) !== null, 5_000);
      expect((await w.client.getWorkerStatus({})).status!.replicas.map((r) => r.workerId)).to.deep.equal(["replica-hb"]);
    });
  });

  describe("retention", () => {
    afterEach(stopAll);

    it("prunes expired idempotency records, old snapshots and long-dead replicas, never the ledger", async () => {
      expect(started, "no other replica prunes meanwhile").to.deep.equal([]);
      // Seeded in SQL: 12,001 records past their window (more than two batches), of
      // which one IN_FLIGHT with a lapsed lease; two that must stay: one IN_FLIGHT
      // past its window whose lease still runs, and one inside its window.
      await query(
        knex,
        `INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, response, status_code, created_at, completed_at, expires_at)
         SELECT 'admin:seed', 'expired-' || g, 'm', 'h', 'COMPLETED', '\\x00'::bytea, 0, now() - interval '2 days', now() - interval '2 days', now() - interval '1 day'
           FROM generate_series(1, 12000) g`,
      );
      await query(
        knex,
        `INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, created_at, expires_at, lease_expires_at) VALUES
           ('admin:seed', 'lapsed-lease', 'm', 'h', 'IN_FLIGHT', now() - interval '2 days', now() - interval '1 day', now() - interval '1 hour'),
           ('admin:seed', 'live-lease',   'm', 'h', 'IN_FLIGHT', now() - interval '2 days', now() - interval '1 minute', now() + interval '1 hour'),
           ('admin:seed', 'in-window',    'm', 'h', 'IN_FLIGHT', now() - interval '1 minute', now() + interval '1 hour', now() + interval '1 hour')`,
      );
      // Snapshots: 3 passes of every SKU older than the retention (1 hour here), one inside it.
      const seedPass = (age: string) =>
        query(
          knex,
          `INSERT INTO inventory_snapshots (snapshot_run_id, taken_at, sku_code, on_hand, reserved, allocated, available, version,
                                            waitlist_count, waitlist_units, inventory_updated_at, last_audit_event_id, trigger)
           SELECT ?::uuid, now() - ?::interval, sku_code, on_hand, reserved, allocated, available, version,
                  waitlist_count, waitlist_units, updated_at, NULL, 'SCHEDULED'
             FROM inventory`,
          [randomUUID(), age],
        );
      for (const age of ["2 hours", "1 day", "30 days"]) await seedPass(age);
      await seedPass("50 minutes");
      // Replicas: one silent for two days (pruned), one for two minutes (kept, not live).
      await query(
        knex,
        `INSERT INTO worker_replicas (worker_id, host, pid, version, started_at, heartbeat_at) VALUES
           ('dead-long', 'gone', 1, '0.0.1', now() - interval '3 days', now() - interval '2 days'),
           ('dead-recent', 'gone', 2, '0.0.1', now() - interval '1 hour', now() - interval '2 minutes')`,
      );
      // An old ledger event (consistent with its SKU: a no-op adjustment).
      await query(
        knex,
        `INSERT INTO audit_events (occurred_at, operation, sku_code, delta_on_hand, on_hand_before, reserved_before, allocated_before,
                                   on_hand_after, reserved_after, allocated_after, version_after, actor, reason)
         SELECT now() - interval '400 days', 'STOCK_ADJUSTED', sku_code, 0, on_hand, reserved, allocated, on_hand, reserved, allocated, version, 'admin:seed', 'old'
           FROM inventory WHERE sku_code = 'snap-6'`,
      );
      // Rate-limit logs: one whose last attempt left its window (pruned); one whose
      // expires_at passed under the window of its last attempt, but whose SKU's window
      // was lengthened since (kept: its attempts still count).
      await query(knex, `UPDATE skus SET rate_limit_max_attempts = 5, rate_limit_window_ms = 3600000 WHERE code = 'snap-1'`);
      await query(knex, `UPDATE skus SET rate_limit_max_attempts = 5, rate_limit_window_ms = 60000 WHERE code = 'snap-2'`);
      await query(
        knex,
        `INSERT INTO customer_attempt_windows (sku_code, customer_id, max_attempts, window_ms, admitted, last_attempt_at, last_admitted, expires_at)
         SELECT sku, 'c', 5, 60000, ARRAY[now() - interval '30 minutes'], now() - interval '30 minutes', true, now() - interval '29 minutes'
           FROM unnest(ARRAY['snap-1', 'snap-2']) AS sku`,
      );
      const countOf = async (sql: string) => (await query<{ n: number }>(knex, sql))[0]!.n;
      const ledger = await query<{ n: number; max: number }>(knex, `SELECT count(*)::int AS n, max(id)::int AS max FROM audit_events`);
      const oldSnapshots = await countOf(`SELECT count(*)::int AS n FROM inventory_snapshots WHERE taken_at < now() - interval '1 hour'`);
      const keptSnapshots = (await snapshotRows()) - oldSnapshots;
      const keptRecords = await countOf(`SELECT count(*)::int AS n FROM idempotency_records WHERE expires_at > now()`);
      expect(oldSnapshots).to.equal(3 * SKUS.length);

      // Retention runs when the worker starts, then every RETENTION_INTERVAL_MS.
      const w = await startWorker("retention", { SNAPSHOT_RETENTION_MS: String(60 * 60_000) });
      let status = (await w.client.getWorkerStatus({})).status!;
      await until("a retention pass", async () => {
        status = (await w.client.getWorkerStatus({})).status!;
        return status.lastRetentionTime !== undefined;
      });

      expect(status.idempotencyRecordsPrunedTotal).to.equal(12_001n);
      expect(status.snapshotsPrunedTotal).to.equal(BigInt(oldSnapshots));
      const left = await query<{ request_id: string }>(knex, `SELECT request_id FROM idempotency_records WHERE caller = 'admin:seed' ORDER BY request_id`);
      expect(left.map((r) => r.request_id)).to.deep.equal(["in-window", "live-lease"]);
      expect(await countOf(`SELECT count(*)::int AS n FROM idempotency_records WHERE caller <> 'admin:seed'`), "records inside their window").to.equal(keptRecords - 1);
      expect(await countOf(`SELECT count(*)::int AS n FROM inventory_snapshots WHERE taken_at < now() - interval '1 hour'`)).to.equal(0);
      expect(await snapshotRows(), "younger snapshots are kept").to.equal(keptSnapshots);
      const replicas = await query<{ worker_id: string }>(knex, `SELECT worker_id FROM worker_replicas ORDER BY worker_id`);
      expect(replicas.map((r) => r.worker_id)).to.deep.equal(["dead-recent", "retention"]);
      expect(status.replicas.map((r) => r.workerId), "only live replicas are listed").to.deep.equal(["retention"]);
      expect(await metric(w, "holdfast_retention_pruned_total", 'table="worker_replicas"')).to.equal(1);
      expect(await metric(w, "holdfast_retention_pruned_total", 'table="idempotency_records"')).to.equal(12_001);
      const windows = await query<{ sku_code: string }>(knex, `SELECT sku_code FROM customer_attempt_windows ORDER BY sku_code`);
      expect(windows.map((r) => r.sku_code), "rate-limit logs left").to.deep.equal(["snap-1"]);
      // The ledger is kept whole, however old.
      const [ledgerNow] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM audit_events WHERE id <= ?`, [ledger[0]!.max]);
      expect(ledgerNow!.n).to.equal(ledger[0]!.n);
      expect(await countOf(`SELECT count(*)::int AS n FROM audit_events WHERE occurred_at < now() - interval '399 days'`)).to.equal(1);

      // A later pass finds nothing more and adds nothing.
      const first = date(status.lastRetentionTime).getTime();
      await stopWorker(w);
      const again = await startWorker("retention-2", { SNAPSHOT_RETENTION_MS: String(60 * 60_000) });
      await until("a second retention pass", async () => (await again.client.getWorkerStatus({})).status!.lastRetentionTime !== undefined);
      const second = (await again.client.getWorkerStatus({})).status!;
      expect(date(second.lastRetentionTime).getTime()).to.be.greaterThan(first);
      expect(second.idempotencyRecordsPrunedTotal).to.equal(0n);
      expect(second.snapshotsPrunedTotal).to.equal(0n);
      expect(await snapshotRows()).to.equal(keptSnapshots);
    });
  });
});
