#!/usr/bin/env node
// Holds per second of the two locking strategies, against the same SQL run bare.
//
// For each scenario (one hot SKU; holds spread over many SKUs) and concurrency, the
// same run measures:
//   - baseline: the database alone, `concurrency` connections each committing the
//     core of a hold as ONE statement (guarded counter UPDATE + its ledger event),
//     with no reservation rows, no idempotency record, no RPC: a ceiling;
//   - PESSIMISTIC and OPTIMISTIC: single-unit CreateHold calls over real gRPC
//     (@grpc/grpc-js) to a reservation-service process on the same database;
//   - cpuUsPerHold of each strategy row: the service process's CPU time (user + system,
//     /proc/<pid>/stat, Linux) over the row ÷ the holds it granted;
//   - requestLog: PESSIMISTIC holds/s of the process that logs ÷ a second process
//     started with REQUEST_LOG=false, three alternated pairs, the median ratio: what
//     writing the request log of attempts costs.
// Ratios are against the baseline of the same scenario and concurrency, measured
// moments apart on the same machine (machines here are shared and noisy). Durable
// commits (synchronous_commit on), as in production.
//
// The benchmark of record is `npm run bench` (bench/holds.ts, docs/benchmarks.md):
// a ceiling that is a whole hold's SQL run by pgbench, the load from a separate
// process, and CPU per hold. This one stays for its quick in-process comparison of
// the strategies and for the request log's alternated pairs (docs/fairness.md).
//
//   npm run bench:strategies -- [--seconds 4] [--concurrency 16,64] [--skus 1000]
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { InventoryReservationService, LockingStrategy } from "@holdfast/contracts";
import { createGrpcJsClient } from "@holdfast/runtime";
import { benchCaller } from "./auth.js";
import { processCpuMicros } from "./lib/cpu.js";
import { drive, refusalReason } from "./lib/drive.js";
import { startBenchCluster, startService, type ServiceProcess } from "./lib/stack.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "4" },
    concurrency: { type: "string", default: "16,64" },
    skus: { type: "string", default: "1000" },
  },
});
const seconds = Number(values.seconds);
const concurrencies = values.concurrency.split(",").map(Number);
const spreadSkus = Number(values.skus);

/** The hold's counter change and ledger event, one statement (see packages/schema/src/ledger.ts). */
const BASELINE_HOLD = `
WITH u AS (
  UPDATE inventory SET reserved = reserved + 1, version = version + 1, updated_at = now()
   WHERE sku_code = $1 AND available >= 1
  RETURNING sku_code, on_hand, reserved, allocated, version)
INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved, on_hand_before, reserved_before, allocated_before,
                          on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
SELECT 'STOCK_ADJUSTED', sku_code, NULL, 0, on_hand, reserved, allocated, on_hand, reserved, allocated, version, 'bench:baseline', NULL FROM u`;
// (STOCK_ADJUSTED with zero deltas keeps the ledger CHECKs happy without a reservation row.)

async function main(): Promise<void> {
  const cluster = await startBenchCluster();
  let service: ServiceProcess | undefined;
  let unlogged: ServiceProcess | undefined;
  try {
    const url = await cluster.migrated("bench");
    const reservationService = (env: Record<string, string> = {}) => startService("@holdfast/reservation-service/main", { DATABASE_URL: url, ...env });
    service = await reservationService();
    // A second process with the request log off, to measure what logging attempts costs.
    unlogged = await reservationService({ REQUEST_LOG: "false" });
    const unloggedPid = unlogged.child.pid!;
    const client = createGrpcJsClient(InventoryReservationService, service.grpc, undefined, benchCaller);
    const unloggedClient = createGrpcJsClient(InventoryReservationService, unlogged.grpc, undefined, benchCaller);
    const hot = "HOT";
    await client.createSku({ requestId: "bench-hot", sku: hot, name: "Hot SKU", initialOnHand: 1_000_000_000n });
    const spread = Array.from({ length: spreadSkus }, (_, i) => `S-${String(i).padStart(5, "0")}`);
    for (const [i, sku] of spread.entries()) await client.createSku({ requestId: `bench-s-${i}`, sku, name: sku, initialOnHand: 1_000_000_000n });

    const rows: Record<string, unknown>[] = [];
    let run = 0;
    for (const scenario of ["hot", "spread"] as const) {
      const skuFor = (worker: number, i: number) => (scenario === "hot" ? hot : spread[(worker * 7919 + i * 104729) % spread.length]!);
      for (const concurrency of concurrencies) {
        const pool = new pg.Pool({ connectionString: url, max: concurrency });
        const baseline = await drive({ concurrency, seconds }, async (w, i) => {
          await pool.query(BASELINE_HOLD, [skuFor(w, i)]);
          return "OK";
        });
        await pool.end();
        const result: Record<string, unknown> = { scenario, concurrency, baselineTxPerSecond: baseline.perSecond, baselineP99Ms: baseline.p99Ms };
        const holds = async (target: typeof client, strategy: LockingStrategy, pid = service!.child.pid!) => {
          run++;
          const cpuBefore = processCpuMicros(pid);
          const measured = await drive({ concurrency, seconds }, async (w, i) => {
            try {
              await target.createHold({
                requestId: `r${run}-${w}-${i}`,
                customerId: `c${w}`,
                lines: [{ sku: skuFor(w, i), quantity: 1 }],
                lockingStrategy: strategy,
                ttl: { seconds: 3600n },
              });
              return "OK";
            } catch (err) {
              return refusalReason(err);
            }
          });
          const cpuAfter = processCpuMicros(pid);
          const granted = measured.outcomes.OK ?? 0;
          const cpuUsPerHold = granted === 0 ? undefined : Math.round((cpuAfter - cpuBefore) / granted);
          return { ...measured, cpuUsPerHold };
        };
        for (const strategy of [LockingStrategy.PESSIMISTIC, LockingStrategy.OPTIMISTIC]) {
          const measured = await holds(client, strategy);
          const name = LockingStrategy[strategy];
          result[name] = { holdsPerSecond: measured.perSecond, ratio: Math.round((measured.perSecond / baseline.perSecond) * 100) / 100, p50Ms: measured.p50Ms, p99Ms: measured.p99Ms, cpuUsPerHold: measured.cpuUsPerHold, outcomes: measured.outcomes };
        }
        // The request log's cost: PESSIMISTIC runs against the process that logs and the
        // one that does not, alternated (A B A B A B) so that drift in the machine's load
        // falls on both sides; the ratio is the median of the three pairs.
        const pairs: Array<{ logged: number; unlogged: number }> = [];
        for (let round = 0; round < 3; round++) {
          const logged = (await holds(client, LockingStrategy.PESSIMISTIC)).perSecond;
          const unlogged = (await holds(unloggedClient, LockingStrategy.PESSIMISTIC, unloggedPid)).perSecond;
          pairs.push({ logged, unlogged });
        }
        const ratios = pairs.map((p) => p.logged / p.unlogged).sort((a, b) => a - b);
        result.requestLog = { pairs, withLogOverWithout: Math.round(ratios[1]! * 100) / 100 };
        rows.push(result);
        console.log(JSON.stringify(result));
      }
    }
    client.close();
    unloggedClient.close();
    await mkdir(new URL("../results/", import.meta.url), { recursive: true });
    const out = fileURLToPath(new URL("../results/strategies.json", import.meta.url));
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), seconds, poolMax: 10, rows }, null, 2)}\n`);
    console.log(`written ${path.relative(process.cwd(), out)}`);
  } finally {
    await service?.stop();
    await unlogged?.stop();
    await cluster.stop();
  }
}

await main();
