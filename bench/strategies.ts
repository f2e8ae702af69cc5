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
//   npm run bench:strategies -- [--seconds 4] [--concurrency 16,64] [--skus 1000]
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { InventoryReservationService, LockingStrategy } from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { ensureDatabase, freePort, startEmbeddedPostgres } from "@holdfast/dev-stack";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createKnex, migrateLatest } from "@holdfast/schema";
import { ConnectError } from "@connectrpc/connect";
import { BENCH_AUTH_ENV, benchCaller } from "./auth.js";

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

async function drive(concurrency: number, one: (worker: number, i: number) => Promise<string>): Promise<{ perSecond: number; outcomes: Record<string, number>; p50: number; p99: number }> {
  const deadline = performance.now() + seconds * 1000;
  const outcomes: Record<string, number> = {};
  const latencies: number[] = [];
  let count = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const t = performance.now();
        const outcome = await one(worker, i);
        latencies.push(performance.now() - t);
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
        count++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! * 10) / 10;
  return { perSecond: Math.round((outcomes.OK ?? 0) / elapsed), outcomes, p50: q(0.5), p99: q(0.99) };
}

/** CPU time (user + system) process `pid` has used, in µs (Linux /proc, USER_HZ = 100); undefined elsewhere. */
function cpuMicros(pid: number | undefined): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}

function startService(databaseUrl: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; grpc: string }> {
  const main = fileURLToPath(import.meta.resolve("@holdfast/reservation-service/main"));
  const child = spawn(process.execPath, [main], {
    env: { PATH: process.env.PATH, ...BENCH_AUTH_ENV, DATABASE_URL: databaseUrl, GRPC_HOST: "127.0.0.1", GRPC_PORT: "0", HTTP_HOST: "127.0.0.1", HTTP_PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`reservation-service exited with ${code}`)));
    // Its "ready" line carries the address; later lines are read and dropped.
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const entry = JSON.parse(line) as { msg?: string; grpc?: string };
      if (entry.msg === "ready") resolve({ child, grpc: entry.grpc! });
    });
  });
}

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), "holdfast-bench-"));
  const cluster = await startEmbeddedPostgres({ dataDir: path.join(root, "data"), port: await freePort(), persistent: false });
  let service: { child: ChildProcess; grpc: string } | undefined;
  let unlogged: { child: ChildProcess; grpc: string } | undefined;
  try {
    await ensureDatabase(cluster.url("postgres"), "bench");
    const url = cluster.url("bench");
    const knex = createKnex({ url, poolMax: 2 });
    await migrateLatest(knex);
    await knex.destroy();
    service = await startService(url);
    // A second process with the request log off, to measure what logging attempts costs.
    unlogged = await startService(url, { REQUEST_LOG: "false" });
    const unloggedPid = unlogged.child.pid;
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
        const baseline = await drive(concurrency, async (w, i) => {
          await pool.query(BASELINE_HOLD, [skuFor(w, i)]);
          return "OK";
        });
        await pool.end();
        const result: Record<string, unknown> = { scenario, concurrency, baselineTxPerSecond: baseline.perSecond, baselineP99Ms: baseline.p99 };
        const holds = async (target: typeof client, strategy: LockingStrategy, pid = service!.child.pid) => {
          run++;
          const cpuBefore = cpuMicros(pid);
          const measured = await drive(concurrency, async (w, i) => {
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
              const e = ConnectError.from(err);
              return e.findDetails(ErrorInfoSchema)[0]?.reason ?? String(e.code);
            }
          });
          const cpuAfter = cpuMicros(pid);
          const granted = measured.outcomes.OK ?? 0;
          const cpuUsPerHold = cpuBefore === undefined || cpuAfter === undefined || granted === 0 ? undefined : Math.round((cpuAfter - cpuBefore) / granted);
          return { ...measured, cpuUsPerHold };
        };
        for (const strategy of [LockingStrategy.PESSIMISTIC, LockingStrategy.OPTIMISTIC]) {
          const measured = await holds(client, strategy);
          const name = LockingStrategy[strategy];
          result[name] = { holdsPerSecond: measured.perSecond, ratio: Math.round((measured.perSecond / baseline.perSecond) * 100) / 100, p50Ms: measured.p50, p99Ms: measured.p99, cpuUsPerHold: measured.cpuUsPerHold, outcomes: measured.outcomes };
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
    service?.child.kill("SIGTERM");
    unlogged?.child.kill("SIGTERM");
    await cluster.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
