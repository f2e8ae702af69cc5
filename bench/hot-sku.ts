#!/usr/bin/env node
// A hot SKU beyond one row (issue 8, "The moonshot"): what HOT_SKU_MODE_GROUP_COMMIT
// buys, against the single-row ceiling measured in the same run. Two parts:
//
// --part choice: the database alone, no service, the SQL shape of a whole
// single-unit hold on ONE hot SKU, three ways (how the mode was chosen):
//   single-row   one statement per hold (idempotency record, reservation, line,
//                guarded counter UPDATE, ledger event), autocommit: the single-row
//                ceiling; and the service's shape (BEGIN, claim, insert + record,
//                counter + ledger, COMMIT: the row is locked for one statement + commit)
//   group K      one transaction makes K holds: claims K records, inserts K
//                reservations + K lines + records K responses (one statement), ONE
//                counter UPDATE with K ledger events (one statement), COMMIT; `leaders`
//                connections do this concurrently (a leader per SKU per replica)
//   bucketed N   the SKU's stock over N rows, each hold the one-statement shape on a
//                random bucket row (no rebalancing, no reader summing N rows: a bound)
//
// --part grpc: single-unit CreateHold calls over real gRPC (@grpc/grpc-js, this
// process) to reservation-service processes (--replicas) on the same database, one
// hot SKU in mode OFF and one in GROUP_COMMIT, at each concurrency, next to the
// single-row ceiling (the one-statement hold above, moments before, at the same
// concurrency and at 16 clients): holds/s, ratio to the better of the two ceilings,
// p50/p99, and the service processes' CPU per hold (utime + stime from
// /proc/<pid>/stat over the holds made).
//
// Durable commits (synchronous_commit on). Machines here are shared: compare ratios.
//
//   npm run bench:hot-sku -- [--part choice,grpc] [--seconds 5] [--concurrency 64,256] [--replicas 1] [--modes OFF,GROUP_COMMIT] [--max-batch 64] [--cpu-prof DIR]
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { ConnectError } from "@connectrpc/connect";
import { HotSkuMode, InventoryReservationService } from "@holdfast/contracts";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { ensureDatabase, freePort, startEmbeddedPostgres } from "@holdfast/dev-stack";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createKnex, migrateLatest } from "@holdfast/schema";
import { BENCH_AUTH_ENV, benchCaller } from "./auth.js";

const { values } = parseArgs({
  options: {
    part: { type: "string", default: "choice,grpc" },
    seconds: { type: "string", default: "5" },
    clients: { type: "string", default: "16,64" },
    concurrency: { type: "string", default: "64,256" },
    replicas: { type: "string", default: "1" },
    modes: { type: "string", default: "OFF,GROUP_COMMIT" },
    "max-batch": { type: "string", default: "64" },
    // A directory: the service processes write CPU profiles there (node --cpu-prof).
    "cpu-prof": { type: "string" },
    batches: { type: "string", default: "8,32,64" },
    leaders: { type: "string", default: "1,2,4" },
    buckets: { type: "string", default: "4,16" },
  },
});
const seconds = Number(values.seconds);
const list = (s: string) => s.split(",").map(Number);

const ONE_STATEMENT_HOLD = `
WITH u AS (
  UPDATE inventory SET reserved = reserved + 1, version = version + 1, updated_at = now()
   WHERE sku_code = $3 AND available >= 1
  RETURNING sku_code, on_hand, reserved, allocated, version
), rec AS (
  INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, status_code, response, completed_at, expires_at)
  SELECT $1, $2, 'CreateHold', 'h', 'COMPLETED', 0, '\\x00'::bytea, now(), now() + interval '1 day' FROM u
), h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
  SELECT $4::uuid, 'HOLD', 'HELD', 'c', $1, $2, 'PESSIMISTIC', now() + interval '1 hour', now() + interval '1 hour' FROM u
  RETURNING id, expires_at, created_at
), l AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, $3, 1, 'HELD', h.expires_at, h.created_at FROM h
)
INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved, on_hand_before, reserved_before, allocated_before,
                          on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
SELECT 'HOLD_CREATED', sku_code, $4::uuid, 1, on_hand, reserved - 1, allocated, on_hand, reserved, allocated, version, $1, $2 FROM u`;

const CLAIM = `INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, expires_at)
               SELECT $1, r, 'CreateHold', 'h', 'IN_FLIGHT', now() + interval '1 day' FROM unnest($2::text[]) AS r
               ON CONFLICT DO NOTHING RETURNING request_id, now() AS now`;

const INSERT_AND_RECORD = `
WITH h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
  SELECT id, 'HOLD', 'HELD', 'c', $1, r, 'PESSIMISTIC', now() + interval '1 hour', now() + interval '1 hour'
    FROM unnest($2::uuid[], $3::text[]) AS t(id, r)
  RETURNING id, expires_at, created_at
), l AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, $4, 1, 'HELD', h.expires_at, h.created_at FROM h
)
UPDATE idempotency_records SET state = 'COMPLETED', status_code = 0, response = '\\x00'::bytea, completed_at = now()
 WHERE caller = $1 AND request_id = ANY($3::text[])`;

const COUNTER_AND_LEDGER = `
WITH ch AS (SELECT * FROM unnest($3::uuid[], $4::text[]) WITH ORDINALITY AS t(reservation_id, request_id, ord)),
u AS (
  UPDATE inventory SET reserved = reserved + (SELECT count(*) FROM ch), version = version + (SELECT count(*) FROM ch), updated_at = now()
   WHERE sku_code = $2 AND available >= (SELECT count(*) FROM ch)
  RETURNING sku_code, on_hand, reserved, allocated, version
)
INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved, on_hand_before, reserved_before, allocated_before,
                          on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
SELECT 'HOLD_CREATED', u.sku_code, ch.reservation_id, 1, u.on_hand,
       u.reserved - (SELECT count(*) FROM ch) + ch.ord - 1, u.allocated, u.on_hand,
       u.reserved - (SELECT count(*) FROM ch) + ch.ord, u.allocated, u.version - (SELECT count(*) FROM ch) + ch.ord, $1, ch.request_id
  FROM ch, u ORDER BY ch.ord`;

type Measured = { holds: number; holdsPerSecond: number; txPerSecond: number; p50Ms: number; p99Ms: number; outcomes: Record<string, number> };

/** `workers` loops for `seconds`; `one` returns how many holds it made, or a refusal's reason. */
async function drive(workers: number, one: (worker: number) => Promise<number | string>): Promise<Measured> {
  const deadline = performance.now() + seconds * 1000;
  const latencies: number[] = [];
  const outcomes: Record<string, number> = {};
  let holds = 0;
  let tx = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        const made = await one(w);
        if (typeof made === "number") holds += made;
        else outcomes[made] = (outcomes[made] ?? 0) + 1;
        tx++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! * 10) / 10;
  return { holds, holdsPerSecond: Math.round(holds / elapsed), txPerSecond: Math.round(tx / elapsed), p50Ms: q(0.5), p99Ms: q(0.99), outcomes };
}

let seq = 0;
const rid = () => `b${++seq}`;

/** The single-row ceiling: the one-statement hold on `sku` from `clients` connections. */
async function ceiling(url: string, clients: number, sku: string): Promise<Measured> {
  const pool = new pg.Pool({ connectionString: url, max: clients });
  try {
    return await drive(clients, async () => (await pool.query(ONE_STATEMENT_HOLD, ["bench", rid(), sku, randomUUID()]), 1));
  } finally {
    await pool.end();
  }
}

async function choice(url: string, report: (row: Record<string, unknown>) => void): Promise<void> {
  for (const clients of list(values.clients)) {
    const pool = new pg.Pool({ connectionString: url, max: clients });
    report({ shape: "single-row, one statement", clients, ...(await ceiling(url, clients, "HOT")) });
    report({
      shape: "single-row, service shape (5 round trips)",
      clients,
      ...(await drive(clients, async () => {
        const c = await pool.connect();
        try {
          const r = rid();
          const id = randomUUID();
          await c.query("BEGIN");
          await c.query(CLAIM, ["bench", [r]]);
          await c.query(INSERT_AND_RECORD, ["bench", [id], [r], "HOT"]);
          await c.query(COUNTER_AND_LEDGER, ["bench", "HOT", [id], [r]]);
          await c.query("COMMIT");
        } finally {
          c.release();
        }
        return 1;
      })),
    });
    for (const n of list(values.buckets)) {
      report({ shape: `bucketed N=${n}, one statement`, clients, ...(await drive(clients, async () => (await pool.query(ONE_STATEMENT_HOLD, ["bench", rid(), `HOT-B${Math.floor(Math.random() * n)}`, randomUUID()]), 1))) });
    }
    await pool.end();
  }
  for (const leaders of list(values.leaders)) {
    const pool = new pg.Pool({ connectionString: url, max: leaders });
    for (const k of list(values.batches)) {
      report({
        shape: `group commit K=${k}`,
        leaders,
        ...(await drive(leaders, async () => {
          const c = await pool.connect();
          try {
            const ids = Array.from({ length: k }, () => randomUUID());
            const rs = ids.map(() => rid());
            await c.query("BEGIN");
            await c.query(CLAIM, ["bench", rs]);
            await c.query(INSERT_AND_RECORD, ["bench", ids, rs, "HOT"]);
            await c.query(COUNTER_AND_LEDGER, ["bench", "HOT", ids, rs]);
            await c.query("COMMIT");
          } finally {
            c.release();
          }
          return k;
        })),
      });
    }
    await pool.end();
  }
}

function startService(databaseUrl: string): Promise<{ child: ChildProcess; grpc: string }> {
  const main = fileURLToPath(import.meta.resolve("@holdfast/reservation-service/main"));
  const profile = values["cpu-prof"] === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${path.resolve(values["cpu-prof"])}`];
  const child = spawn(process.execPath, [...profile, main], {
    env: {
      PATH: process.env.PATH,
      ...BENCH_AUTH_ENV,
      DATABASE_URL: databaseUrl,
      GRPC_HOST: "127.0.0.1",
      GRPC_PORT: "0",
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: "0",
      LOG_LEVEL: "info",
      // One HTTP/2 connection carries every call of the load generator.
      GRPC_MAX_CONCURRENT_STREAMS: "10000",
      HOT_SKU_MAX_BATCH: values["max-batch"],
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`reservation-service exited with ${code}`)));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const entry = JSON.parse(line) as { msg?: string; grpc?: string };
      if (entry.msg === "ready") resolve({ child, grpc: entry.grpc! });
    });
  });
}

/** The machine's CPU time so far, busy and total, in ms over all cores (/proc/stat, ticks of 10 ms). */
async function machineCpuMs(): Promise<{ busy: number; total: number }> {
  const [cpu] = (await readFile("/proc/stat", "utf8")).split("\n");
  const [user, nice, system, idle, iowait, irq, softirq, steal] = cpu!.trim().split(/\s+/).slice(1).map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { busy: busy * 10, total: (busy + idle! + iowait!) * 10 };
}

/** utime + stime of a process, in ms (/proc/<pid>/stat, clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function grpcPart(url: string, report: (row: Record<string, unknown>) => void): Promise<void> {
  const services = await Promise.all(Array.from({ length: Number(values.replicas) }, () => startService(url)));
  const clients = services.map((s) => createGrpcJsClient(InventoryReservationService, s.grpc, undefined, benchCaller));
  try {
    await clients[0]!.createSku({ requestId: "bench-off", sku: "HOT-OFF", name: "OFF", initialOnHand: 1_000_000_000n, policy: { hotSkuMode: HotSkuMode.OFF } });
    await clients[0]!.createSku({ requestId: "bench-gc", sku: "HOT-GC", name: "GROUP_COMMIT", initialOnHand: 1_000_000_000n, policy: { hotSkuMode: HotSkuMode.GROUP_COMMIT } });
    let run = 0;
    const holds = async (sku: string, concurrency: number) => {
      run++;
      const cpuBefore = await Promise.all(services.map((s) => cpuMs(s.child.pid!)));
      const machineBefore = await machineCpuMs();
      const selfBefore = process.cpuUsage();
      const measured = await drive(concurrency, async (w) => {
        try {
          await clients[w % clients.length]!.createHold({ requestId: rid(), customerId: `c${w}`, lines: [{ sku, quantity: 1 }], ttl: { seconds: 3600n } });
          return 1;
        } catch (err) {
          const e = ConnectError.from(err);
          return e.findDetails(ErrorInfoSchema)[0]?.reason ?? String(e.code);
        }
      });
      const self = process.cpuUsage(selfBefore);
      const machine = await machineCpuMs();
      const cpu = (await Promise.all(services.map((s) => cpuMs(s.child.pid!)))).reduce((sum, ms, i) => sum + ms - cpuBefore[i]!, 0);
      const perHold = (ms: number) => (measured.holds > 0 ? Math.round((ms / measured.holds) * 100) / 100 : null);
      return {
        ...measured,
        serviceCpuMsPerHold: perHold(cpu),
        loadGeneratorCpuMsPerHold: perHold((self.user + self.system) / 1000),
        // Every process on the machine (the database, other users'), over the run.
        machineBusyPercent: Math.round(((machine.busy - machineBefore.busy) / (machine.total - machineBefore.total)) * 100),
        run,
      };
    };
    // Warm-up: pools, JIT, and each process learns the GROUP_COMMIT SKU's policy.
    for (const mode of values.modes.split(",")) await holds(mode === "OFF" ? "HOT-OFF" : "HOT-GC", 16);
    for (const concurrency of list(values.concurrency)) {
      // The ceiling at this concurrency, and at 16 clients: one row commits fastest
      // with few clients queued on it, and the ratio must not profit from its collapse.
      const base = await ceiling(url, concurrency, "HOT");
      const base16 = await ceiling(url, 16, "HOT");
      const best = Math.max(base.holdsPerSecond, base16.holdsPerSecond);
      const row: Record<string, unknown> = {
        concurrency,
        replicas: services.length,
        ceilingHoldsPerSecond: base.holdsPerSecond,
        ceilingP99Ms: base.p99Ms,
        ceiling16HoldsPerSecond: base16.holdsPerSecond,
      };
      for (const mode of values.modes.split(",")) {
        const measured = await holds(mode === "OFF" ? "HOT-OFF" : "HOT-GC", concurrency);
        row[mode] = { ...measured, ratioToBestCeiling: Math.round((measured.holdsPerSecond / best) * 100) / 100 };
      }
      report(row);
    }
  } finally {
    for (const c of clients) c.close();
    await Promise.all(
      services.map((s) => {
        s.child.removeAllListeners("exit");
        const exited = new Promise((resolve) => s.child.once("exit", resolve));
        s.child.kill("SIGTERM");
        return exited;
      }),
    );
  }
}

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), "holdfast-hot-"));
  const cluster = await startEmbeddedPostgres({ dataDir: path.join(root, "data"), port: await freePort(), persistent: false });
  try {
    await ensureDatabase(cluster.url("postgres"), "bench");
    const url = cluster.url("bench");
    const knex = createKnex({ url, poolMax: 2 });
    await migrateLatest(knex);
    const maxBuckets = Math.max(...list(values.buckets));
    const codes = ["HOT", ...Array.from({ length: maxBuckets }, (_, b) => `HOT-B${b}`)];
    await knex("skus").insert(codes.map((code) => ({ code, name: code })));
    await knex("inventory").insert(codes.map((sku_code) => ({ sku_code, on_hand: 1_000_000_000 })));
    await knex.destroy();
    const results: Record<string, Record<string, unknown>[]> = {};
    const parts = values.part.split(",");
    for (const part of parts) {
      const rows: Record<string, unknown>[] = (results[part] = []);
      const report = (row: Record<string, unknown>) => {
        rows.push(row);
        console.log(JSON.stringify({ part, ...row }));
      };
      if (part === "choice") await choice(url, report);
      else if (part === "grpc") await grpcPart(url, report);
      else throw new Error(`unknown part ${part}`);
    }
    await mkdir(new URL("../results/", import.meta.url), { recursive: true });
    const out = fileURLToPath(new URL("../results/hot-sku.json", import.meta.url));
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), seconds, results }, null, 2)}\n`);
    console.log(`written ${path.relative(process.cwd(), out)}`);
  } finally {
    await cluster.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
