// Fault tolerance (issue 9): overload. A reservation-service process with a small bound
// on calls in flight (MAX_CALLS_IN_FLIGHT, set here so the test does not depend on the
// machine) is driven at several times the rate it can serve.
//
// - It sheds the excess at once with UNAVAILABLE / OVERLOADED and RetryInfo, instead of
//   queueing it: shed answers come back far sooner than accepted ones; accepted calls
//   keep a latency bounded by the configuration; its memory stays flat; health and
//   metrics keep answering; it logs the shedding in a few lines, not one per call;
//   and the database holds exactly the holds the clients were told about.
// - Callers' deadlines are honoured: a call whose caller gives up (deadline, cancel)
//   while it waits for a slot leaves the queue at once and its work never starts; calls
//   with deadlines of a few milliseconds end DEADLINE_EXCEEDED or CANCELLED, and a hold
//   that was committed for one anyway is replayed to the retry with its request id,
//   never made twice.
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { RetryInfoSchema } from "@holdfast/contracts/rpc";
import { metricValue, residentBytes, scrapeMetrics } from "@holdfast/dev-stack";
import { SERVICE_NODE_OPTIONS, createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller } from "../support/auth.js";
import { failureOf, range } from "../support/calls.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

const CREATE_HOLD = "InventoryReservationService/CreateHold";
const MiB = 1024 * 1024;
/**
 * What V8's young generation may take (three times the semi-space of
 * SERVICE_NODE_OPTIONS; V8's default semi-space is 16 MiB), filled by any burst of
 * short-lived garbage: a bounded amount, which RSS growth may include on top of
 * anything queued.
 */
const YOUNG_GENERATION_MIB = 3 * Number(/^--max-semi-space-size=(\d+)$/.exec(SERVICE_NODE_OPTIONS.find((o) => o.startsWith("--max-semi-space-size=")) ?? "--max-semi-space-size=16")![1]);

/** A service on a fresh database, `connections` clients on separate HTTP/2 connections, and SKUs well stocked. */
interface Stack {
  db: TestDatabase;
  knex: Knex;
  svc: ServiceProcess;
  clients: Client[];
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

async function startStack(label: string, env: NodeJS.ProcessEnv, skus: string[], connections: number): Promise<Stack> {
  const db = await createTestDatabase(label);
  const knex = createKnex({ url: db.url, poolMax: 2 });
  const svc = await startService("reservation-service", db.url, env);
  // A subchannel pool of its own per client: one HTTP/2 connection each.
  const clients = range(connections).map(() => createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, { ...testCaller, "grpc.use_local_subchannel_pool": 1 }));
  for (const sku of skus) await clients[0]!.createSku({ requestId: `${label}-${sku}`, sku, name: sku, initialOnHand: 1_000_000n });
  return {
    db,
    knex,
    svc,
    clients,
    metric: async (name, labels) => metricValue(await scrapeMetrics(svc.httpUrl), name, labels),
    async close() {
      for (const c of clients) c.close();
      await svc.stop();
      await knex.destroy();
      await db.drop();
    },
  };
}

/** The request ids of SKU `skus`' reservations, with their ids. */
async function holdsOf(knex: Knex, skus: string[]): Promise<Map<string, string>> {
  const rows = await query<{ id: string; request_id: string }>(
    knex,
    `SELECT DISTINCT r.id, r.request_id FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id WHERE i.sku_code = ANY(?::text[])`,
    [skus],
  );
  expect(new Set(rows.map((r) => r.request_id)).size, "one reservation per request id").to.equal(rows.length);
  return new Map(rows.map((r) => [r.request_id, r.id]));
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};

function retryDelayMs(err: unknown): number | undefined {
  const delay = err instanceof ConnectError ? err.findDetails(RetryInfoSchema)[0]?.retryDelay : undefined;
  return delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
}

/** Upper bounds (bucket `le`, seconds) of the p50, p90 and p99 of a method's server-side durations, OK and shed. */
async function serverDurations(stack: Stack, method: string) {
  const text = await scrapeMetrics(stack.svc.httpUrl);
  const of = (code: string) => {
    const labels = { method, protocol: "grpc", code };
    const count = metricValue(text, "holdfast_rpc_duration_seconds_count", labels);
    const bounds = [...text.matchAll(/^holdfast_rpc_duration_seconds_bucket\{[^}]*le="([^"]+)"/gm)].map((m) => m[1]!).filter((le, i, all) => all.indexOf(le) === i);
    const quantile = (q: number) => Number(bounds.find((le) => metricValue(text, "holdfast_rpc_duration_seconds_bucket", { ...labels, le }) >= q * count) ?? "+Inf");
    return { count, p50: quantile(0.5), p90: quantile(0.9), p99: quantile(0.99) };
  };
  return { ok: of("OK"), shed: of("UNAVAILABLE") };
}

/** A Stack for the enclosing describe block (started before its tests, closed after them), once started. */
function stackFor(label: string, env: NodeJS.ProcessEnv, skus: string[], connections: number): () => Stack {
  let stack: Stack | undefined;
  before(async () => {
    stack = await startStack(label, env, skus, connections);
  });
  afterEach(function () {
    // On failure, what the service logged at warn and above is the first thing to read.
    if (this.currentTest?.state === "failed") for (const line of stack?.svc.output ?? []) if (/"level":("(warn|error|fatal)"|[456]\d)/.test(line)) console.log(line);
  });
  after(async () => {
    await stack?.close();
  });
  return () => stack!;
}

describe("faults: overload at several times the sustainable rate", function () {
  this.timeout(120_000);
  // Small on purpose, so that what is "sustainable" is set here: a pool of 4 and 8 calls in flight.
  const LIMITS = { DATABASE_POOL_MAX: "4", MAX_CALLS_IN_FLIGHT: "8", MAX_CALLS_WAITING: "4", MAX_CALL_WAIT_MS: "250", LOCK_TIMEOUT_MS: "2000" };
  /** No accepted call may take longer: its wait for a slot, then at most one lock wait. Generous: no machine-speed guess. */
  const LATENCY_BOUND_MS = Number(LIMITS.MAX_CALL_WAIT_MS) + Number(LIMITS.LOCK_TIMEOUT_MS);
  const SKUS = range(20).map((i) => `OVERLOAD-${i}`);
  const CONNECTIONS = 4;
  /** The burst: new buyers arriving at OVERLOAD times the rate measured just before, for BURST_MS, each calling once. */
  const OVERLOAD = 4;
  const BURST_MS = 3_000;
  /** Calls the clients keep open at most (the rest of an arrival tick is dropped, and counted). */
  const MAX_OPEN = 1_000;
  // The server, not the client's HTTP/2 layer, must see the whole burst.
  const stack = stackFor("faults-overload", { ...LIMITS, GRPC_MAX_CONCURRENT_STREAMS: "1000" }, SKUS, CONNECTIONS);

  it("sheds the excess at once, keeps accepted calls' latency bounded and memory flat, and holds exactly what it answered", async () => {
    const { svc, clients, knex } = stack();
    const pid = svc.child.pid!;
    const told = new Map<string, string>();
    let sequence = 0;
    const hold = async (client: Client) => {
      const requestId = `overload-${++sequence}`;
      const res = await client.createHold({ requestId, customerId: `buyer-${sequence}`, lines: [{ sku: SKUS[sequence % SKUS.length]!, quantity: 1 }] });
      told.set(requestId, res.reservation!.id);
    };

    // The sustainable rate, measured: as many clients as calls may be in flight or wait (so
    // the server is never idle and nothing is shed), one call after another, for 1.5 s
    // (after the pool's connections opened and the code warmed up).
    const inFlight = Number(LIMITS.MAX_CALLS_IN_FLIGHT);
    const admitted = inFlight + Number(LIMITS.MAX_CALLS_WAITING);
    await Promise.all(range(admitted).map(async (c) => { for (const _ of range(5)) await hold(clients[c % CONNECTIONS]!); }));
    const measuredFrom = performance.now();
    let measured = 0;
    await Promise.all(
      range(admitted).map(async (c) => {
        while (performance.now() - measuredFrom < 1_500) {
          await hold(clients[c % CONNECTIONS]!);
          measured++;
        }
      }),
    );
    const sustainable = measured / ((performance.now() - measuredFrom) / 1000);
    const rate = OVERLOAD * sustainable;

    const rssBefore = await residentBytes(pid);
    let rssMax = rssBefore;
    const logLinesBefore = svc.output.length;
    type Answer = { ms: number; key: string };
    const answers: Answer[] = [];
    const calls: Promise<void>[] = [];
    let open = 0;
    let dropped = 0;
    let shedWithoutRetryInfo = 0;
    let maxInFlightSeen = 0;
    const arrive = (i: number) => {
      const client = clients[i % CONNECTIONS]!;
      const sentAt = performance.now();
      open++;
      calls.push(
        hold(client).then(
          () => void answers.push({ ms: performance.now() - sentAt, key: "OK" }),
          (err: unknown) => {
            const f = failureOf(err);
            answers.push({ ms: performance.now() - sentAt, key: `${Code[f.code]}/${f.reason}` });
            if (!((retryDelayMs(err) ?? 0) > 0)) shedWithoutRetryInfo++;
          },
        ).finally(() => open--),
      );
    };
    // Arrivals every 10 ms, as many as the rate asks for by then (an open loop: a slow
    // answer does not slow the arrivals down, as in a flash sale).
    const startedAt = performance.now();
    let arrived = 0;
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const elapsed = performance.now() - startedAt;
        const due = Math.floor((Math.min(elapsed, BURST_MS) / 1000) * rate);
        for (; arrived < due; arrived++) if (open < MAX_OPEN) arrive(arrived); else dropped++;
        void residentBytes(pid).then((rss) => (rssMax = Math.max(rssMax, rss)), () => undefined);
        if (elapsed >= BURST_MS) {
          clearInterval(tick);
          resolve();
        }
      }, 10);
    });
    const sampling = (async () => {
      // While the last calls finish: in flight never above the bound.
      while (open > 0) {
        maxInFlightSeen = Math.max(maxInFlightSeen, await stack().metric("holdfast_rpc_in_flight"));
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    // While it sheds: health and metrics answer (neither is behind the admission control).
    const health = createGrpcJsClient(Health, svc.grpcAddress);
    try {
      expect((await health.check({ service: "" })).status, "gRPC health while shedding").to.equal(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
    }
    expect((await fetch(`${svc.httpUrl}/healthz`)).status, "/healthz while shedding").to.equal(200);
    await Promise.all(calls);
    await sampling;
    const elapsedS = (performance.now() - startedAt) / 1000;

    const byKey = new Map<string, number>();
    for (const a of answers) byKey.set(a.key, (byKey.get(a.key) ?? 0) + 1);
    const ok = answers.filter((a) => a.key === "OK").map((a) => a.ms);
    const shed = answers.filter((a) => a.key === "Unavailable/OVERLOADED").map((a) => a.ms);
    const rssGrowth = rssMax - rssBefore;
    const server = await serverDurations(stack(), CREATE_HOLD);
    console.log(
      `      sustainable ${Math.round(sustainable)} holds/s; asked ${Math.round(rate)}/s for ${BURST_MS / 1000} s: ${answers.length} calls (${dropped} not sent: ${MAX_OPEN} open), ${JSON.stringify(Object.fromEntries(byKey))}, served ${Math.round(ok.length / elapsedS)}/s\n` +
        `      clients saw: accepted p50 ${percentile(ok, 50).toFixed(0)} ms, p99 ${percentile(ok, 99).toFixed(0)} ms, max ${percentile(ok, 100).toFixed(0)} ms (bound ${LATENCY_BOUND_MS} ms); ` +
        `shed p50 ${percentile(shed, 50).toFixed(0)} ms, p99 ${percentile(shed, 99).toFixed(0)} ms\n` +
        `      in the server: accepted p50 <= ${server.ok.p50 * 1000} ms, p99 <= ${server.ok.p99 * 1000} ms; shed p50 <= ${server.shed.p50 * 1000} ms, p90 <= ${server.shed.p90 * 1000} ms\n` +
        `      RSS ${(rssBefore / MiB).toFixed(0)} MiB before, ${(rssMax / MiB).toFixed(0)} MiB at most (+${(rssGrowth / MiB).toFixed(1)} MiB); in flight at most ${maxInFlightSeen} once the arrivals stopped`,
    );

    // Shed, and only shed: nothing else went wrong.
    for (const key of byKey.keys()) expect(key, "every answer").to.match(/^(OK|Unavailable\/OVERLOADED)$/);
    expect(ok.length, "accepted").to.be.greaterThan(0);
    // At four times the rate measured moments before, about three calls in four; a third at
    // least even if the shared machine got twice as fast meanwhile.
    expect(shed.length, "shed").to.be.at.least(answers.length / 3);
    expect(shedWithoutRetryInfo, "shed answers without RetryInfo").to.equal(0);
    expect(await stack().metric("holdfast_rpc_shed_total", { method: CREATE_HOLD }), "holdfast_rpc_shed_total = the shed answers").to.equal(shed.length);
    // Early, not queued: in the server (from the handler's start to its answer, what shedding
    // controls on a machine whose CPU is shared), nine shed calls in ten took under 5 ms (those
    // that found the queue full did not wait at all), and the median shed call less than the
    // median accepted one.
    expect(server.shed.count, "shed calls timed by the server").to.equal(shed.length);
    expect(server.shed.p90, "shed p90 in the server (s)").to.be.at.most(0.005);
    expect(server.shed.p50, "shed p50 in the server (s)").to.be.below(server.ok.p50);
    // Bounded: an accepted call waited for a slot MAX_CALL_WAIT_MS at most, then did its work.
    expect(percentile(ok, 99), "accepted p99 as the clients saw it (ms)").to.be.below(LATENCY_BOUND_MS);
    expect(maxInFlightSeen, "calls in flight").to.be.at.most(inFlight);
    // Memory: nothing queued without bound. Beyond what the young generation may
    // take, 80 MiB, as when the bound was 128 MiB with V8's default 48 (RSS grew 16–56
    // MiB then, 81–100 MiB with 64 MiB semi-spaces).
    expect(rssGrowth, "RSS growth during the burst").to.be.below((YOUNG_GENERATION_MIB + 80) * MiB);
    await until("no call in flight", async () => (await stack().metric("holdfast_rpc_in_flight")) === 0 && (await stack().metric("holdfast_rpc_waiting")) === 0, 5_000);

    // Logged in a few lines (once when shedding started, then a summary per 10 s), not one per shed call.
    const lines = svc.output.slice(logLinesBefore).map((l) => JSON.parse(l) as { msg: string; reason?: string });
    expect(lines.filter((l) => l.msg.startsWith("shedding load")), "shedding logged").to.have.length.greaterThan(0);
    expect(lines.filter((l) => l.reason === "OVERLOADED"), "per-call log lines of shed calls").to.have.length(0);
    expect(lines.length, "log lines during the burst").to.be.below(20);

    // Exactly the holds the clients were told about, each once; stock and ledger exact.
    expect(await holdsOf(knex, SKUS)).to.deep.equal(told);
    const [{ reserved }] = await query<{ reserved: number }>(knex, `SELECT sum(reserved)::int AS reserved FROM inventory WHERE sku_code = ANY(?::text[])`, [SKUS]);
    expect(reserved).to.equal(told.size);
    await assertInvariants(knex, SKUS);
    await checkConsistencyClean(clients[0]!, SKUS);
  });
});

describe("faults: callers that give up under load", function () {
  this.timeout(120_000);
  // Blocked calls wait on a row lock the test holds, far shorter than this.
  const LIMITS = { DATABASE_POOL_MAX: "4", MAX_CALLS_IN_FLIGHT: "4", MAX_CALLS_WAITING: "4", MAX_CALL_WAIT_MS: "10000", LOCK_TIMEOUT_MS: "30000" };
  const LOCKED = "GIVE-UP-LOCKED";
  const FREE = "GIVE-UP-FREE";
  const TINY = "GIVE-UP-TINY";
  const stack = stackFor("faults-give-up", LIMITS, [LOCKED, FREE, TINY], 1);

  it("a call whose caller gives up while it waits for a slot leaves the queue at once and never starts", async () => {
    const { knex, clients, metric } = stack();
    const client = clients[0]!;
    const hold = (requestId: string, sku: string, options?: { timeoutMs?: number; signal?: AbortSignal }) =>
      client.createHold({ requestId, customerId: `c-${requestId}`, lines: [{ sku, quantity: 1 }] }, options);

    // Every slot taken by a hold blocked on a row lock the test holds.
    const lock = await knex.transaction();
    let blocked: Promise<unknown>[] = [];
    try {
      await lock.raw(`SELECT 1 FROM inventory WHERE sku_code = ? FOR UPDATE`, [LOCKED]);
      blocked = range(4).map((i) => hold(`blocked-${i}`, LOCKED));
      await until("every slot taken by a blocked call", async () => (await metric("holdfast_rpc_in_flight")) === 4);

      // A deadline that passes while the call waits for a slot: DEADLINE_EXCEEDED, and it leaves the queue.
      const late = hold("gave-up-deadline", FREE, { timeoutMs: 300 });
      await until("the call waiting for a slot", async () => (await metric("holdfast_rpc_waiting")) === 1);
      expect(failureOf(await late.then(() => undefined, (err: unknown) => err)).code, "the late call").to.equal(Code.DeadlineExceeded);
      await until("the late call gone from the queue", async () => (await metric("holdfast_rpc_waiting")) === 0, 5_000);

      // A client that cancels while it waits: CANCELLED, and it leaves the queue.
      const abort = new AbortController();
      const cancelled = hold("gave-up-cancel", FREE, { signal: abort.signal });
      await until("the call waiting for a slot", async () => (await metric("holdfast_rpc_waiting")) === 1);
      abort.abort();
      expect(failureOf(await cancelled.then(() => undefined, (err: unknown) => err)).code, "the cancelled call").to.equal(Code.Canceled);
      await until("the cancelled call gone from the queue", async () => (await metric("holdfast_rpc_waiting")) === 0, 5_000);
      expect(await metric("holdfast_rpc_in_flight"), "the blocked calls still hold every slot").to.equal(4);
    } finally {
      await lock.rollback();
    }
    await Promise.all(blocked);

    // Their work never started: no hold, and not even an attempt in the request log, which
    // has by now written the blocked calls' attempts and one made after them.
    await hold("after-the-lock", FREE);
    await until(
      "the request log written",
      async () => (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM hold_attempts WHERE request_id = 'after-the-lock' OR request_id LIKE 'blocked-%'`))[0]!.n === 5,
    );
    const gaveUp = ["gave-up-deadline", "gave-up-cancel"];
    expect((await query(knex, `SELECT 1 FROM hold_attempts WHERE request_id = ANY(?::text[])`, [gaveUp])).length, "attempts logged for them").to.equal(0);
    expect((await query(knex, `SELECT 1 FROM reservations WHERE request_id = ANY(?::text[])`, [gaveUp])).length, "holds made for them").to.equal(0);
    expect((await query(knex, `SELECT 1 FROM idempotency_records WHERE request_id = ANY(?::text[])`, [gaveUp])).length, "idempotency records").to.equal(0);
    // Retried with the same request ids: made now, for the first time.
    for (const requestId of gaveUp) expect((await hold(requestId, FREE)).replayed, `${requestId} retried`).to.equal(false);
    await assertInvariants(knex, [LOCKED, FREE]);
  });

  it("a call whose deadline passes while it waits for a row lock is cancelled then, not after LOCK_TIMEOUT_MS: its slot and connection are free again", async () => {
    const { knex, clients, metric } = stack();
    const client = clients[0]!;
    const serviceLockWaits = async () =>
      (await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'holdfast-reservation-service%' AND wait_event_type = 'Lock'`))[0]!.n;
    const lock = await knex.transaction();
    try {
      await lock.raw(`SELECT 1 FROM inventory WHERE sku_code = ? FOR UPDATE`, [LOCKED]);
      const late = client.createHold({ requestId: "lock-wait-deadline", customerId: "c-lock-wait", lines: [{ sku: LOCKED, quantity: 1 }] }, { timeoutMs: 500 });
      expect(failureOf(await late.then(() => undefined, (err: unknown) => err)).code, "the call").to.equal(Code.DeadlineExceeded);
      // The lock is still held (for up to LOCK_TIMEOUT_MS = 30 s it could wait), yet the server gave up.
      await until("the server's statement cancelled and its slot freed", async () => (await serviceLockWaits()) === 0 && (await metric("holdfast_rpc_in_flight")) === 0, 5_000);
    } finally {
      await lock.rollback();
    }
    expect((await query(knex, `SELECT 1 FROM reservations WHERE request_id = 'lock-wait-deadline'`)).length, "holds made for it").to.equal(0);
    const retried = await client.createHold({ requestId: "lock-wait-deadline", customerId: "c-lock-wait", lines: [{ sku: LOCKED, quantity: 1 }] });
    expect(retried.replayed, "the retry").to.equal(false);
  });

  it("calls with deadlines of a few milliseconds end DEADLINE_EXCEEDED or CANCELLED; a hold committed for one is replayed to its retry, never made twice", async () => {
    const { knex, clients } = stack();
    const client = clients[0]!;
    const CALLS = 300;
    // From far shorter than a hold takes to about as long: some calls are cut off before
    // they start, some in their transaction, some just after it committed.
    const DEADLINES_MS = [1, 2, 5, 10, 20, 40];
    const CONCURRENCY = 8;
    const request = (i: number) => ({ requestId: `tiny-${i}`, customerId: `tiny-buyer-${i}`, lines: [{ sku: TINY, quantity: 1 }] });
    const first = new Map<number, string>();
    const told = new Map<string, string>();
    let next = 0;
    await Promise.all(
      range(CONCURRENCY).map(async () => {
        for (let i = next++; i < CALLS; i = next++) {
          try {
            const res = await client.createHold(request(i), { timeoutMs: DEADLINES_MS[i % DEADLINES_MS.length] });
            first.set(i, "OK");
            told.set(`tiny-${i}`, res.reservation!.id);
          } catch (err) {
            const f = failureOf(err);
            first.set(i, `${Code[f.code]}/${f.reason ?? "-"}`);
          }
        }
      }),
    );
    const byKey = new Map<string, number>();
    for (const key of first.values()) byKey.set(key, (byKey.get(key) ?? 0) + 1);
    for (const key of byKey.keys()) expect(key, "every first answer").to.match(/^(OK|DeadlineExceeded\/|Canceled\/|Unavailable\/OVERLOADED)/);
    expect([...first.values()].filter((k) => k.startsWith("DeadlineExceeded")).length, "calls past their deadline").to.be.greaterThan(0);

    // The callers retry what they were not told, with the same request id and no deadline.
    let replayed = 0;
    for (const [i, key] of first) {
      if (key === "OK") continue;
      const res = await client.createHold(request(i));
      if (res.replayed) replayed++;
      told.set(`tiny-${i}`, res.reservation!.id);
    }
    console.log(`      first answers ${JSON.stringify(Object.fromEntries(byKey))}; of the ${CALLS - (byKey.get("OK") ?? 0)} retried, ${replayed} replayed a hold committed after its caller had gone`);

    // One hold per request, the one each retry was told about.
    expect(await holdsOf(knex, [TINY])).to.deep.equal(told);
    expect(told.size).to.equal(CALLS);
    const [{ reserved }] = await query<{ reserved: number }>(knex, `SELECT reserved FROM inventory WHERE sku_code = ?`, [TINY]);
    expect(reserved).to.equal(CALLS);
    await assertInvariants(knex, [TINY]);
    await checkConsistencyClean(client, [TINY]);
  });
});
