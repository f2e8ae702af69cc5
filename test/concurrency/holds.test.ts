// Concurrency of CreateHold / CreateAllocation across two reservation-service
// processes sharing one database: no oversell under either locking strategy,
// no deadlock between overlapping multi-SKU batches, the ledger and the
// counters agree afterwards, and idempotency holds for concurrent duplicates,
// refusals and restarts. The "[holds]" lines printed by the hot-SKU tests are
// the figures quoted in docs/concurrency.md.
import { performance } from "node:perf_hooks";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import {
  InventoryReservationService,
  LockingStrategy,
  ReservationStatus,
  ReservationType,
  type Reservation,
} from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { failure, outcome, prng, range, type Failure, type Outcome } from "../support/calls.js";
import { testCaller } from "../support/auth.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

/**
 * OPTIMISTIC compare-and-set attempts per request (the configuration's maximum).
 * On one SKU, a request's attempt can only lose to a grant committed after that
 * attempt's read while stock is still left afterwards, so a request loses at most
 * (units - 1) times: with no more units than this, a request can never exhaust its
 * attempts, and CONFLICT_RETRIES_EXHAUSTED cannot happen in the hot-SKU test.
 */
const OPTIMISTIC_MAX_ATTEMPTS = 100;

/** Environment of both processes (see services/reservation-service/src/config.ts). */
const PROCESS_ENV: NodeJS.ProcessEnv = { OPTIMISTIC_MAX_ATTEMPTS: String(OPTIMISTIC_MAX_ATTEMPTS) };

/**
 * Per-call deadline of the concurrent bursts: far above what a call needs, but
 * below the tests' timeout, so a hung call fails its test as DeadlineExceeded
 * instead of holding the test until mocha gives up.
 */
const BURST_CALL = { timeoutMs: 20_000 };

/** SKU order: byte-wise (codes are ASCII, so UTF-16 order is the same). */
const bySku = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const linesOf = (r: Reservation | undefined) => (r?.lines ?? []).map((l) => ({ sku: l.sku, quantity: l.quantity }));

/** Summed request lines in SKU order: what a granted reservation must carry. */
function summed(lines: readonly { sku: string; quantity: number }[]): { sku: string; quantity: number }[] {
  const totals = new Map<string, number>();
  for (const l of lines) totals.set(l.sku, (totals.get(l.sku) ?? 0) + l.quantity);
  return [...totals.keys()].sort(bySku).map((sku) => ({ sku, quantity: totals.get(sku)! }));
}

interface InventoryCounters {
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  version: number;
}

describe("concurrency: holds and allocations on two reservation-service processes", function () {
  this.timeout(60_000);

  let db: TestDatabase;
  let knex: Knex;
  /** Two processes on the same database; [0] is replaced by the restart test. */
  const processes: ServiceProcess[] = [];
  const clients: Client[] = [];

  const admin = () => clients[0]!;

  async function connect(address: string): Promise<Client> {
    const client = createGrpcJsClient(InventoryReservationService, address, undefined, testCaller);
    await new Promise<void>((resolve, reject) => client.raw.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
    return client;
  }

  async function createSku(code: string, onHand: number): Promise<void> {
    const response = await admin().createSku({ requestId: `create-${code}`, sku: code, name: `Concurrency test ${code}`, initialOnHand: BigInt(onHand) });
    expect(response.sku?.availability?.onHand).to.equal(BigInt(onHand));
  }

  async function counters(sku: string): Promise<InventoryCounters> {
    const [row] = await query<InventoryCounters>(knex, `SELECT on_hand, reserved, allocated, available, version FROM inventory WHERE sku_code = ?`, [sku]);
    if (row === undefined) throw new Error(`no inventory row for ${sku}`);
    return row;
  }

  before(async function () {
    this.timeout(60_000);
    db = await createTestDatabase("concurrency_holds");
    knex = createKnex({ url: db.url, poolMax: 4 });
    // Keep whatever started, so that `after` stops it even if the other one failed.
    const started = await Promise.allSettled([0, 1].map(() => startService("reservation-service", db.url, PROCESS_ENV)));
    for (const s of started) if (s.status === "fulfilled") processes.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    clients.push(...(await Promise.all(processes.map((p) => connect(p.grpcAddress)))));
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(processes.map((p) => p.stop()));
    await knex?.destroy();
    await db?.drop();
  });

  describe("one hot SKU: 500 single-unit holds for 100 units", () => {
    const UNITS = 100;
    const CALLS = 500;

    // Both processes open their database pools and warm up first, so the
    // timings below compare the strategies, not a cold start against a warm one.
    before(async function () {
      this.timeout(60_000);
      await createSku("WARMUP", 1_000);
      const warm = await Promise.all(
        range(100).map((i) => outcome(clients[i % 2]!.createHold({ requestId: `warmup-${i}`, customerId: `warmup-${i}`, lines: [{ sku: "WARMUP", quantity: 1 }] }, BURST_CALL))),
      );
      expect(warm.filter((r) => r.ok)).to.have.length(100);
    });

    for (const [name, strategy] of [
      ["PESSIMISTIC", LockingStrategy.PESSIMISTIC],
      ["OPTIMISTIC", LockingStrategy.OPTIMISTIC],
    ] as const) {
      it(`${name}: grants exactly ${UNITS}, refuses the rest for a permitted reason, and the books balance`, async function () {
        this.timeout(60_000);
        const sku = `HOT-${name}`;
        expect(UNITS, "OPTIMISTIC_MAX_ATTEMPTS bounds the conflicts a request can meet only up to this many units").to.be.at.most(OPTIMISTIC_MAX_ATTEMPTS);
        await createSku(sku, UNITS);

        const requests = range(CALLS).map((i) => ({
          requestId: `hot-${name}-${i}`,
          customerId: `hot-customer-${name}-${i}`,
          lines: [{ sku, quantity: 1 }],
          lockingStrategy: strategy,
        }));
        const started = performance.now();
        const results = await Promise.all(requests.map((req, i) => outcome(clients[i % 2]!.createHold(req, BURST_CALL))));
        const elapsedMs = Math.round(performance.now() - started);

        const granted = results.flatMap((r, i) => (r.ok ? [{ i, reservation: r.value.reservation! }] : []));
        const refusals = new Map<string, number>();
        for (const r of results) if (!r.ok) refusals.set(r.failure.key, (refusals.get(r.failure.key) ?? 0) + 1);
        const counts = Object.fromEntries([...refusals].sort(([a], [b]) => bySku(a, b)));
        console.log(
          `[holds] ${name}: ${CALLS} concurrent single-unit CreateHold calls over 2 processes for ${UNITS} units: ` +
            `${elapsedMs} ms, granted ${granted.length}, refused ${CALLS - granted.length} ${JSON.stringify(counts)}`,
        );

        // The only permitted refusal is the shortage: OPTIMISTIC cannot exhaust its
        // attempts here (see OPTIMISTIC_MAX_ATTEMPTS), and any other refusal (a
        // LOCK_TIMEOUT, a deadline) would leave stock unsold.
        const unexpected = results.flatMap((r) => (!r.ok && r.failure.key !== "FailedPrecondition/INSUFFICIENT_STOCK" ? [`${r.failure.key}: ${r.failure.message}`] : []));
        expect(unexpected, "refusals for a reason the contract does not permit here").to.deep.equal([]);
        expect(granted.length, `granted (refusals: ${JSON.stringify(counts)})`).to.equal(UNITS);

        // Every grant is a distinct one-unit hold for its own customer, with the strategy asked for.
        expect(new Set(granted.map((g) => g.reservation.id)).size).to.equal(UNITS);
        for (const { i, reservation } of granted) {
          expect(reservation.status).to.equal(ReservationStatus.HELD);
          expect(reservation.type).to.equal(ReservationType.HOLD);
          expect(reservation.customerId).to.equal(requests[i]!.customerId);
          expect(reservation.requestId).to.equal(requests[i]!.requestId);
          expect(reservation.lockingStrategy).to.equal(strategy);
          expect(linesOf(reservation)).to.deep.equal([{ sku, quantity: 1 }]);
        }
        // INSUFFICIENT_STOCK names the SKU with what was left.
        for (const r of results) {
          if (r.ok || r.failure.reason !== "INSUFFICIENT_STOCK") continue;
          expect(r.failure.metadata.sku).to.equal(sku);
          expect(r.failure.violations).to.have.length(1);
          expect(r.failure.violations[0]).to.include({ type: "STOCK", subject: `sku/${sku}` });
          expect(r.failure.violations[0]!.description).to.match(/^requested 1, available 0$/);
        }

        expect(await counters(sku)).to.include({ on_hand: UNITS, reserved: UNITS, allocated: 0, available: 0 });
        const held = await query<{ id: string }>(
          knex,
          `SELECT r.id FROM reservations r JOIN reservation_items l ON l.reservation_id = r.id WHERE l.sku_code = ? AND r.status = 'HELD'`,
          [sku],
        );
        expect(held.map((r) => r.id).sort()).to.deep.equal(granted.map((g) => g.reservation.id).sort());
        // Nothing left behind by refused or retried attempts.
        const [all] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM reservation_items WHERE sku_code = ?`, [sku]);
        expect(all!.n).to.equal(UNITS);
        const [events] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM audit_events WHERE sku_code = ? AND operation = 'HOLD_CREATED'`, [sku]);
        expect(events!.n).to.equal(UNITS);

        await assertInvariants(knex, [sku]);
        await checkConsistencyClean(admin(), [sku]);
      });
    }
  });

  describe("overlapping multi-SKU batches", () => {
    // Mixed case on purpose: SKU order is byte-wise ("MIX-B" < "mix-a").
    const SKUS = ["mix-a", "MIX-B", "Mix-c", "mix.D", "MIX_e", "mix-F", "MIX-g", "mix-H"];
    const seed = Number(process.env.HOLDS_TEST_SEED ?? Date.now() % 2 ** 31);
    const random = prng(seed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const strategies = [LockingStrategy.UNSPECIFIED, LockingStrategy.OPTIMISTIC, LockingStrategy.PESSIMISTIC];

    interface Request {
      kind: "HOLD" | "ALLOCATION";
      requestId: string;
      customerId: string;
      lines: { sku: string; quantity: number }[];
      lockingStrategy: LockingStrategy;
    }
    interface Granted {
      kind: "HOLD" | "ALLOCATION";
      id: string;
      lines: { sku: string; quantity: number }[];
      status: "HELD" | "ALLOCATED" | "RELEASED" | "FULFILLED" | "CANCELLED";
    }
    /** On-hand units put in per SKU (CreateSku, then AdjustStock). */
    const stocked = new Map<string, number>();
    const granted: Granted[] = [];
    let clientsOfBatch: Client[] = [];

    function randomRequest(tag: string, i: number): Request {
      const lines: { sku: string; quantity: number }[] = [];
      const n = 1 + Math.floor(random() * 5);
      for (let k = 0; k < n; k++) {
        // Sometimes the same SKU again, to exercise summing.
        const sku = lines.length > 0 && random() < 0.15 ? pick(lines).sku : pick(SKUS);
        lines.push({ sku, quantity: 1 + Math.floor(random() * 4) });
      }
      // Every tenth request names a SKU twice for sure.
      if (i % 10 === 0) lines.push({ sku: lines[0]!.sku, quantity: 1 + Math.floor(random() * 2) });
      // Random order (Fisher-Yates).
      for (let k = lines.length - 1; k > 0; k--) {
        const j = Math.floor(random() * (k + 1));
        [lines[k], lines[j]] = [lines[j]!, lines[k]!];
      }
      return {
        kind: random() < 0.6 ? "HOLD" : "ALLOCATION",
        requestId: `${tag}-${i}`,
        customerId: `mix-customer-${Math.floor(random() * 60)}`,
        lines,
        lockingStrategy: pick(strategies),
      };
    }

    function send(req: Request, client: Client) {
      const { kind, ...fields } = req;
      return kind === "HOLD" ? outcome(client.createHold(fields, BURST_CALL)) : outcome(client.createAllocation(fields, BURST_CALL));
    }

    /** Success with the summed lines, or INSUFFICIENT_STOCK naming short lines; anything else is listed as a problem. */
    function judge(req: Request, result: Outcome<{ reservation?: Reservation }>, problems: string[]): Granted | undefined {
      const expected = summed(req.lines);
      const what = `${req.kind} ${req.requestId} ${JSON.stringify(req.lines)} ${LockingStrategy[req.lockingStrategy]}`;
      if (result.ok) {
        const r = result.value.reservation;
        const status = req.kind === "HOLD" ? ReservationStatus.HELD : ReservationStatus.ALLOCATED;
        const type = req.kind === "HOLD" ? ReservationType.HOLD : ReservationType.ALLOCATION;
        if (r === undefined || r.status !== status || r.type !== type || r.customerId !== req.customerId) {
          problems.push(`${what}: granted a reservation of the wrong shape: ${JSON.stringify({ status: r?.status, type: r?.type, customer: r?.customerId })}`);
        }
        if (JSON.stringify(linesOf(r)) !== JSON.stringify(expected)) {
          problems.push(`${what}: lines ${JSON.stringify(linesOf(r))}, expected the summed lines in SKU order ${JSON.stringify(expected)}`);
        }
        return { kind: req.kind, id: r?.id ?? "", lines: expected, status: req.kind === "HOLD" ? "HELD" : "ALLOCATED" };
      }
      const f = result.failure;
      if (f.key !== "FailedPrecondition/INSUFFICIENT_STOCK") {
        const why = f.reason === "TRANSACTION_ABORTED" ? " (a deadlock or serialization failure surfaced)" : f.code === Code.Internal ? " (INTERNAL)" : "";
        problems.push(`${what}: ${f.key}${why}: ${f.message}`);
        return undefined;
      }
      const wanted = new Map(expected.map((l) => [l.sku, l.quantity]));
      const listed = f.violations.map((v) => v.subject.replace(/^sku\//, ""));
      if (f.violations.length === 0) problems.push(`${what}: INSUFFICIENT_STOCK without a STOCK violation`);
      if (JSON.stringify(listed) !== JSON.stringify([...listed].sort(bySku)) || new Set(listed).size !== listed.length) {
        problems.push(`${what}: short lines not in SKU order, or repeated: ${JSON.stringify(listed)}`);
      }
      if (f.metadata.sku !== listed.join(",")) problems.push(`${what}: ErrorInfo sku "${f.metadata.sku}" != the violations' SKUs "${listed.join(",")}"`);
      for (const v of f.violations) {
        const sku = v.subject.replace(/^sku\//, "");
        const m = /^requested (\d+), available (\d+)$/.exec(v.description);
        if (v.type !== "STOCK" || !v.subject.startsWith("sku/") || !wanted.has(sku) || m === null) {
          problems.push(`${what}: bad STOCK violation ${JSON.stringify(v)}`);
        } else if (Number(m[1]) !== wanted.get(sku) || Number(m[2]) >= Number(m[1])) {
          problems.push(`${what}: ${v.subject} "${v.description}" is not a short line of the summed request (wants ${wanted.get(sku)})`);
        }
      }
      return undefined;
    }

    /** Per SKU: what the granted reservations add up to, by state; on_hand minus fulfilled units. */
    function expectedCounters(): Map<string, { on_hand: number; reserved: number; allocated: number }> {
      const totals = new Map(SKUS.map((s) => [s, { on_hand: stocked.get(s)!, reserved: 0, allocated: 0 }]));
      for (const g of granted) {
        for (const l of g.lines) {
          const t = totals.get(l.sku)!;
          if (g.status === "HELD") t.reserved += l.quantity;
          if (g.status === "ALLOCATED") t.allocated += l.quantity;
          if (g.status === "FULFILLED") t.on_hand -= l.quantity;
        }
      }
      return totals;
    }

    async function expectBooksMatch(): Promise<void> {
      const expected = expectedCounters();
      for (const sku of SKUS) {
        const row = await counters(sku);
        const want = expected.get(sku)!;
        expect({ sku, on_hand: row.on_hand, reserved: row.reserved, allocated: row.allocated }).to.deep.equal({ sku, ...want });
        expect(row.available, `${sku} oversold`).to.be.at.least(0);
      }
      // Every reservation on these SKUs is one we were granted, in the state we expect.
      const stored = await query<{ id: string; status: string; lines: { sku: string; quantity: number }[] }>(
        knex,
        `SELECT r.id, r.status, json_agg(json_build_object('sku', l.sku_code, 'quantity', l.quantity) ORDER BY l.sku_code) AS lines
           FROM reservations r JOIN reservation_items l ON l.reservation_id = r.id
          WHERE r.id IN (SELECT reservation_id FROM reservation_items WHERE sku_code = ANY(?::text[]))
          GROUP BY r.id, r.status`,
        [SKUS],
      );
      const byId = new Map(stored.map((r) => [r.id, r]));
      expect(stored.length, "reservations stored on the batch SKUs").to.equal(granted.length);
      for (const g of granted) {
        const r = byId.get(g.id);
        expect(r, `reservation ${g.id}`).to.not.equal(undefined);
        expect({ id: g.id, status: r!.status, lines: r!.lines }).to.deep.equal({ id: g.id, status: g.status, lines: g.lines });
      }
      await assertInvariants(knex, SKUS);
      await checkConsistencyClean(admin(), SKUS);
    }

    before(async function () {
      this.timeout(60_000);
      for (const sku of SKUS) {
        const units = 30 + Math.floor(random() * 41);
        stocked.set(sku, units);
        await createSku(sku, units);
      }
      // Many clients: four channels to each process.
      clientsOfBatch = await Promise.all(range(8).map((i) => connect(processes[i % 2]!.grpcAddress)));
    });

    after(() => {
      for (const client of clientsOfBatch) client.close();
    });

    it("grants whole summed batches or refuses with INSUFFICIENT_STOCK, never deadlocks, never oversells", async function () {
      this.timeout(60_000);
      const requests = range(300).map((i) => randomRequest("mix", i));
      const hasDuplicate = (req: Request) => new Set(req.lines.map((l) => l.sku)).size < req.lines.length;
      const started = performance.now();
      const results = await Promise.all(requests.map((req, i) => send(req, clientsOfBatch[i % clientsOfBatch.length]!)));
      const elapsedMs = Math.round(performance.now() - started);
      const problems: string[] = [];
      results.forEach((result, i) => {
        const g = judge(requests[i]!, result, problems);
        if (g !== undefined) granted.push(g);
      });
      console.log(
        `[holds] mixed batches (seed ${seed}): 300 concurrent CreateHold/CreateAllocation calls of 1-5 lines on ${SKUS.length} SKUs: ` +
          `${elapsedMs} ms, granted ${granted.length} (${results.filter((r, i) => r.ok && hasDuplicate(requests[i]!)).length} with a SKU named twice), ` +
          `refused ${results.length - granted.length}`,
      );
      expect(problems, `unexpected outcomes (seed ${seed})`).to.deep.equal([]);
      expect(granted.length, "some batches must be granted").to.be.greaterThan(0);
      expect(granted.length, "stock is limited: some batches must be refused").to.be.lessThan(300);
      await expectBooksMatch();
    });

    it("releases, confirms, cancels and fulfils a random subset concurrently, with racing release/confirm pairs, restocks and new batches", async function () {
      this.timeout(60_000);
      expect(granted.length, "the previous test granted reservations").to.be.greaterThan(0);
      type Action = { g: Granted; name: string; call: (c: Client) => Promise<Outcome<{ reservation?: Reservation }>> };
      const actions: Action[] = [];
      const races: { g: Granted; release: number; confirm: number }[] = [];
      const n = () => actions.length;
      const release = (g: Granted, tag: string): Action => ({
        g,
        name: "ReleaseHold",
        call: (c) => outcome(c.releaseHold({ requestId: `release-${tag}-${g.id}`, reservationId: g.id, reason: "changed my mind" }, BURST_CALL)),
      });
      const confirm = (g: Granted, tag: string): Action => ({
        g,
        name: "ConfirmHold",
        call: (c) => outcome(c.confirmHold({ requestId: `confirm-${tag}-${g.id}`, reservationId: g.id, lockingStrategy: pick(strategies) }, BURST_CALL)),
      });
      for (const g of granted) {
        const roll = random();
        if (g.kind === "HOLD") {
          // The first granted hold always races, so that every seed has at least one race.
          if (races.length === 0 || (roll >= 0.6 && roll < 0.75)) {
            races.push({ g, release: n(), confirm: n() + 1 });
            actions.push(release(g, "race"), confirm(g, "race"));
          } else if (roll < 0.3) actions.push(release(g, "a"));
          else if (roll < 0.6) actions.push(confirm(g, "a"));
        } else if (roll < 0.3) {
          actions.push({
            g,
            name: "CancelAllocation",
            call: (c) => outcome(c.cancelAllocation({ requestId: `cancel-${g.id}`, reservationId: g.id, reason: "out of budget" }, BURST_CALL)),
          });
        } else if (roll < 0.5) {
          actions.push({ g, name: "FulfillAllocation", call: (c) => outcome(c.fulfillAllocation({ requestId: `fulfil-${g.id}`, reservationId: g.id }, BURST_CALL)) });
        }
      }
      expect(races.length, `release-vs-confirm races (seed ${seed}): the previous test must have granted a hold`).to.be.greaterThan(0);
      const fresh = range(60).map((i) => randomRequest("mix-late", i));

      // Stock added to every SKU in the middle of it all.
      const RESTOCK = 5;
      const restock = (sku: string, i: number) =>
        outcome(
          clientsOfBatch[i % clientsOfBatch.length]!.adjustStock(
            { requestId: `restock-${sku}`, sku, change: { case: "delta", value: BigInt(RESTOCK) }, reason: "restock" },
            BURST_CALL,
          ),
        );

      const [done, late, restocked] = await Promise.all([
        Promise.all(actions.map((a, i) => a.call(clientsOfBatch[i % clientsOfBatch.length]!))),
        Promise.all(fresh.map((req, i) => send(req, clientsOfBatch[(i + 1) % clientsOfBatch.length]!))),
        Promise.all(SKUS.map(restock)),
      ]);

      const problems: string[] = [];
      const raced = new Set(races.flatMap((r) => [r.release, r.confirm]));
      const finalStatus: Record<string, Granted["status"]> = {
        ReleaseHold: "RELEASED",
        ConfirmHold: "ALLOCATED",
        CancelAllocation: "CANCELLED",
        FulfillAllocation: "FULFILLED",
      };
      done.forEach((result, i) => {
        if (raced.has(i)) return;
        const { g, name } = actions[i]!;
        if (!result.ok) problems.push(`${name} ${g.id}: ${result.failure.key}: ${result.failure.message}`);
        else {
          g.status = finalStatus[name]!;
          if (ReservationStatus[result.value.reservation?.status ?? 0] !== g.status) {
            problems.push(`${name} ${g.id}: answered status ${ReservationStatus[result.value.reservation?.status ?? 0]}`);
          }
        }
      });
      // A release racing a confirm: exactly one wins; the loser is INVALID_TRANSITION.
      for (const { g, release: ri, confirm: ci } of races) {
        const [r, c] = [done[ri]!, done[ci]!];
        const winners = [r.ok, c.ok].filter(Boolean).length;
        if (winners !== 1) {
          problems.push(`race on ${g.id}: ${winners} winners (release ${r.ok ? "ok" : r.failure.key}, confirm ${c.ok ? "ok" : c.failure.key})`);
          continue;
        }
        const loser = (r.ok ? c : r) as { ok: false; failure: Failure };
        if (loser.failure.key !== "FailedPrecondition/INVALID_TRANSITION") problems.push(`race on ${g.id}: the loser got ${loser.failure.key}: ${loser.failure.message}`);
        g.status = r.ok ? "RELEASED" : "ALLOCATED";
      }
      restocked.forEach((result, i) => {
        if (result.ok) stocked.set(SKUS[i]!, stocked.get(SKUS[i]!)! + RESTOCK);
        else problems.push(`AdjustStock ${SKUS[i]} +${RESTOCK}: ${result.failure.key}: ${result.failure.message}`);
      });
      let lateGranted = 0;
      late.forEach((result, i) => {
        const g = judge(fresh[i]!, result, problems);
        if (g !== undefined) {
          granted.push(g);
          lateGranted++;
        }
      });
      console.log(
        `[holds] lifecycle burst: ${actions.length} release/confirm/cancel/fulfil calls (${races.length} release-vs-confirm races), ` +
          `${SKUS.length} AdjustStock calls and ${fresh.length} new batches at once; ${lateGranted} new batches granted`,
      );
      expect(problems, `unexpected outcomes (seed ${seed})`).to.deep.equal([]);
      await expectBooksMatch();
    });
  });

  describe("idempotency under concurrency", () => {
    const SKU = "IDEM-1";
    const duplicate = { requestId: "idem-dup-1", customerId: "idem-customer", lines: [{ sku: SKU, quantity: 2 }] };
    let reservationId = "";

    before(async () => {
      await createSku(SKU, 10);
      await createSku("IDEM-2", 3);
    });

    it("executes 20 simultaneous identical CreateHold requests once (split over both processes)", async function () {
      this.timeout(60_000);
      const results = await Promise.all(range(20).map((i) => outcome(clients[i % 2]!.createHold(duplicate, BURST_CALL))));
      const failures = results.flatMap((r) => (r.ok ? [] : [`${r.failure.key}: ${r.failure.message}`]));
      expect(failures, "every duplicate gets the outcome").to.deep.equal([]);
      const responses = results.map((r) => (r as { ok: true; value: { reservation?: Reservation; replayed: boolean } }).value);
      const ids = new Set(responses.map((r) => r.reservation?.id));
      expect(ids.size, "one reservation id in all 20 responses").to.equal(1);
      expect(responses.filter((r) => !r.replayed)).to.have.length(1);
      reservationId = responses[0]!.reservation!.id;
      for (const r of responses) expect(linesOf(r.reservation)).to.deep.equal([{ sku: SKU, quantity: 2 }]);

      const stored = await query<{ id: string; caller: string }>(knex, `SELECT id, caller FROM reservations WHERE request_id = ?`, [duplicate.requestId]);
      expect(stored).to.have.length(1);
      expect(stored[0]!.id).to.equal(reservationId);
      expect(await counters(SKU)).to.include({ reserved: 2, available: 8 });
      const [events] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM audit_events WHERE sku_code = ? AND operation = 'HOLD_CREATED'`, [SKU]);
      expect(events!.n).to.equal(1);
      await assertInvariants(knex, [SKU]);
    });

    it("refuses the same request_id with another quantity as IDEMPOTENCY_KEY_REUSED and changes nothing", async function () {
      expect(reservationId, "the previous test created the hold").to.not.equal("");
      const before = await counters(SKU);
      const [eventsBefore] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM audit_events`);
      const [reservationsBefore] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM reservations`);
      const changed = { ...duplicate, lines: [{ sku: SKU, quantity: 3 }] };
      for (const client of clients) {
        const f = await failure(client.createHold(changed));
        expect(f.code).to.equal(Code.InvalidArgument);
        expect(f.reason).to.equal("IDEMPOTENCY_KEY_REUSED");
        expect(f.metadata.request_id).to.equal(duplicate.requestId);
      }
      expect(await counters(SKU)).to.deep.equal(before);
      const [eventsAfter] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM audit_events`);
      const [reservationsAfter] = await query<{ n: number }>(knex, `SELECT count(*) AS n FROM reservations`);
      expect(eventsAfter!.n).to.equal(eventsBefore!.n);
      expect(reservationsAfter!.n).to.equal(reservationsBefore!.n);
      const lines = await query<{ quantity: number }>(knex, `SELECT quantity FROM reservation_items WHERE reservation_id = ?`, [reservationId]);
      expect(lines.map((l) => l.quantity)).to.deep.equal([2]);
    });

    it("replays an INSUFFICIENT_STOCK refusal even after stock came back", async function () {
      const sku = "IDEM-2";
      await clients[0]!.createHold({ requestId: "idem-taker", customerId: "idem-taker", lines: [{ sku, quantity: 3 }] });
      const refused = { requestId: "idem-refused", customerId: "idem-late", lines: [{ sku, quantity: 1 }] };
      const first = await failure(clients[0]!.createHold(refused));
      expect(first.key).to.equal("FailedPrecondition/INSUFFICIENT_STOCK");
      expect(first.metadata.replayed, "the original refusal is not a replay").to.equal(undefined);
      expect(first.violations).to.deep.equal([{ type: "STOCK", subject: `sku/${sku}`, description: "requested 1, available 0" }]);

      // Stock comes back through the API (never SQL: counters change only with their ledger events).
      const restock = await clients[1]!.adjustStock({ requestId: "idem-restock", sku, change: { case: "delta", value: 2n }, reason: "restock for the replay test" });
      expect(restock.availability?.available).to.equal(2n);
      expect(await counters(sku)).to.include({ on_hand: 5, reserved: 3, available: 2 });

      for (const client of clients) {
        const again = await failure(client.createHold(refused));
        expect(again.key).to.equal("FailedPrecondition/INSUFFICIENT_STOCK");
        expect(again.metadata.replayed).to.equal("true");
        expect(again.violations).to.deep.equal(first.violations);
      }
      expect(await counters(sku)).to.include({ on_hand: 5, reserved: 3, available: 2 });
      expect(await query(knex, `SELECT id FROM reservations WHERE request_id = ?`, [refused.requestId])).to.have.length(0);
      // The stock really is there: the same request under a new request_id is granted.
      const fresh = await clients[1]!.createHold({ ...refused, requestId: "idem-refused-retry" });
      expect(fresh.replayed).to.equal(false);
      expect(await counters(sku)).to.include({ on_hand: 5, reserved: 4, available: 1 });
      await assertInvariants(knex, [SKU, sku]);
    });

    it("replays a success after the process that executed it is restarted", async function () {
      this.timeout(60_000);
      expect(reservationId, "the first idempotency test created the hold").to.not.equal("");
      clients[0]!.close();
      expect(await processes[0]!.stop()).to.equal(0);
      processes[0] = await startService("reservation-service", db.url, PROCESS_ENV);
      clients[0] = await connect(processes[0].grpcAddress);

      const replay = await clients[0].createHold(duplicate);
      expect(replay.replayed).to.equal(true);
      expect(replay.reservation?.id).to.equal(reservationId);
      expect(linesOf(replay.reservation)).to.deep.equal([{ sku: SKU, quantity: 2 }]);
      expect(await query(knex, `SELECT id FROM reservations WHERE request_id = ?`, [duplicate.requestId])).to.have.length(1);
      expect(await counters(SKU)).to.include({ reserved: 2, available: 8 });
      await assertInvariants(knex);
      await checkConsistencyClean(clients[0]);
    });
  });
});
