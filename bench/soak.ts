#!/usr/bin/env node
// Soak: a mixed workload for `--minutes` (10 by default) against one reservation-service
// and one expiry-worker process on an embedded PostgreSQL (durable commits), to show
// that nothing drifts or grows with time: the inventory invariants hold at every check,
// CheckConsistency agrees, memory levels off, latency does not creep up.
//
// The workload, `--rate` operations per second (paced; at most `--concurrency` at once; an
// operation may make a second call, e.g. a hold and its confirmation):
//  - holds of one unit on a well-stocked SKU, then confirmed (and later fulfilled or
//    cancelled), released, or left to expire (the worker expires them);
//  - multi-SKU batch holds (three lines, two of them the same SKU), released or left to expire;
//  - allocations;
//  - holds on scarce SKUs that join the waitlist when short, and plain waitlist joins;
//    the scarce SKUs are restocked now and then, which promotes waiting customers;
//  - availability reads, and one WatchAvailability stream open all along.
// Every `--check-every-s` (60): the SQL invariants of @holdfast/schema
// (inventoryInvariantViolations, in one REPEATABLE READ snapshot, while the load runs),
// CheckConsistency, the worker's expiry lag; every `--sample-every-s` (10): RSS and V8
// heap of both processes. Results: bench/results/soak.json.
//
//   npm run bench:soak -- [--minutes 10] [--rate 100] [--concurrency 16]
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ExpiryWorkerService, InventoryReservationService, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { metricValue, residentBytes, scrapeMetrics } from "@holdfast/dev-stack";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createKnex, inventoryInvariantViolations } from "@holdfast/schema";
import { benchCaller } from "./auth.js";
import { startBenchCluster, startService, type ServiceProcess } from "./lib/stack.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    rate: { type: "string", default: "100" },
    concurrency: { type: "string", default: "16" },
    "check-every-s": { type: "string", default: "60" },
    "sample-every-s": { type: "string", default: "10" },
  },
});
const numberOption = (name: keyof typeof values, min: number) => {
  const value = Number(values[name]);
  if (!Number.isFinite(value) || value < min) {
    console.error(`--${name} must be a number >= ${min} (got ${JSON.stringify(values[name])})`);
    process.exit(2);
  }
  return value;
};
const minutes = numberOption("minutes", 0.1);
const rate = numberOption("rate", 1);
const concurrency = Math.round(numberOption("concurrency", 1));
const checkEveryMs = numberOption("check-every-s", 1) * 1000;
const sampleEveryMs = numberOption("sample-every-s", 1) * 1000;

const PLENTY = Array.from({ length: 40 }, (_, i) => `SOAK-P-${String(i).padStart(2, "0")}`);
const SCARCE = Array.from({ length: 5 }, (_, i) => `SOAK-S-${i}`);
const SCARCE_STOCK = 10n;
/** TTLs short enough that the worker expires many holds, and promoted waitlist holds (DEFAULT_HOLD_TTL_MS) soon return their units. */
const HOLD_TTL = { seconds: 3n };
const SCARCE_TTL = { seconds: 2n };
const TERMS_ENV = { DEFAULT_HOLD_TTL_MS: "5000" };

type Inventory = ReturnType<typeof createGrpcJsClient<typeof InventoryReservationService>>;

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;
const percentile = (sorted: number[], p: number) => (sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 10) / 10);
const MiB = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

/** Outcomes and latencies by operation, for one period (a check interval) and for the whole run. */
class Tally {
  outcomes: Record<string, Record<string, number>> = {};
  latencies: Record<string, number[]> = {};
  record(op: string, outcome: string, ms: number): void {
    const byOutcome = (this.outcomes[op] ??= {});
    byOutcome[outcome] = (byOutcome[outcome] ?? 0) + 1;
    (this.latencies[op] ??= []).push(ms);
  }
  summary() {
    const ops = Object.fromEntries(
      Object.entries(this.latencies).map(([op, ms]) => {
        const sorted = [...ms].sort((a, b) => a - b);
        return [op, { calls: ms.length, outcomes: this.outcomes[op], p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: percentile(sorted, 100) }];
      }),
    );
    return { calls: Object.values(this.latencies).reduce((n, ms) => n + ms.length, 0), ops };
  }
}

function outcomeOf(err: unknown): string {
  if (!(err instanceof ConnectError)) throw err;
  return `${Code[err.code]}/${err.findDetails(ErrorInfoSchema)[0]?.reason ?? "-"}`;
}

async function main(): Promise<void> {
  const cluster = await startBenchCluster();
  const processes: ServiceProcess[] = [];
  try {
    const url = await cluster.migrated("soak");
    const knex = createKnex({ url, poolMax: 2 });
    const env = { DATABASE_URL: url, ...TERMS_ENV };
    const service = await startService("@holdfast/reservation-service/main", env);
    processes.push(service);
    // Scheduled reconciliation (CHECK) and snapshots run during the soak too.
    const worker = await startService("@holdfast/expiry-worker/main", { ...env, RECONCILIATION_INTERVAL_MS: "120000", SNAPSHOT_INTERVAL_MS: "60000" });
    processes.push(worker);
    const clients: Inventory[] = [0, 1].map(() => createGrpcJsClient(InventoryReservationService, service.grpc, undefined, { ...benchCaller, "grpc.use_local_subchannel_pool": 1 }));
    const ops = createGrpcJsClient(ExpiryWorkerService, worker.grpc, undefined, benchCaller);
    for (const sku of PLENTY) await clients[0]!.createSku({ requestId: `sku-${sku}`, sku, name: sku, initialOnHand: 10_000_000n });
    for (const sku of SCARCE) await clients[0]!.createSku({ requestId: `sku-${sku}`, sku, name: sku, initialOnHand: SCARCE_STOCK });

    let period = new Tally();
    const total = new Tally();
    const allocations: string[] = [];
    let sequence = 0;
    const id = (kind: string) => `${kind}-${++sequence}`;
    /** Runs one call, timed and tallied; undefined if it failed. */
    const timed = async <T>(op: string, call: () => Promise<T>, describe: (result: T) => string = () => "OK"): Promise<T | undefined> => {
      const started = performance.now();
      try {
        const result = await call();
        const ms = performance.now() - started;
        period.record(op, describe(result), ms);
        total.record(op, describe(result), ms);
        return result;
      } catch (err) {
        const ms = performance.now() - started;
        const outcome = outcomeOf(err);
        period.record(op, outcome, ms);
        total.record(op, outcome, ms);
        return undefined;
      }
    };

    const operations: [weight: number, run: (client: Inventory) => Promise<void>][] = [
      [30, async (client) => {
        const res = await timed("CreateHold", () => client.createHold({ requestId: id("hold"), customerId: `c-${sequence % 1000}`, lines: [{ sku: pick(PLENTY), quantity: 1 }], ttl: HOLD_TTL }));
        const reservationId = res?.reservation?.id;
        if (reservationId === undefined) return;
        const fate = Math.random();
        if (fate < 0.35) {
          const confirmed = await timed("ConfirmHold", () => client.confirmHold({ requestId: id("confirm"), reservationId }));
          if (confirmed !== undefined) allocations.push(reservationId);
        } else if (fate < 0.7) {
          await timed("ReleaseHold", () => client.releaseHold({ requestId: id("release"), reservationId }));
        } // else: left to expire
      }],
      [10, async (client) => {
        const [a, b] = [pick(PLENTY), pick(PLENTY)];
        const res = await timed("CreateHold (batch)", () =>
          client.createHold({ requestId: id("batch"), customerId: `c-${sequence % 1000}`, lines: [{ sku: a, quantity: 1 }, { sku: b, quantity: 2 }, { sku: a, quantity: 1 }], ttl: HOLD_TTL }),
        );
        const reservationId = res?.reservation?.id;
        if (reservationId !== undefined && Math.random() < 0.5) await timed("ReleaseHold", () => client.releaseHold({ requestId: id("release"), reservationId }));
      }],
      [10, async (client) => {
        const res = await timed("CreateAllocation", () => client.createAllocation({ requestId: id("alloc"), customerId: `c-${sequence % 1000}`, lines: [{ sku: pick(PLENTY), quantity: 1 }] }));
        if (res?.reservation !== undefined) allocations.push(res.reservation.id);
      }],
      [5, async (client) => {
        const reservationId = allocations.shift();
        if (reservationId === undefined) return;
        if (Math.random() < 0.5) await timed("FulfillAllocation", () => client.fulfillAllocation({ requestId: id("fulfill"), reservationId }));
        else await timed("CancelAllocation", () => client.cancelAllocation({ requestId: id("cancel"), reservationId }));
      }],
      [15, async (client) => {
        const res = await timed("CreateHold (scarce, waitlist if short)", () =>
          client.createHold({ requestId: id("scarce"), customerId: `c-${sequence % 1000}`, lines: [{ sku: pick(SCARCE), quantity: 1 }], ttl: SCARCE_TTL, joinWaitlistIfShort: true }),
          (res) => (res.reservation === undefined ? "OK (waitlisted)" : "OK"),
        );
        const reservationId = res?.reservation?.id;
        if (reservationId === undefined) return;
        const fate = Math.random();
        if (fate < 0.2) await timed("ConfirmHold", () => client.confirmHold({ requestId: id("confirm"), reservationId }));
        else if (fate < 0.7) await timed("ReleaseHold", () => client.releaseHold({ requestId: id("release"), reservationId }));
      }],
      [5, async (client) => {
        await timed(
          "JoinWaitlist",
          () => client.joinWaitlist({ requestId: id("join"), customerId: `c-${sequence % 1000}`, sku: pick(SCARCE), quantity: 1, maxWait: { seconds: 20n } }),
          (res) => (res.reservation === undefined ? "OK (waiting)" : "OK (promoted at once)"),
        );
      }],
      [24, async (client) => {
        await timed("GetAvailability", () => client.getAvailability({ skus: [pick(SCARCE), pick(PLENTY), pick(PLENTY)] }));
      }],
      [1, async (client) => {
        await timed("AdjustStock (restock)", () => client.adjustStock({ requestId: id("restock"), sku: pick(SCARCE), change: { case: "delta", value: 2n }, reason: "soak restock" }));
      }],
    ];
    const totalWeight = operations.reduce((n, [w]) => n + w, 0);
    const chooseOperation = () => {
      let r = Math.random() * totalWeight;
      for (const [weight, run] of operations) if ((r -= weight) < 0) return run;
      return operations[0]![1];
    };

    // The availability stream: open all along; reopened (and counted) if it ends.
    const stream = { messages: 0, updates: 0, reopened: 0, errors: {} as Record<string, number> };
    const streamStop = new AbortController();
    const watching = (async () => {
      while (!streamStop.signal.aborted) {
        try {
          for await (const message of clients[1]!.watchAvailability({ skus: [...SCARCE, ...PLENTY.slice(0, 5)], heartbeatInterval: { seconds: 5n } }, { signal: streamStop.signal }) as AsyncIterable<WatchAvailabilityResponse>) {
            stream.messages++;
            if (message.event.case === "update") stream.updates++;
          }
        } catch (err) {
          if (streamStop.signal.aborted) break;
          const key = outcomeOf(err);
          stream.errors[key] = (stream.errors[key] ?? 0) + 1;
        }
        if (!streamStop.signal.aborted) stream.reopened++;
      }
    })();

    // Memory of both processes.
    const memory: { atS: number; service: { rssMiB: number; heapUsedMiB: number }; worker: { rssMiB: number; heapUsedMiB: number } }[] = [];
    const startedAt = performance.now();
    const sampleMemory = async () => {
      const of = async (p: ServiceProcess) => ({ rssMiB: MiB(await residentBytes(p.child.pid!)), heapUsedMiB: MiB(metricValue(await scrapeMetrics(p.http), "nodejs_heap_size_used_bytes")) });
      memory.push({ atS: Math.round((performance.now() - startedAt) / 1000), service: await of(service), worker: await of(worker) });
    };

    // The checks: invariants in one snapshot (the load goes on), CheckConsistency, the worker's view.
    const checks: Record<string, unknown>[] = [];
    const check = async (label: string) => {
      const t0 = performance.now();
      const violations = await knex.transaction((trx) => inventoryInvariantViolations(trx), { isolationLevel: "repeatable read", readOnly: true });
      const consistency = await clients[0]!.checkConsistency({});
      const { status } = await ops.getWorkerStatus({});
      const minute = period.summary();
      period = new Tally();
      const text = await scrapeMetrics(service.http);
      const result = {
        label,
        atS: Math.round((performance.now() - startedAt) / 1000),
        invariantViolations: violations.length,
        violations: violations.slice(0, 20),
        consistent: consistency.consistent,
        consistencyViolations: consistency.violations.length,
        checkMs: Math.round(performance.now() - t0),
        worker: {
          holdsExpiredTotal: Number(status!.holdsExpiredTotal),
          overdueHolds: Number(status!.overdueHolds),
          expiryLagP99Ms: status!.expiryLag?.p99 ? durationMs(status!.expiryLag.p99) : null,
          expiryLagMaxMs: status!.expiryLag?.max ? durationMs(status!.expiryLag.max) : null,
        },
        service: { shedTotal: metricValue(text, "holdfast_rpc_shed_total"), inFlight: metricValue(text, "holdfast_rpc_in_flight") },
        period: minute,
      };
      checks.push(result);
      console.log(
        JSON.stringify({
          check: label,
          atS: result.atS,
          calls: minute.calls,
          invariantViolations: result.invariantViolations,
          consistent: result.consistent,
          holdP99Ms: minute.ops.CreateHold?.p99Ms,
          expiryLagP99Ms: result.worker.expiryLagP99Ms,
          rssMiB: memory.at(-1)?.service.rssMiB,
          heapUsedMiB: memory.at(-1)?.service.heapUsedMiB,
        }),
      );
    };

    // The load: `rate` operations a second on a schedule, at most `concurrency` at once,
    // until `minutes` have passed. Operations more than a second behind their time are
    // not made up for (no burst to catch up): skipped, and counted.
    const endAt = startedAt + minutes * 60_000;
    const interval = 1000 / rate;
    let issued = 0;
    let skipped = 0;
    const load = Array.from({ length: concurrency }, async (_, w) => {
      const client = clients[w % clients.length]!;
      for (;;) {
        const now = performance.now();
        const late = Math.floor((now - startedAt - 1000) / interval) - issued;
        if (late > 0) {
          skipped += late;
          issued += late;
        }
        const due = startedAt + issued++ * interval;
        if (due >= endAt || now >= endAt) return;
        if (due > now) await new Promise((resolve) => setTimeout(resolve, due - now));
        await chooseOperation()(client);
      }
    });
    await sampleMemory();
    const sampler = setInterval(() => void sampleMemory().catch((err: unknown) => console.error("memory sample failed", err)), sampleEveryMs);
    let checking = Promise.resolve();
    let checkNumber = 0;
    const checker = setInterval(() => {
      checking = checking.then(() => check(`check ${++checkNumber}`)).catch((err: unknown) => console.error("check failed", err));
    }, checkEveryMs);
    await Promise.all(load);
    clearInterval(checker);
    clearInterval(sampler);
    await checking;
    const loadSeconds = (performance.now() - startedAt) / 1000;
    streamStop.abort();
    await watching;
    await sampleMemory();
    await check("end");

    const rss = memory.map((m) => m.service.rssMiB);
    const firstMinute = memory.filter((m) => m.atS <= 60);
    const lastMinute = memory.filter((m) => m.atS >= loadSeconds - 60);
    const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)) * 10) / 10;
    const summary = {
      minutes,
      rate,
      concurrency,
      callsPerSecond: Math.round(total.summary().calls / loadSeconds),
      operationsSkippedBehindSchedule: skipped,
      checks: checks.length,
      checksWithViolations: checks.filter((c) => c.invariantViolations !== 0 || c.consistent !== true).length,
      stream,
      memory: {
        service: { rssMiBFirstMinute: mean(firstMinute.map((m) => m.service.rssMiB)), rssMiBLastMinute: mean(lastMinute.map((m) => m.service.rssMiB)), rssMiBMax: Math.max(...rss), heapUsedMiBLastMinute: mean(lastMinute.map((m) => m.service.heapUsedMiB)) },
        worker: {
          rssMiBFirstMinute: mean(firstMinute.map((m) => m.worker.rssMiB)),
          rssMiBLastMinute: mean(lastMinute.map((m) => m.worker.rssMiB)),
          rssMiBMax: Math.max(...memory.map((m) => m.worker.rssMiB)),
          heapUsedMiBLastMinute: mean(lastMinute.map((m) => m.worker.heapUsedMiB)),
        },
      },
      logLines: { service: service.logLevels, worker: worker.logLevels },
      warnings: { service: service.warnings.slice(0, 10), worker: worker.warnings.slice(0, 10) },
      total: total.summary(),
    };
    console.log(JSON.stringify({ summary: { ...summary, total: undefined } }));

    for (const c of clients) c.close();
    ops.close();
    await knex.destroy();
    await mkdir(new URL("../results/", import.meta.url), { recursive: true });
    const out = fileURLToPath(new URL("../results/soak.json", import.meta.url));
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), summary, checks, memory }, null, 2)}\n`);
    console.log(`written ${path.relative(process.cwd(), out)}`);
    if (summary.checksWithViolations > 0) process.exitCode = 1;
  } finally {
    await Promise.all(processes.map((p) => p.stop()));
    await cluster.stop();
  }
}

await main();
