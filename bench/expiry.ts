#!/usr/bin/env node
// Expiry: how fast the expiry-worker returns the stock of expired holds.
//
// Two measurements in one run, on one embedded PostgreSQL (durable commits):
//  1. LAG UNDER STEADY EXPIRY. Holds are written straight into the database
//     (seedHolds: headers, lines, counters and ledger as the service writes them)
//     at `--rate` holds per second for `--seconds`, each expiring `--ttl-ms` after
//     it is written, spread evenly, so that once the first ones expire `--rate`
//     holds expire every second. The worker replicas (`--workers`) expire them;
//     lag = commit that returned a hold's units - its expire_time, as the workers
//     measure it (GetWorkerStatus.expiry_lag). The goal is p99 <= 1 s.
//  2. THROUGHPUT AGAINST THE BARE SQL. A backlog of `--backlog` overdue holds is
//     expired once by RunExpirySweep (batches of 500) and once, on an identical
//     backlog, by the same statements run bare from this process (claim, expire,
//     counters + ledger, commit; no gRPC, no notifications, no lag bookkeeping).
//     The ratio worker / bare is the price of the worker around the SQL.
//
//   npm run bench:expiry -- [--rate 1000] [--seconds 10] [--ttl-ms 2000] [--workers 2] [--backlog 20000]
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { ExpiryWorkerService, InventoryReservationService, type DurationDistribution } from "@holdfast/contracts";
import { seedHolds } from "@holdfast/dev-stack";
import { createGrpcJsClient } from "@holdfast/runtime";
import { DEFAULT_HOLD_TERMS, createKnex, expireClaimedHolds, query } from "@holdfast/schema";
import { benchCaller } from "./auth.js";
import { startBenchCluster, startService, type ServiceProcess } from "./lib/stack.js";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "1000" },
    seconds: { type: "string", default: "10" },
    "ttl-ms": { type: "string", default: "2000" },
    workers: { type: "string", default: "2" },
    backlog: { type: "string", default: "20000" },
  },
});
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const ttlMs = Number(values["ttl-ms"]);
const workerCount = Number(values.workers);
const backlog = Number(values.backlog);
const SKUS = Array.from({ length: 100 }, (_, i) => `E-${String(i).padStart(3, "0")}`);

const ms = (d: DurationDistribution) => ({
  count: Number(d.count),
  p50Ms: d.p50 ? durationMs(d.p50) : null,
  p95Ms: d.p95 ? durationMs(d.p95) : null,
  p99Ms: d.p99 ? durationMs(d.p99) : null,
  maxMs: d.max ? durationMs(d.max) : null,
});

async function main(): Promise<void> {
  const cluster = await startBenchCluster();
  const children: ServiceProcess[] = [];
  try {
    const url = await cluster.migrated("bench");
    const knex = createKnex({ url, poolMax: 4 });
    const service = await startService("@holdfast/reservation-service/main", { DATABASE_URL: url });
    children.push(service);
    const inventory = createGrpcJsClient(InventoryReservationService, service.grpc, undefined, benchCaller);
    for (const sku of SKUS) await inventory.createSku({ requestId: `c-${sku}`, sku, name: sku, initialOnHand: 100_000_000n });
    inventory.close();

    const workerEnv = { DATABASE_URL: url, RECONCILIATION_INTERVAL_MS: "0", SNAPSHOT_INTERVAL_MS: "0" };
    const workers = await Promise.all(Array.from({ length: workerCount }, (_, i) => startService("@holdfast/expiry-worker/main", { ...workerEnv, WORKER_ID: `bench-${i}` })));
    children.push(...workers);
    const ops = workers.map((w) => createGrpcJsClient(ExpiryWorkerService, w.grpc, undefined, benchCaller));

    // 1. Steady expiry: every 100 ms, rate/10 holds expiring ttl-ms later, spread over those 100 ms.
    const tick = 100;
    const perTick = Math.round((rate * tick) / 1000);
    const started = Date.now();
    let written = 0;
    for (let t = 0; t < (seconds * 1000) / tick; t++) {
      await seedHolds(knex, { prefix: `steady-${t}`, skus: SKUS, count: perTick, expiresInMs: (i) => ttlMs + (i * tick) / perTick, multiSkuEvery: 10 });
      written += perTick;
      const behind = started + (t + 1) * tick - Date.now();
      if (behind > 0) await new Promise((resolve) => setTimeout(resolve, behind));
    }
    const writeSeconds = (Date.now() - started) / 1000;
    // Wait for the last ones to expire and be swept.
    const deadline = Date.now() + ttlMs + 30_000;
    for (;;) {
      const [{ held }] = (await query<{ held: number }>(knex, `SELECT count(*)::int AS held FROM reservations WHERE status = 'HELD'`)) as [{ held: number }];
      if (held === 0 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const statuses = await Promise.all(ops.map(async (c) => (await c.getWorkerStatus({})).status!));
    const perWorker = statuses.map((s) => ({ workerId: s.workerId, holdsExpired: Number(s.holdsExpiredTotal), lag: ms(s.expiryLag!) }));
    const worst = (key: "p99Ms" | "maxMs") => Math.max(...perWorker.map((w) => w.lag[key] ?? 0));
    const steady = { rate, achievedWriteRate: Math.round(written / writeSeconds), seconds, ttlMs, workers: workerCount, holds: written, perWorker, worstP99Ms: worst("p99Ms"), worstMaxMs: worst("maxMs") };
    console.log(JSON.stringify({ steady }));

    // 2. Backlog: the worker's sweep against the bare statements, on identical backlogs.
    const seedBacklog = (prefix: string) => seedHolds(knex, { prefix, skus: SKUS, count: backlog, expiresInMs: (i) => -60_000 + (i % 1000), multiSkuEvery: 10 });
    await seedBacklog("backlog-worker");
    let t0 = performance.now();
    const { sweep } = await ops[0]!.runExpirySweep({ requestId: "bench-backlog", batchSize: 500 });
    const workerSeconds = (performance.now() - t0) / 1000;
    await seedBacklog("backlog-bare");
    t0 = performance.now();
    let bare = 0;
    for (;;) {
      const n = await knex.transaction(async (trx) => {
        const ids = await query<{ id: string }>(trx, `SELECT id FROM reservations WHERE status = 'HELD' AND expires_at <= (SELECT clock_timestamp()) ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED`);
        await expireClaimedHolds(trx, ids.map((r) => r.id), { actor: "bench:bare", requestId: null }, DEFAULT_HOLD_TERMS);
        return ids.length;
      });
      bare += n;
      if (n < 500) break;
    }
    const bareSeconds = (performance.now() - t0) / 1000;
    const throughput = {
      backlog,
      workerHoldsPerSecond: Math.round(Number(sweep!.holdsExpired) / workerSeconds),
      bareHoldsPerSecond: Math.round(bare / bareSeconds),
      ratio: Math.round((Number(sweep!.holdsExpired) / workerSeconds / (bare / bareSeconds)) * 100) / 100,
    };
    console.log(JSON.stringify({ throughput }));
    for (const c of ops) c.close();
    await knex.destroy();

    await mkdir(new URL("../results/", import.meta.url), { recursive: true });
    const out = fileURLToPath(new URL("../results/expiry.json", import.meta.url));
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), steady, throughput }, null, 2)}\n`);
    console.log(`written ${path.relative(process.cwd(), out)}`);
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await cluster.stop();
  }
}

await main();
