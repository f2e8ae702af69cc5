// Reconciliation (worker.proto: RunReconciliation, GetReconciliationRun,
// ListReconciliationRuns) against real processes: a reservation-service makes the
// books through its API (holds, allocations, confirms, releases, fulfilments), the
// test corrupts counters directly in SQL, and an expiry-worker finds and repairs the
// drift. Every claim is checked with plain SQL (the rows, the ledger) and through
// the reservation-service's CheckConsistency. The schedule is off (interval 0)
// except in the last describe, which has a database of its own.
import { randomUUID } from "node:crypto";
import { AssertionError, expect } from "chai";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ConsistencyViolationKind as Kind,
  ExpiryWorkerService,
  InventoryCounter as Counter,
  InventoryReservationService,
  ReconciliationMode as Mode,
  ReconciliationRunStatus as Status,
  ReconciliationTrigger as Trigger,
  type ReconciliationFinding,
  type ReconciliationRun,
} from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query, type AuditEventRow } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf, rpcFailureOf } from "../support/assertions.js";
import { failure } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";
import { testCaller } from "../support/auth.js";

type Inventory = GrpcJsClient<typeof InventoryReservationService>;
type Worker = GrpcJsClient<typeof ExpiryWorkerService>;

const rid = (label: string) => `${label}-${randomUUID()}`;
const date = (t: Timestamp | undefined): Date => {
  if (t === undefined) throw new AssertionError("expected a timestamp, got none");
  return timestampDate(t);
};
/** The worker settings of every test process: no schedule, no snapshots, short lock waits. */
const WORKER_ENV = { RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0", LOCK_TIMEOUT_MS: "1000" };

/** Polls `probe` until it returns a value (test/support/wait.ts), and returns it. */
async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  let value: T | undefined;
  await until(what, async () => (value = await probe()) !== undefined, timeoutMs, 50);
  return value!;
}

/** ErrorInfo metadata of a failed RPC. */
const errorMetadataOf = async (call: Promise<unknown>) => (await failure(call)).metadata;

/** A finding as plain values, for deep comparisons. */
function finding(f: ReconciliationFinding) {
  return {
    sku: f.sku,
    counter: Counter[f.counter],
    kind: Kind[f.kind],
    stored: Number(f.storedValue),
    lines: f.valueFromLines === undefined ? undefined : Number(f.valueFromLines),
    ledger: f.valueFromLedger === undefined ? undefined : Number(f.valueFromLedger),
    corrected: Number(f.correctedValue),
    repaired: f.repaired,
  };
}

interface Counters {
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  version: number;
}


const counters = async (knex: Knex, skus?: string[]) =>
  new Map(
    (
      await query<Counters>(
        knex,
        `SELECT sku_code, on_hand, reserved, allocated, version FROM inventory WHERE ?::text[] IS NULL OR sku_code = ANY(?::text[]) ORDER BY sku_code`,
        [skus ?? null, skus ?? null],
      )
    ).map((r) => [r.sku_code, r]),
  );
const ledgerSize = async (knex: Knex) => (await query<{ n: number; max: number | null }>(knex, `SELECT count(*)::int AS n, max(id) AS max FROM audit_events`))[0]!;
const repairEvents = (knex: Knex, runId: string) =>
  query<AuditEventRow>(knex, `SELECT * FROM audit_events WHERE reconciliation_run_id = ? ORDER BY id`, [runId]);

describe("expiry-worker: reconciliation", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let worker: ServiceProcess;
  let knex: Knex;
  let inv: Inventory;
  let work: Worker;

  /** 24 SKUs with on_hand 100, and real traffic through the API on each. */
  const SKUS = Array.from({ length: 24 }, (_, i) => `RC-${String(i).padStart(3, "0")}`);
  /** The single-SKU hold of each SKU (stays HELD). */
  const soloHold = new Map<string, string>();

  const run = async (mode: Mode, skus: string[] = [], extra: { requestId?: string; returnImmediately?: boolean } = {}) => {
    const res = await work.runReconciliation({ requestId: extra.requestId ?? rid("recon"), mode, skus, returnImmediately: extra.returnImmediately ?? false });
    if (res.run === undefined) throw new AssertionError("RunReconciliation answered without a run");
    return { run: res.run, replayed: res.replayed };
  };
  const get = async (id: string) => (await work.getReconciliationRun({ runId: id })).run!;
  const finalRun = (id: string) =>
    eventually(`run ${id} to finish`, async () => {
      const r = await get(id);
      return r.status === Status.RUNNING ? undefined : r;
    });

  before(async function () {
    this.timeout(120_000);
    db = await createTestDatabase("reconciliation");
    [svc, worker] = await Promise.all([
      startService("reservation-service", db.url),
      startService("expiry-worker", db.url, { ...WORKER_ENV, WORKER_ID: "recon-w1" }),
    ]);
    knex = createKnex({ url: db.url, poolMax: 4 });
    inv = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    work = createGrpcJsClient(ExpiryWorkerService, worker.grpcAddress, undefined, testCaller);

    for (const sku of SKUS) await inv.createSku({ requestId: rid("sku"), sku, name: `Item ${sku}`, initialOnHand: 100n });
    for (const [i, sku] of SKUS.entries()) {
      const next = SKUS[(i + 1) % SKUS.length]!;
      const solo = await inv.createHold({ requestId: rid("hold"), customerId: `c-${i}`, lines: [{ sku, quantity: (i % 5) + 1 }] });
      soloHold.set(sku, solo.reservation!.id);
      const pair = await inv.createHold({ requestId: rid("hold"), customerId: `d-${i}`, lines: [{ sku, quantity: 1 }, { sku: next, quantity: 2 }] });
      if (i % 3 === 0) await inv.confirmHold({ requestId: rid("confirm"), reservationId: pair.reservation!.id });
      if (i % 3 === 1) await inv.releaseHold({ requestId: rid("release"), reservationId: pair.reservation!.id });
      if (i % 2 === 0) {
        const alloc = await inv.createAllocation({ requestId: rid("alloc"), customerId: `e-${i}`, lines: [{ sku, quantity: 2 }] });
        if (i % 4 === 0) await inv.fulfillAllocation({ requestId: rid("fulfil"), reservationId: alloc.reservation!.id });
      }
    }
    await assertInvariants(knex, SKUS);
  });
  after(async () => {
    inv?.close();
    work?.close();
    await knex?.destroy();
    await Promise.all([svc?.stop(), worker?.stop()]);
    await db?.drop();
  });

  it("CHECK on consistent books: OK, no findings, nothing written, one log line", async () => {
    const before = { counters: await counters(knex), ledger: await ledgerSize(knex) };
    const requestId = rid("clean");
    const { run: r, replayed } = await run(Mode.CHECK, [], { requestId });
    expect(replayed).to.equal(false);
    expect(r).to.include({
      mode: Mode.CHECK,
      status: Status.OK,
      trigger: Trigger.ON_DEMAND,
      skusChecked: BigInt(SKUS.length),
      skusWithFindings: 0n,
      findingCount: 0n,
      repairedCount: 0n,
      error: "",
      workerId: "recon-w1",
      requestedBy: "admin:test-admin",
      requestId,
    });
    expect(r.skus).to.deep.equal([]);
    expect(r.findings).to.deep.equal([]);
    expect(date(r.endTime).getTime()).to.be.at.least(date(r.startTime).getTime());
    expect(await counters(knex)).to.deep.equal(before.counters);
    expect(await ledgerSize(knex)).to.deep.equal(before.ledger);
    const [row] = await query<{ status: string; findings: unknown[] }>(knex, `SELECT status, findings FROM reconciliation_runs WHERE id = ?`, [r.id]);
    expect(row).to.deep.equal({ status: "OK", findings: [] });
    const logged = await eventually("the run's log line", async () =>
      worker.output.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "reconciliation run finished" && l.runId === r.id),
    );
    expect(logged).to.include({ mode: "CHECK", status: "OK", skusChecked: SKUS.length, findings: 0, repaired: 0 });
    expect(logged.ms).to.be.a("number");
  });

  it("counters corrupted directly in SQL: CHECK reports exactly those SKUs, REPAIR fixes them with ledger events, CheckConsistency is then clean", async () => {
    const good = await counters(knex);
    const was = (sku: string) => good.get(sku)!;
    // Drift the lines do not explain, and one the lines do (RC-019: a line and the
    // counter both grew, only the ledger disagrees).
    await query(knex, `UPDATE inventory SET reserved = reserved + 3 WHERE sku_code = 'RC-003'`);
    await query(knex, `UPDATE inventory SET on_hand = on_hand + 5 WHERE sku_code = 'RC-007'`);
    await query(knex, `UPDATE inventory SET allocated = allocated - 2 WHERE sku_code = 'RC-010'`);
    await query(knex, `UPDATE inventory SET reserved = reserved + 1, on_hand = on_hand - 4 WHERE sku_code = 'RC-015'`);
    await query(knex, `UPDATE reservation_items SET quantity = quantity + 2 WHERE reservation_id = ? AND sku_code = 'RC-019'`, [soloHold.get("RC-019")]);
    await query(knex, `UPDATE inventory SET reserved = reserved + 2 WHERE sku_code = 'RC-019'`);
    const corrupted = await counters(knex);
    const ledgerBefore = await ledgerSize(knex);

    const expected = [
      { sku: "RC-003", counter: "RESERVED", kind: "RESERVED_MISMATCH", stored: was("RC-003").reserved + 3, lines: was("RC-003").reserved, ledger: was("RC-003").reserved, corrected: was("RC-003").reserved },
      { sku: "RC-007", counter: "ON_HAND", kind: "LEDGER_MISMATCH", stored: was("RC-007").on_hand + 5, lines: undefined, ledger: was("RC-007").on_hand, corrected: was("RC-007").on_hand },
      { sku: "RC-010", counter: "ALLOCATED", kind: "ALLOCATED_MISMATCH", stored: was("RC-010").allocated - 2, lines: was("RC-010").allocated, ledger: was("RC-010").allocated, corrected: was("RC-010").allocated },
      { sku: "RC-015", counter: "ON_HAND", kind: "LEDGER_MISMATCH", stored: was("RC-015").on_hand - 4, lines: undefined, ledger: was("RC-015").on_hand, corrected: was("RC-015").on_hand },
      { sku: "RC-015", counter: "RESERVED", kind: "RESERVED_MISMATCH", stored: was("RC-015").reserved + 1, lines: was("RC-015").reserved, ledger: was("RC-015").reserved, corrected: was("RC-015").reserved },
      { sku: "RC-019", counter: "RESERVED", kind: "LEDGER_MISMATCH", stored: was("RC-019").reserved + 2, lines: was("RC-019").reserved + 2, ledger: was("RC-019").reserved, corrected: was("RC-019").reserved + 2 },
    ];

    // CHECK: exactly those, and nothing changes.
    const { run: check } = await run(Mode.CHECK);
    expect(check).to.include({ status: Status.ISSUES, skusChecked: BigInt(SKUS.length), skusWithFindings: 5n, findingCount: 6n, repairedCount: 0n });
    expect(check.findings.map(finding)).to.deep.equal(expected.map((e) => ({ ...e, repaired: false })));
    expect(check.findings.every((f) => f.repairAuditEventId === 0n)).to.equal(true);
    expect(check.findings[0]!.detail).to.equal(`reserved is ${was("RC-003").reserved + 3}, the lines of HELD reservations sum to ${was("RC-003").reserved} (replaying the ledger gives ${was("RC-003").reserved})`);
    expect(await counters(knex)).to.deep.equal(corrupted);
    expect(await ledgerSize(knex)).to.deep.equal(ledgerBefore);

    // The reservation-service sees the same SKUs.
    const consistency = await inv.checkConsistency({});
    expect(consistency.consistent).to.equal(false);
    expect([...new Set(consistency.violations.map((v) => v.sku))]).to.deep.equal(["RC-003", "RC-007", "RC-010", "RC-015", "RC-019"]);

    // REPAIR: the same findings, repaired, each through RECONCILIATION_REPAIR events.
    const { run: repair } = await run(Mode.REPAIR);
    expect(repair).to.include({ mode: Mode.REPAIR, status: Status.ISSUES, skusWithFindings: 5n, findingCount: 6n, repairedCount: 6n });
    expect(repair.findings.map(finding)).to.deep.equal(expected.map((e) => ({ ...e, repaired: true })));

    const events = await repairEvents(knex, repair.id);
    const bySku = (sku: string) => events.filter((e) => e.sku_code === sku);
    const vectors = (e: AuditEventRow) => ({
      before: [e.on_hand_before, e.reserved_before, e.allocated_before],
      after: [e.on_hand_after, e.reserved_after, e.allocated_after],
      version: e.version_after,
    });
    const triple = (c: { on_hand: number; reserved: number; allocated: number }) => [c.on_hand, c.reserved, c.allocated];
    for (const sku of ["RC-003", "RC-007", "RC-010", "RC-015"]) {
      // Two events: the drift recorded (ledger -> found, row unchanged), then corrected (found -> ledger/lines).
      const [drift, fix] = bySku(sku);
      expect(bySku(sku)).to.have.length(2);
      expect(vectors(drift!)).to.deep.equal({ before: triple(was(sku)), after: triple(corrupted.get(sku)!), version: corrupted.get(sku)!.version });
      expect(vectors(fix!)).to.deep.equal({ before: triple(corrupted.get(sku)!), after: triple(was(sku)), version: corrupted.get(sku)!.version + 1 });
      expect(drift!.details).to.deep.equal({ repair: "record_drift" });
      expect(fix!.reason).to.include("counters corrected");
      const ids = repair.findings.filter((f) => f.sku === sku).map((f) => Number(f.repairAuditEventId));
      expect(ids.every((id) => id === fix!.id), `${sku}: findings name the correcting event`).to.equal(true);
    }
    // RC-019: the counter was right by its lines; only the drift is recorded, nothing moves.
    const [drift19] = bySku("RC-019");
    expect(bySku("RC-019")).to.have.length(1);
    expect(vectors(drift19!)).to.deep.equal({ before: triple(was("RC-019")), after: triple(corrupted.get("RC-019")!), version: corrupted.get("RC-019")!.version });
    expect(Number(repair.findings[5]!.repairAuditEventId)).to.equal(drift19!.id);
    for (const e of events) {
      expect(e).to.include({ operation: "RECONCILIATION_REPAIR", actor: "worker:recon-w1", request_id: null, reconciliation_run_id: repair.id });
    }

    const after = await counters(knex);
    for (const sku of ["RC-003", "RC-007", "RC-010", "RC-015"]) {
      expect(triple(after.get(sku)!), sku).to.deep.equal(triple(was(sku)));
      expect(after.get(sku)!.version).to.equal(corrupted.get(sku)!.version + 1);
    }
    expect(after.get("RC-019")).to.deep.equal(corrupted.get("RC-019"));
    // Nothing else was touched.
    for (const sku of SKUS.filter((s) => !["RC-003", "RC-007", "RC-010", "RC-015", "RC-019"].includes(s))) expect(after.get(sku)).to.deep.equal(good.get(sku));

    await checkConsistencyClean(inv);
    await assertInvariants(knex);
    const { run: again } = await run(Mode.CHECK);
    expect(again).to.include({ status: Status.OK, findingCount: 0n });
  });

  it("an unrepairable drift (the ledger's on_hand is below what the lines commit) is reported repaired = false and nothing is written for it", async () => {
    const sku = "RC-U";
    await inv.createSku({ requestId: rid("sku"), sku, name: "Unrepairable", initialOnHand: 10n });
    // Stock appears outside the ledger, and is then sold through the API.
    await query(knex, `UPDATE inventory SET on_hand = on_hand + 10 WHERE sku_code = ?`, [sku]);
    const hold = await inv.createHold({ requestId: rid("hold"), customerId: "u-1", lines: [{ sku, quantity: 15 }] });
    const before = await counters(knex, [sku]);

    const { run: repair } = await run(Mode.REPAIR, [sku]);
    expect(repair).to.include({ status: Status.ISSUES, findingCount: 1n, repairedCount: 0n, skusChecked: 1n });
    expect(repair.skus).to.deep.equal([sku]);
    expect(repair.findings.map(finding)).to.deep.equal([
      { sku, counter: "ON_HAND", kind: "LEDGER_MISMATCH", stored: 20, lines: undefined, ledger: 10, corrected: 10, repaired: false },
    ]);
    expect(repair.findings[0]!.repairAuditEventId).to.equal(0n);
    expect(repair.findings[0]!.detail).to.include("Not repaired").and.include("AdjustStock").and.include("run REPAIR again");
    expect(await repairEvents(knex, repair.id)).to.deep.equal([]);
    expect(await counters(knex, [sku])).to.deep.equal(before);

    // Once the units are no longer committed, the same repair goes through.
    await inv.releaseHold({ requestId: rid("release"), reservationId: hold.reservation!.id });
    const { run: retry } = await run(Mode.REPAIR, [sku]);
    expect(retry).to.include({ status: Status.ISSUES, findingCount: 1n, repairedCount: 1n });
    expect((await counters(knex, [sku])).get(sku)).to.include({ on_hand: 10, reserved: 0 });
    // Counters = ledger replay again. (assertInvariants would still object to this SKU:
    // the hold's events carry the before values of the drifted row, a break in the
    // per-SKU chain that an append-only ledger keeps for ever, as evidence.)
    const [replay] = await query<{ on_hand: number; reserved: number; allocated: number }>(
      knex,
      `SELECT sum(delta_on_hand)::int AS on_hand, sum(delta_reserved)::int AS reserved, sum(delta_allocated)::int AS allocated FROM audit_events WHERE sku_code = ?`,
      [sku],
    );
    expect(replay).to.deep.equal({ on_hand: 10, reserved: 0, allocated: 0 });
    await checkConsistencyClean(inv, [sku]);
  });

  it("a REPAIR that cannot lock its rows is RUNNING meanwhile (overlapping runs are refused), retries, then ends FAILED with a clear error", async () => {
    await query(knex, `UPDATE inventory SET reserved = reserved + 1 WHERE sku_code = 'RC-021'`);
    const blocker = await knex.transaction();
    try {
      await query(blocker, `SELECT 1 FROM inventory WHERE sku_code = 'RC-021' FOR UPDATE`);
      const { run: busy } = await run(Mode.REPAIR, ["RC-021"], { returnImmediately: true });
      expect(busy).to.include({ status: Status.RUNNING, mode: Mode.REPAIR });
      expect(busy.endTime).to.equal(undefined);
      expect(date(busy.leaseExpireTime).getTime()).to.be.greaterThan(Date.now());

      for (const skus of [["RC-020", "RC-021"], []]) {
        // Refused, and recorded: the same request again replays the refusal.
        const requestId = rid("overlap");
        expect(await rpcFailureOf(run(Mode.CHECK, skus, { requestId }))).to.include({ code: Code.FailedPrecondition, reason: "RECONCILIATION_IN_PROGRESS" });
        expect(await errorMetadataOf(run(Mode.CHECK, skus, { requestId }))).to.include({ run_id: busy.id, replayed: "true" });
      }
      // A disjoint run is not blocked.
      expect((await run(Mode.CHECK, ["RC-000"])).run.status).to.equal(Status.OK);

      const failed = await finalRun(busy.id);
      expect(failed.status).to.equal(Status.FAILED);
      expect(failed.error).to.include("could not lock the inventory rows of RC-021").and.include("run REPAIR again");
      expect(failed.findings).to.deep.equal([]);
      expect(await repairEvents(knex, busy.id)).to.deep.equal([]);
    } finally {
      await blocker.rollback();
    }
    const { run: repaired } = await run(Mode.REPAIR, ["RC-021"]);
    expect(repaired).to.include({ status: Status.ISSUES, repairedCount: 1n });
    await assertInvariants(knex, ["RC-021"]);
  });

  it("concurrent overlapping requests: exactly one run starts, the others are refused RECONCILIATION_IN_PROGRESS", async () => {
    await query(knex, `UPDATE inventory SET reserved = reserved + 1 WHERE sku_code = 'RC-023'`);
    const blocker = await knex.transaction();
    let winner: ReconciliationRun;
    try {
      // The first run to start blocks on the row lock, so it is RUNNING while the others arrive.
      await query(blocker, `SELECT 1 FROM inventory WHERE sku_code = 'RC-023' FOR UPDATE`);
      const outcomes = await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          work
            .runReconciliation({ requestId: rid("race"), mode: Mode.REPAIR, skus: i % 2 === 0 ? ["RC-023"] : ["RC-022", "RC-023"], returnImmediately: true })
            .then((r) => ({ ok: true as const, run: r.run! }), (err: unknown) => ({ ok: false as const, err })),
        ),
      );
      const started = outcomes.flatMap((o) => (o.ok ? [o.run] : []));
      expect(started, "runs started").to.have.length(1);
      winner = started[0]!;
      for (const o of outcomes) {
        if (o.ok) continue;
        expect(o.err).to.be.instanceOf(ConnectError);
        const info = (o.err as ConnectError).findDetails(ErrorInfoSchema)[0];
        expect(info).to.deep.include({ reason: "RECONCILIATION_IN_PROGRESS" });
        expect(info!.metadata).to.include({ run_id: winner.id });
      }
    } finally {
      await blocker.rollback();
    }
    // Released within its first lock wait: the run goes on and repairs.
    const done = await finalRun(winner.id);
    expect(done).to.include({ status: Status.ISSUES, repairedCount: 1n });
    await assertInvariants(knex, ["RC-023"]);
  });

  it("return_immediately answers RUNNING at once; GetReconciliationRun is polled to the end; a replay returns the same run in its current state", async () => {
    const requestId = rid("bg");
    const first = await run(Mode.CHECK, ["RC-005", "RC-001", "RC-005"], { requestId, returnImmediately: true });
    expect(first.replayed).to.equal(false);
    expect(first.run!.status).to.equal(Status.RUNNING);
    expect(first.run!.skus).to.deep.equal(["RC-001", "RC-005"]);
    const done = await finalRun(first.run!.id);
    expect(done).to.include({ status: Status.OK, skusChecked: 2n });

    const replay = await run(Mode.CHECK, ["RC-005", "RC-001", "RC-005"], { requestId, returnImmediately: true });
    expect(replay.replayed).to.equal(true);
    expect(replay.run).to.deep.equal(done);

    // The same request_id with another request.
    expect(await rpcFailureOf(run(Mode.REPAIR, ["RC-001"], { requestId }))).to.include({ code: Code.InvalidArgument, reason: "IDEMPOTENCY_KEY_REUSED" });
    const [{ n }] = (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM reconciliation_runs WHERE request_id = ?`, [requestId])) as [{ n: number }];
    expect(n).to.equal(1);
  });

  it("a RUNNING run whose lease expired ends FAILED with the contract's error, and no longer blocks", async () => {
    const stale = async () =>
      (
        await query<{ id: string; lease_expires_at: Date }>(
          knex,
          `INSERT INTO reconciliation_runs (mode, trigger, requested_by, worker_id, created_at, started_at, lease_expires_at)
           VALUES ('CHECK', 'SCHEDULED', 'system:schedule', 'dead-worker', now() - interval '5 minutes', now() - interval '5 minutes', now() - interval '1 minute')
           RETURNING id, lease_expires_at`,
        )
      )[0]!;
    const errorOf = (lease: Date) => new RegExp(`^worker dead-worker stopped: lease expired at ${lease.toISOString().slice(0, 19)}\\.\\d{3}Z$`);

    // Found by GetReconciliationRun.
    const a = await stale();
    const got = await get(a.id);
    expect(got.status).to.equal(Status.FAILED);
    expect(got.error).to.match(errorOf(a.lease_expires_at));
    expect(Math.abs(new Date(got.error.slice(got.error.lastIndexOf(" ") + 1)).getTime() - a.lease_expires_at.getTime())).to.be.below(1);
    expect(date(got.endTime).getTime()).to.be.at.least(date(got.startTime).getTime());

    // Found by a RunReconciliation it would have blocked (it covers every SKU).
    const b = await stale();
    const { run: r } = await run(Mode.CHECK, ["RC-002"]);
    expect(r.status).to.equal(Status.OK);
    const [row] = await query<{ status: string; error: string }>(knex, `SELECT status, error FROM reconciliation_runs WHERE id = ?`, [b.id]);
    expect(row!.status).to.equal("FAILED");
    expect(row!.error).to.match(errorOf(b.lease_expires_at));

    // Found by a listing.
    const c = await stale();
    const listed = await work.listReconciliationRuns({ statuses: [Status.RUNNING] });
    expect(listed.runs.map((x) => x.id)).to.not.include(c.id);
    expect((await get(c.id)).status).to.equal(Status.FAILED);

    // A live lease does block (the lease, not the status, decides).
    const [live] = await query<{ id: string }>(
      knex,
      `INSERT INTO reconciliation_runs (mode, trigger, requested_by, worker_id, sku_filter, started_at, lease_expires_at)
       VALUES ('CHECK', 'SCHEDULED', 'system:schedule', 'other-worker', ARRAY['RC-009']::text[], now(), now() + interval '1 hour') RETURNING id`,
    );
    expect(await errorMetadataOf(run(Mode.CHECK, ["RC-009"]))).to.include({ run_id: live!.id });
    expect(await rpcFailureOf(run(Mode.CHECK, ["RC-009"]))).to.include({ code: Code.FailedPrecondition, reason: "RECONCILIATION_IN_PROGRESS" });
    expect((await get(live!.id)).status).to.equal(Status.RUNNING);
    await query(knex, `UPDATE reconciliation_runs SET status = 'FAILED', finished_at = now(), error = 'test cleanup' WHERE id = ?`, [live!.id]);
  });

  it("answers NOT_FOUND naming every unknown SKU, creates no run, and replays the refusal for the same request_id", async () => {
    const requestId = rid("unknown");
    const first = await rejectionOf(run(Mode.CHECK, ["RC-000", "NOPE-2", "NOPE-1"], { requestId }));
    expect(first).to.be.instanceOf(ConnectError);
    expect((first as ConnectError).code).to.equal(Code.NotFound);
    const info = (first as ConnectError).findDetails(ErrorInfoSchema)[0]!;
    expect(info).to.include({ reason: "SKU_NOT_FOUND" });
    expect(info.metadata).to.include({ sku: "NOPE-1,NOPE-2" });
    const again = await errorMetadataOf(run(Mode.CHECK, ["RC-000", "NOPE-2", "NOPE-1"], { requestId }));
    expect(again).to.include({ sku: "NOPE-1,NOPE-2", replayed: "true" });
    const [{ n }] = (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM reconciliation_runs WHERE request_id = ?`, [requestId])) as [{ n: number }];
    expect(n).to.equal(0);
  });

  it("lists runs newest first, page by page (microsecond keys), with status and mode filters, without findings", async () => {
    // Three runs created by one statement share created_at to the microsecond: only
    // the id tells them apart, and no page may skip or repeat one.
    await query(
      knex,
      `INSERT INTO reconciliation_runs (mode, status, trigger, requested_by, worker_id, started_at, finished_at, lease_expires_at, error)
       SELECT 'REPAIR', 'FAILED', 'SCHEDULED', 'system:schedule', 'old-worker', now(), now(), now(), 'test: ' || g FROM generate_series(1, 3) g`,
    );
    type Summary = { id: string; status: string; mode: string; finding_count: number };
    const inOrder = (where: string, params: unknown[] = []) =>
      query<Summary>(knex, `SELECT id, status, mode, finding_count FROM reconciliation_runs ${where} ORDER BY created_at DESC, id DESC`, params);

    const pages = async (req: { statuses?: Status[]; mode?: Mode }, pageSize: number) => {
      const runs: ReconciliationRun[] = [];
      let pageToken = "";
      for (let i = 0; i < 100; i++) {
        const page = await work.listReconciliationRuns({ ...req, pageSize, pageToken });
        expect(page.runs.length).to.be.at.most(pageSize);
        runs.push(...page.runs);
        if (page.nextPageToken === "") return runs;
        pageToken = page.nextPageToken;
      }
      throw new AssertionError("more than 100 pages");
    };

    const all = await inOrder("");
    expect(all.length).to.be.greaterThan(10);
    const listed = await pages({}, 2);
    expect(listed.map((r) => r.id)).to.deep.equal(all.map((r) => r.id));
    for (const r of listed) {
      expect(r.findings).to.deep.equal([]);
      expect(Number(r.findingCount)).to.equal(all.find((x) => x.id === r.id)!.finding_count);
    }
    expect(listed.some((r) => r.findingCount > 0n)).to.equal(true);
    expect((await pages({}, 1)).map((r) => r.id)).to.deep.equal(all.map((r) => r.id));
    expect((await work.listReconciliationRuns({})).runs.map((r) => r.id)).to.deep.equal(all.slice(0, 50).map((r) => r.id));

    const issues = await pages({ statuses: [Status.ISSUES, Status.FAILED] }, 3);
    expect(issues.map((r) => r.id)).to.deep.equal((await inOrder(`WHERE status IN ('ISSUES', 'FAILED')`)).map((r) => r.id));
    const repairs = await pages({ mode: Mode.REPAIR }, 2);
    expect(repairs.map((r) => r.id)).to.deep.equal((await inOrder(`WHERE mode = 'REPAIR'`)).map((r) => r.id));
    const okChecks = await pages({ mode: Mode.CHECK, statuses: [Status.OK] }, 2);
    expect(okChecks.map((r) => r.id)).to.deep.equal((await inOrder(`WHERE mode = 'CHECK' AND status = 'OK'`)).map((r) => r.id));
    expect(okChecks.length).to.be.greaterThan(2);

    // A token is bound to its filters.
    const first = await work.listReconciliationRuns({ pageSize: 1, mode: Mode.CHECK });
    for (const req of [{ pageToken: first.nextPageToken, mode: Mode.REPAIR }, { pageToken: "garbage!" }]) {
      expect(await rpcFailureOf(work.listReconciliationRuns(req))).to.include({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
    }
  });

  it("refuses bad input with INVALID_ARGUMENT, records nothing, and answers NOT_FOUND for an unknown run", async () => {
    const count = async () =>
      (await query<{ runs: number; records: number }>(knex, `SELECT (SELECT count(*)::int FROM reconciliation_runs) AS runs, (SELECT count(*)::int FROM idempotency_records) AS records`))[0];
    const before = await count();
    const requestId = rid("bad");
    const bad = [
      { requestId: "", mode: Mode.CHECK, skus: [] },
      { requestId: "has space", mode: Mode.CHECK, skus: [] },
      { requestId, mode: Mode.UNSPECIFIED, skus: [] },
      { requestId, mode: 7 as Mode, skus: [] },
      { requestId, mode: Mode.CHECK, skus: ["bad sku"] },
      { requestId, mode: Mode.CHECK, skus: Array.from({ length: 10_001 }, (_, i) => `S-${i}`) },
    ];
    for (const req of bad) {
      expect(await rpcFailureOf(work.runReconciliation(req)), JSON.stringify(req).slice(0, 80)).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
    }
    for (const runId of ["", "not-a-uuid", randomUUID().toUpperCase()]) {
      expect(await rpcFailureOf(work.getReconciliationRun({ runId }))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
    }
    for (const req of [{ pageSize: -1 }, { statuses: [99 as Status] }, { statuses: [Status.UNSPECIFIED] }, { mode: 5 as Mode }]) {
      expect(await rpcFailureOf(work.listReconciliationRuns(req))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
    }
    expect(await count()).to.deep.equal(before);

    const unknown = randomUUID();
    expect(await rpcFailureOf(work.getReconciliationRun({ runId: unknown }))).to.include({ code: Code.NotFound, reason: "RECONCILIATION_RUN_NOT_FOUND" });
    expect(await errorMetadataOf(work.getReconciliationRun({ runId: unknown }))).to.include({ run_id: unknown });

    // The refused request_id was not recorded: it is still free.
    expect((await run(Mode.CHECK, ["RC-004"], { requestId })).run.status).to.equal(Status.OK);
  });

  it("a replica renews the lease of a slow run past its first expiry; when it shuts down the run ends FAILED: worker <id> stopped: shutting down", async () => {
    // A short lease, renewed at every heartbeat; a lock wait (3 s) longer than the lease.
    const second = await startService("expiry-worker", db.url, {
      ...WORKER_ENV,
      WORKER_ID: "recon-w2",
      LOCK_TIMEOUT_MS: "3000",
      RECONCILIATION_LEASE_MS: "1500",
      HEARTBEAT_INTERVAL_MS: "300",
    });
    const client = createGrpcJsClient(ExpiryWorkerService, second.grpcAddress, undefined, testCaller);
    await query(knex, `UPDATE inventory SET allocated = allocated + 1 WHERE sku_code = 'RC-022'`);
    const blocker = await knex.transaction();
    let runId: string;
    try {
      await query(blocker, `SELECT 1 FROM inventory WHERE sku_code = 'RC-022' FOR UPDATE`);
      const { run: started } = await client.runReconciliation({ requestId: rid("stop"), mode: Mode.REPAIR, skus: ["RC-022"], returnImmediately: true });
      runId = started!.id;
      expect(started!).to.include({ status: Status.RUNNING, workerId: "recon-w2" });
      const firstLease = date(started!.leaseExpireTime).getTime();
      // Read through the OTHER replica, which would end the run if its lease had lapsed.
      const renewed = await eventually("the run to outlive its first lease", async () => {
        const r = await get(runId);
        if (r.status !== Status.RUNNING) throw new AssertionError(`run ended ${Status[r.status]}: ${r.error}`);
        return Date.now() > firstLease + 300 ? r : undefined;
      });
      expect(date(renewed.leaseExpireTime).getTime()).to.be.greaterThan(firstLease);
      client.close();
      expect(await second.stop()).to.equal(0);
    } finally {
      await blocker.rollback();
    }
    const stopped = await get(runId);
    expect(stopped).to.include({ status: Status.FAILED, error: "worker recon-w2 stopped: shutting down", repairedCount: 0n });
    expect(await repairEvents(knex, runId)).to.deep.equal([]);
    // Another replica may now repair it.
    expect((await run(Mode.REPAIR, ["RC-022"])).run).to.include({ status: Status.ISSUES, repairedCount: 1n });
    await assertInvariants(knex, SKUS);
    await checkConsistencyClean(inv);
  });
});

describe("expiry-worker: scheduled reconciliation", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  const INTERVAL_MS = 1500;

  before(async () => {
    db = await createTestDatabase("reconciliation_schedule");
    svc = await startService("reservation-service", db.url);
    knex = createKnex({ url: db.url, poolMax: 2 });
  });
  after(async () => {
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  it("two replicas make one SCHEDULED run per interval, in the configured mode", async function () {
    this.timeout(60_000);
    const inv = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    for (const sku of ["SC-1", "SC-2", "SC-3"]) await inv.createSku({ requestId: rid("sku"), sku, name: sku, initialOnHand: 20n });
    await inv.createHold({ requestId: rid("hold"), customerId: "s-1", lines: [{ sku: "SC-2", quantity: 4 }] });
    await query(knex, `UPDATE inventory SET reserved = reserved + 2 WHERE sku_code = 'SC-2'`);

    const env = { SNAPSHOT_INTERVAL_MS: "0", RECONCILIATION_INTERVAL_MS: String(INTERVAL_MS), RECONCILIATION_SCHEDULED_MODE: "REPAIR", HEARTBEAT_INTERVAL_MS: "100" };
    const workers = await Promise.all([
      startService("expiry-worker", db.url, { ...env, WORKER_ID: "sched-a" }),
      startService("expiry-worker", db.url, { ...env, WORKER_ID: "sched-b" }),
    ]);
    type Row = { id: string; mode: string; status: string; trigger: string; requested_by: string; request_id: string | null; worker_id: string; created_us: string; finding_count: number; repaired_count: number };
    let rows: Row[];
    try {
      rows = await eventually("three finished scheduled runs", async () => {
        const found = await query<Row>(
          knex,
          `SELECT id, mode, status, trigger, requested_by, request_id, worker_id, (extract(epoch from created_at) * 1000000)::bigint::text AS created_us,
                  finding_count, repaired_count
             FROM reconciliation_runs ORDER BY created_at, id`,
        );
        return found.length >= 3 && found.slice(0, 3).every((r) => r.status !== "RUNNING") ? found : undefined;
      }, 30_000);
      const status = createGrpcJsClient(ExpiryWorkerService, workers[0].grpcAddress, undefined, testCaller);
      try {
        const { status: s } = await status.getWorkerStatus({});
        expect(s!.reconciliationInterval).to.deep.include({ seconds: 1n, nanos: 500_000_000 });
        expect(s!.lastReconciliation?.trigger).to.equal(Trigger.SCHEDULED);
        expect(s!.lastReconciliation?.findings).to.deep.equal([]);
      } finally {
        status.close();
      }
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    for (const r of rows) {
      expect(r).to.include({ mode: "REPAIR", trigger: "SCHEDULED", requested_by: "system:schedule", request_id: null });
      expect(["sched-a", "sched-b"]).to.include(r.worker_id);
    }
    // One per interval across both replicas: consecutive creations at least an interval apart.
    for (let i = 1; i < rows.length; i++) {
      expect(Number(BigInt(rows[i]!.created_us) - BigInt(rows[i - 1]!.created_us))).to.be.at.least(INTERVAL_MS * 1000);
    }
    expect(rows[0]).to.include({ status: "ISSUES", finding_count: 1, repaired_count: 1 });
    for (const r of rows.slice(1, 3)) expect(r).to.include({ status: "OK", finding_count: 0 });
    await checkConsistencyClean(inv);
    await assertInvariants(knex);
    inv.close();
  });
});
