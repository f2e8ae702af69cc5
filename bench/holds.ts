#!/usr/bin/env node
// `npm run bench`: holds per second of Holdfast against the physical limit of its
// own database on this machine, as ratios measured in the same run.
//
// For each scenario (bench/scenarios.ts: one hot SKU, 10,000 SKUs spread, one hot SKU
// in HOT_SKU_MODE_GROUP_COMMIT) and each concurrency, on one embedded PostgreSQL
// (durable commits):
//   1. the CEILING: pgbench running a hold's SQL against the same schema and SKUs
//      (bench/pgbench/): the hold as ONE statement (the ceiling proper), and as the
//      statements the service sends in one transaction (what the round trips cost
//      while the hot row is locked), prepared and parsed every time;
//   2. HOLDFAST: a reservation-service process, driven over gRPC by
//      bench/load-generator.ts in a separate process, per locking strategy: holds/s,
//      p50/p99, refusals by reason, and CPU per hold of the service, of the load
//      generator and of PostgreSQL (/proc, over the measured window);
//   3. the ratios Holdfast / ceiling, written to bench/results/holds.json and as the
//      tables of docs/benchmarks.md (between its bench:holds markers).
// Every measurement runs on a fresh copy of the scenario's database (the SKUs just
// created, nothing sold), so rows one measurement inserts cannot slow the next, and
// starts with a warm-up that is not counted. Loopback only; bounded in time (about
// (warmup + seconds + 5 s) per measurement, plus creating the SKUs once per scenario).
//
// `--scenario expiry` also runs bench/expiry.ts (npm run bench:expiry, its defaults);
// the expiry goal's row is read from bench/results/expiry.json either way.
//
//   npm run bench -- [--seconds 10] [--warmup 10] [--concurrency 16,64 (default: per scenario)]
//                    [--scenario hot,spread,hot-group-commit]
//                    [--strategies PESSIMISTIC,OPTIMISTIC] [--service-env KEY=VALUE,...] [--statements] [--no-docs]
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { createGrpcJsClient } from "@holdfast/runtime";
import { BENCH_CLIENT_ENV, benchCaller } from "./auth.js";
import { machine, machineBusyMicros, processCpuMicros, processTreeCpuMicros, reapedCpuMicros } from "./lib/cpu.js";
import type { Driven } from "./lib/drive.js";
import { startBenchCluster, startService, type BenchCluster } from "./lib/stack.js";
import { DEFAULT_SCENARIOS, ON_HAND, SCENARIOS, skuCode, type Scenario } from "./scenarios.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    // V8 keeps optimising the service for tens of seconds; a cold window costs up to 1.8x the CPU.
    warmup: { type: "string", default: "10" },
    // Default: each scenario's own (bench/scenarios.ts), else 16,64.
    concurrency: { type: "string" },
    scenario: { type: "string", default: DEFAULT_SCENARIOS.join(",") },
    strategies: { type: "string", default: "PESSIMISTIC,OPTIMISTIC" },
    "service-env": { type: "string", default: "" },
    "no-docs": { type: "boolean", default: false },
    statements: { type: "boolean", default: false },
  },
});
const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
const DEFAULT_CONCURRENCY = [16, 64];
const concurrencyOption = values.concurrency?.split(",").map(Number);
const concurrenciesOf = (scenario: Scenario) => concurrencyOption ?? scenario.concurrency ?? DEFAULT_CONCURRENCY;
const strategies = values.strategies.split(",");
const strategiesOf = (scenario: Scenario) => strategies.filter((s) => scenario.strategies === undefined || scenario.strategies.includes(s));
const serviceEnv = Object.fromEntries(
  values["service-env"]
    .split(",")
    .filter((kv) => kv !== "")
    .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
);
const scenarioNames = values.scenario.split(",");
for (const name of scenarioNames) {
  if (name !== "expiry" && !SCENARIOS.some((s) => s.name === name)) throw new Error(`unknown scenario ${name}; known: ${[...SCENARIOS.map((s) => s.name), "expiry"].join(", ")}`);
}
const COMMAND = ["npm run bench", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(" ");
const here = (relative: string) => fileURLToPath(new URL(relative, import.meta.url)); // relative to bench/dist
const PGBENCH = "/usr/bin/pgbench";

/**
 * The ceilings: a script of bench/pgbench/ and pgbench's query mode, `prepared`
 * (each statement parsed once per connection, as the service sends its own since
 * issue 8; `-M extended`, parsed and planned every time, cost twice the
 * PostgreSQL CPU per hold when the service still sent them that way).
 */
const CEILINGS = {
  oneStatement: { script: "hold-one-statement.sql", mode: "prepared", title: "one statement (the ceiling)" },
  statements: { script: "hold-statements.sql", mode: "prepared", title: "the service's statements" },
} as const;
type CeilingShape = keyof typeof CEILINGS;

/** Where a measured window's CPU went, in µs (and the window, in s). */
interface CpuWindow {
  seconds: number;
  postgres: number;
  /** Every process on the machine, ours and the other engineers'. */
  machine: number;
}

function cpuSampler(cluster: BenchCluster): { start(): void; end(): CpuWindow } {
  let t0 = 0;
  let pg0 = 0;
  let m0 = 0;
  return {
    start() {
      t0 = performance.now();
      pg0 = processTreeCpuMicros(cluster.pid);
      m0 = machineBusyMicros();
    },
    end: () => ({ seconds: (performance.now() - t0) / 1000, postgres: processTreeCpuMicros(cluster.pid) - pg0, machine: machineBusyMicros() - m0 }),
  };
}

const round = (x: number, digits = 0) => Math.round(x * 10 ** digits) / 10 ** digits;
/** µs of CPU per unit of work. */
const per = (micros: number, count: number) => (count === 0 ? null : round(micros / count));
/** Cores busy on average over a window. */
const cores = (micros: number, windowSeconds: number) => round(micros / (windowSeconds * 1e6), 2);

interface CeilingResult {
  script: string;
  queryMode: string;
  txPerSecond: number;
  latencyAverageMs: number;
  failed: number;
  cpu: { postgresMicrosPerTx: number | null; pgbenchMicrosPerTx: number | null; machineCoresBusy: number; postgresCores: number; pgbenchCores: number };
  loadAverage1m: number;
}

function runPgbench(url: string, script: string, mode: string, skus: number, clients: number, duration: number): Promise<string> {
  const args = ["-n", "-M", mode, "-c", String(clients), "-j", "2", "-T", String(duration), "-D", `skus=${skus}`, "-f", script, url];
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`pgbench exited with ${code}:\n${err}${out}`))));
  });
}

async function measureCeiling(cluster: BenchCluster, url: string, shape: CeilingShape, skus: number, clients: number): Promise<CeilingResult> {
  const { mode } = CEILINGS[shape];
  const script = here(`../pgbench/${CEILINGS[shape].script}`);
  if (warmup > 0) await runPgbench(url, script, mode, skus, clients, Math.ceil(warmup));
  const sampler = cpuSampler(cluster);
  const reaped = reapedCpuMicros(process.pid);
  sampler.start();
  const out = await runPgbench(url, script, mode, skus, clients, seconds);
  const cpu = sampler.end();
  const pgbenchCpu = reapedCpuMicros(process.pid) - reaped;
  const number = (pattern: RegExp) => Number(pattern.exec(out)?.[1] ?? NaN);
  const transactions = number(/number of transactions actually processed: (\d+)/);
  return {
    script: `bench/pgbench/${CEILINGS[shape].script}`,
    queryMode: mode,
    txPerSecond: round(number(/tps = ([\d.]+)/)),
    latencyAverageMs: round(number(/latency average = ([\d.]+) ms/), 1),
    failed: number(/number of failed transactions: (\d+)/) || 0,
    cpu: {
      postgresMicrosPerTx: per(cpu.postgres, transactions),
      pgbenchMicrosPerTx: per(pgbenchCpu, transactions),
      machineCoresBusy: cores(cpu.machine, cpu.seconds),
      postgresCores: cores(cpu.postgres, cpu.seconds),
      pgbenchCores: cores(pgbenchCpu, cpu.seconds),
    },
    loadAverage1m: machine().loadAverage1m,
  };
}

interface HoldfastResult extends Omit<Driven, "perSecond" | "seconds"> {
  strategy: string;
  holdsPerSecond: number;
  ratioToCeiling: number;
  ratioToStatements: number;
  /**
   * The ceiling's CPU per transaction (PostgreSQL + pgbench) ÷ Holdfast's CPU per hold
   * (service + load generator + PostgreSQL): the ratio to the ceiling that the same
   * cores would allow if both were CPU-bound, so what ratioToCeiling can reach on this
   * machine at this cost per hold. Null when a figure is missing.
   */
  ratioCpuAllows: number | null;
  cpu: {
    serviceMicrosPerHold: number | null;
    loadGeneratorMicrosPerHold: number | null;
    postgresMicrosPerHold: number | null;
    machineCoresBusy: number;
    serviceCores: number;
    loadGeneratorCores: number;
    postgresCores: number;
  };
  loadAverage1m: number;
  /** With --statements: what PostgreSQL ran over the window, per granted hold, costliest first. */
  statements?: StatementCost[];
  /** With --statements: rows read by sequential scans over the window, per granted hold, by table (tables with none left out). */
  sequentialRowsPerHold?: Record<string, number>;
}

interface StatementCost {
  /** The statement's text, whitespace folded, cut at 100 characters. */
  text: string;
  callsPerHold: number;
  execMicrosPerHold: number;
  /** Planning, in µs per hold (pg_stat_statements.track_planning is on). */
  planMicrosPerHold: number;
}

/**
 * --statements: pg_stat_statements over a Holdfast window, to see where PostgreSQL's
 * time per hold goes (issue 8 found re-planning this way). Loading it costs the
 * server a little on every statement, so it is off unless asked for.
 */
const STATEMENTS_SETTINGS = { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track_planning": "on" };

/** What pg_stat_statements saw since its reset, costliest first: totals. */
interface StatementTotals {
  text: string;
  calls: number;
  execMicros: number;
  planMicros: number;
}

async function statementTotals(db: pg.Client): Promise<StatementTotals[]> {
  const { rows } = await db.query<{ query: string; calls: string; exec_ms: number; plan_ms: number }>(
    `SELECT query, calls, total_exec_time AS exec_ms, total_plan_time AS plan_ms FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'
      ORDER BY total_exec_time + total_plan_time DESC LIMIT 8`,
  );
  return rows.map((r) => ({ text: r.query.replace(/\s+/g, " ").slice(0, 100), calls: Number(r.calls), execMicros: r.exec_ms * 1000, planMicros: r.plan_ms * 1000 }));
}

/**
 * Rows read by sequential scans so far, by table (pg_stat_user_tables). A hold's
 * statements find their rows through keys, so anything here that grows with the
 * table is a plan gone wrong: issue 8 found a generic plan, made while the table
 * looked empty, scanning every idempotency record for each hot-SKU batch. Backends
 * report these counts at most once a second, so a window's figure is ±1 s of load.
 */
async function sequentialRows(db: pg.Client): Promise<Map<string, number>> {
  const { rows } = await db.query<{ relname: string; seq_tup_read: string }>("SELECT relname, seq_tup_read FROM pg_stat_user_tables");
  return new Map(rows.map((r) => [r.relname, Number(r.seq_tup_read)]));
}

/** Totals divided by the granted holds. */
function perHold(totals: StatementTotals[], holds: number): StatementCost[] {
  const each = (x: number, digits = 0) => (holds === 0 ? 0 : round(x / holds, digits));
  return totals.map((t) => ({ text: t.text, callsPerHold: each(t.calls, 2), execMicrosPerHold: each(t.execMicros), planMicrosPerHold: each(t.planMicros) }));
}

/** The growth of each table's count from `start` to `end`, per hold (tables that did not grow left out). */
function perHoldByTable(start: Map<string, number>, end: Map<string, number>, holds: number): Record<string, number> {
  const grown = [...end].map(([table, n]) => [table, n - (start.get(table) ?? 0)] as const).filter(([, d]) => d > 0);
  return Object.fromEntries(grown.map(([table, d]) => [table, holds === 0 ? 0 : round(d / holds, 2)]));
}

/** One strategy through the service: the load generator in a process of its own, CPU read at its window's edges. */
async function measureHoldfast(cluster: BenchCluster, url: string, scenario: Scenario, clients: number, strategy: string, run: string): Promise<Omit<HoldfastResult, "ratioToCeiling" | "ratioToStatements" | "ratioCpuAllows">> {
  const service = await startService("@holdfast/reservation-service/main", { DATABASE_URL: url, ...serviceEnv });
  const stats = values.statements ? new pg.Client({ connectionString: url }) : undefined;
  try {
    if (stats !== undefined) {
      await stats.connect();
      await stats.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    }
    let statements: StatementTotals[] | undefined;
    let scanned: { start: Map<string, number>; end?: Map<string, number> } | undefined;
    const pid = service.child.pid!;
    const sampler = cpuSampler(cluster);
    let service0 = 0;
    let serviceCpu = 0;
    let window: CpuWindow | undefined;
    const generator = spawn(
      process.execPath,
      [here("load-generator.js"), "--target", service.grpc, "--skus", String(scenario.skus), "--concurrency", String(clients), "--strategy", strategy,
        "--seconds", String(seconds), "--warmup", String(warmup), "--run", run],
      { env: { PATH: process.env.PATH, ...BENCH_CLIENT_ENV }, stdio: ["ignore", "pipe", "inherit"] },
    );
    let result: (Driven & { cpuMicros: number }) | undefined;
    for await (const line of createInterface({ input: generator.stdout })) {
      const message = JSON.parse(line) as { window?: "start" | "end"; result?: Driven & { cpuMicros: number } };
      if (message.window === "start") {
        await stats?.query("SELECT pg_stat_statements_reset()");
        if (stats !== undefined) scanned = { start: await sequentialRows(stats) };
        sampler.start();
        service0 = processCpuMicros(pid);
      } else if (message.window === "end") {
        serviceCpu = processCpuMicros(pid) - service0;
        window = sampler.end();
            // Totals now, as the window closes; per hold once the load generator reports.
        if (stats !== undefined) {
          statements = await statementTotals(stats);
          scanned!.end = await sequentialRows(stats);
        }
      } else if (message.result !== undefined) {
        result = message.result;
      }
    }
    const code = generator.exitCode ?? (await new Promise<number | null>((resolve) => generator.once("exit", resolve)));
    if (result === undefined || window === undefined) throw new Error(`load generator exited with ${code} without a result`);
    const holds = result.outcomes.OK ?? 0;
    return {
      strategy,
      holdsPerSecond: result.perSecond,
      outcomes: result.outcomes,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      cpu: {
        serviceMicrosPerHold: per(serviceCpu, holds),
        loadGeneratorMicrosPerHold: per(result.cpuMicros, holds),
        postgresMicrosPerHold: per(window.postgres, holds),
        machineCoresBusy: cores(window.machine, window.seconds),
        serviceCores: cores(serviceCpu, window.seconds),
        loadGeneratorCores: cores(result.cpuMicros, window.seconds),
        postgresCores: cores(window.postgres, window.seconds),
      },
      loadAverage1m: machine().loadAverage1m,
      ...(statements === undefined ? {} : { statements: perHold(statements, holds) }),
      ...(scanned?.end === undefined ? {} : { sequentialRowsPerHold: perHoldByTable(scanned.start, scanned.end, holds) }),
    };
  } finally {
    await stats?.end();
    await service.stop();
  }
}

/**
 * The scenario's database, to copy for each measurement: migrated, its SKUs created
 * through the service (CreateSku, with the scenario's policy). Undefined if the
 * server does not implement the policy (the scenario is then skipped).
 */
async function scenarioTemplate(cluster: BenchCluster, scenario: Scenario): Promise<string | undefined> {
  const name = `template_${scenario.name.replaceAll("-", "_")}`;
  const url = await cluster.migrated(name);
  const service = await startService("@holdfast/reservation-service/main", { DATABASE_URL: url });
  const client = createGrpcJsClient(InventoryReservationService, service.grpc, undefined, benchCaller);
  try {
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < scenario.skus; i = next++) {
          const sku = skuCode(i);
          await client.createSku({ requestId: `bench-${sku}`, sku, name: sku, initialOnHand: ON_HAND, policy: scenario.policy });
        }
      }),
    );
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.Unimplemented) {
      console.log(`${scenario.name}: skipped, the server does not implement its policy (${e.rawMessage})`);
      await cluster.drop(name);
      return undefined;
    }
    throw err;
  } finally {
    client.close();
    await service.stop();
  }
  return name;
}

interface Row {
  scenario: string;
  title: string;
  skus: number;
  clients: number;
  ceilings: Record<CeilingShape, CeilingResult>;
  holdfast: HoldfastResult[];
}

async function measureScenario(cluster: BenchCluster, scenario: Scenario, rows: Row[]): Promise<boolean> {
  const template = await scenarioTemplate(cluster, scenario);
  if (template === undefined) return false;
  let copies = 0;
  // Each measurement on a fresh copy of the template, dropped afterwards, and after a
  // checkpoint: the copy and the measurement before it leave dirty buffers and WAL that
  // the server would otherwise write out (and count as its CPU) during this one.
  const onCopy = async <T>(work: (url: string) => Promise<T>): Promise<T> => {
    const name = `${template}_${++copies}`;
    try {
      const url = await cluster.copy(template, name);
      await cluster.checkpoint();
      return await work(url);
    } finally {
      await cluster.drop(name);
    }
  };
  for (const clients of concurrenciesOf(scenario)) {
    const ceilings = {} as Record<CeilingShape, CeilingResult>;
    for (const shape of Object.keys(CEILINGS) as CeilingShape[]) ceilings[shape] = await onCopy((url) => measureCeiling(cluster, url, shape, scenario.skus, clients));
    const holdfast: HoldfastResult[] = [];
    for (const strategy of strategiesOf(scenario)) {
      const measured = await onCopy((url) => measureHoldfast(cluster, url, scenario, clients, strategy, `${scenario.name}-${clients}-${strategy}`));
      holdfast.push({
        ...measured,
        ratioToCeiling: round(measured.holdsPerSecond / ceilings.oneStatement.txPerSecond, 2),
        ratioToStatements: round(measured.holdsPerSecond / ceilings.statements.txPerSecond, 2),
        ratioCpuAllows: cpuAllows(ceilings.oneStatement, measured.cpu),
      });
    }
    const row: Row = { scenario: scenario.name, title: scenario.title, skus: scenario.skus, clients, ceilings, holdfast };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  await cluster.drop(template);
  return true;
}

/** bench/expiry.ts with its defaults, as a child (it writes bench/results/expiry.json). */
function runExpiryBench(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--enable-source-maps", here("expiry.js")], { stdio: "inherit" });
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`bench/expiry exited with ${code}`))));
  });
}

interface ExpiryResult {
  date: string;
  steady: { rate: number; worstP99Ms: number; worstMaxMs: number; holds: number; workers: number };
}

async function readExpiry(): Promise<ExpiryResult | undefined> {
  const file = here("../results/expiry.json");
  return existsSync(file) ? (JSON.parse(await readFile(file, "utf8")) as ExpiryResult) : undefined;
}

// ---------------------------------------------------------------------------------
// The tables of docs/benchmarks.md.
// ---------------------------------------------------------------------------------

interface Results {
  date: string;
  command: string;
  /** The commit measured (`git describe --always --dirty`), if this is a git checkout. */
  commit?: string;
  machine: { nproc: number; loadAverage1m: { start: number; end: number; min: number; max: number }; node: string; pgbench: string; postgres: string };
  options: { seconds: number; warmup: number; concurrency: number[] | "per scenario"; scenarios: string[]; strategies: string[]; serviceEnv: Record<string, string>; statements: boolean };
  rows: Row[];
  skipped: string[];
  expiry?: ExpiryResult;
}

function cpuAllows(ceiling: CeilingResult, holdfast: HoldfastResult["cpu"]): number | null {
  const { postgresMicrosPerTx, pgbenchMicrosPerTx } = ceiling.cpu;
  const { serviceMicrosPerHold, loadGeneratorMicrosPerHold, postgresMicrosPerHold } = holdfast;
  if (postgresMicrosPerTx === null || pgbenchMicrosPerTx === null || serviceMicrosPerHold === null || loadGeneratorMicrosPerHold === null || postgresMicrosPerHold === null) return null;
  return round((postgresMicrosPerTx + pgbenchMicrosPerTx) / (serviceMicrosPerHold + loadGeneratorMicrosPerHold + postgresMicrosPerHold), 2);
}

function markdown(results: Results): string {
  const lines: string[] = [];
  const push = (...cells: (string | number | null)[]) => lines.push(`| ${cells.map((c) => c ?? "–").join(" | ")} |`);
  const load = results.machine.loadAverage1m;
  lines.push(
    `Produced by \`${results.command}\`${results.commit === undefined ? "" : ` at ${results.commit}`} on ${results.date.slice(0, 16).replace("T", " ")} UTC: ${results.machine.nproc} cores, ` +
      `1-minute load average ${load.min}–${load.max} during the run (${load.start} at its start, ${load.end} at its end), ` +
      `node ${results.machine.node}, ${results.machine.postgres} (embedded, \`synchronous_commit = on\`), ${results.machine.pgbench}; ` +
      `${results.options.seconds} s measured after ${results.options.warmup} s of warm-up per measurement` +
      (Object.keys(results.options.serviceEnv).length > 0 ? `; service environment ${JSON.stringify(results.options.serviceEnv)}` : "") +
      `. Raw figures: \`bench/results/holds.json\`.`,
    "",
    "**Goals** (issue 8):",
    "",
    "| goal | measured | met |",
    "|---|---|---|",
  );
  const find = (scenario: string, clients: number, strategy: string) =>
    results.rows.find((r) => r.scenario === scenario && r.clients === clients)?.holdfast.find((h) => h.strategy === strategy);
  for (const strategy of results.options.strategies) {
    const spread = find("spread", 64, strategy);
    if (spread) push(`10,000 SKUs, 64 clients, ${strategy}: ≥ 0.7 × ceiling`, `${spread.ratioToCeiling} ×`, spread.ratioToCeiling >= 0.7 ? "yes" : "no");
  }
  for (const r of results.rows.filter((r) => r.scenario === "hot")) {
    const hot = find("hot", r.clients, "PESSIMISTIC");
    if (hot) push(`1 hot SKU, ${r.clients} clients, PESSIMISTIC: ≥ 0.8 × ceiling`, `${hot.ratioToCeiling} ×`, hot.ratioToCeiling >= 0.8 ? "yes" : "no");
  }
  // The moonshot: against the best single-row ceiling of the run (one hot SKU, at any
  // client count), so that the row's collapse under many clients cannot flatter it.
  const singleRow = results.rows.filter((r) => r.skus === 1).map((r) => r.ceilings.oneStatement.txPerSecond);
  for (const r of results.rows.filter((r) => r.scenario === "hot-group-commit")) {
    const best = Math.max(...singleRow);
    const h = r.holdfast.find((h) => h.strategy === "PESSIMISTIC");
    if (h) push(`1 hot SKU in GROUP_COMMIT, ${r.clients} clients: ≥ 3 × the best single-row ceiling of the run (${best} tx/s)`, `${round(h.holdsPerSecond / best, 2)} ×`, h.holdsPerSecond >= 3 * best ? "yes" : "no");
  }
  if (results.expiry) {
    const e = results.expiry.steady;
    push(
      `expiry: stock back within 1 s p99 while ${e.rate} holds/s expire`,
      `p99 ${e.worstP99Ms} ms, max ${e.worstMaxMs} ms (${e.holds} holds, ${e.workers} workers; \`npm run bench:expiry\`, ${results.expiry.date.slice(0, 10)})`,
      e.worstP99Ms <= 1000 ? "yes" : "no",
    );
  }
  lines.push(
    "",
    "**Ceilings**: pgbench (`-n -j 2`, `-M prepared` unless said) running a hold's SQL against the same database and SKUs (`bench/pgbench/`).",
    "",
    "| scenario | clients | shape | tx/s | latency avg | PostgreSQL µs CPU/tx | pgbench µs CPU/tx | cores: PostgreSQL / machine | load avg |",
    "|---|---|---|---|---|---|---|---|---|",
  );
  for (const r of results.rows) {
    for (const [shape, c] of Object.entries(r.ceilings)) {
      push(r.title, r.clients, CEILINGS[shape as CeilingShape].title, c.txPerSecond, `${c.latencyAverageMs} ms`, c.cpu.postgresMicrosPerTx, c.cpu.pgbenchMicrosPerTx, `${c.cpu.postgresCores} / ${c.cpu.machineCoresBusy}`, c.loadAverage1m);
    }
  }
  lines.push(
    "",
    "**Holdfast**: CreateHold over gRPC from a separate load-generator process. Ratios: holds/s ÷ the one-statement ceiling, and ÷ the service's statements (prepared), of the same scenario and clients. CPU in µs per granted hold; cores: average cores busy over the window, the machine's including the other work on it. *Ratio the CPU allows*: the ceiling's CPU per transaction (PostgreSQL + pgbench) ÷ Holdfast's CPU per hold (service + load generator + PostgreSQL), what the ratio to the ceiling can reach on these cores at this cost per hold.",
    "",
    "| scenario | clients | strategy | holds/s | ratio to ceiling | ratio the CPU allows | ratio to the service's statements | p50 / p99 ms | refusals | service µs/hold | load generator µs/hold | PostgreSQL µs/hold | cores: service + load gen + PostgreSQL / machine | load avg |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const r of results.rows) {
    for (const h of r.holdfast) {
      const total = Object.values(h.outcomes).reduce((a, b) => a + b, 0);
      const refusals = Object.entries(h.outcomes)
        .filter(([k]) => k !== "OK")
        .map(([k, n]) => `${k} ${n} of ${total}`)
        .join(", ");
      const c = h.cpu;
      push(r.title, r.clients, h.strategy, h.holdsPerSecond, h.ratioToCeiling, h.ratioCpuAllows, h.ratioToStatements, `${h.p50Ms} / ${h.p99Ms}`, refusals || "none", c.serviceMicrosPerHold, c.loadGeneratorMicrosPerHold, c.postgresMicrosPerHold, `${c.serviceCores} + ${c.loadGeneratorCores} + ${c.postgresCores} / ${c.machineCoresBusy}`, h.loadAverage1m);
    }
  }
  const withStatements = results.rows.flatMap((r) => r.holdfast.filter((h) => h.statements !== undefined).map((h) => ({ r, h })));
  if (withStatements.length > 0) {
    lines.push(
      "",
      "**Statements** (`--statements`: pg_stat_statements over each Holdfast window, costliest first; per granted hold):",
      "",
      "| scenario | clients | strategy | statement | calls | execution µs (wall clock, lock waits included) | planning µs |",
      "|---|---|---|---|---|---|---|",
    );
    for (const { r, h } of withStatements) {
      for (const st of h.statements!) push(r.title, r.clients, h.strategy, `\`${st.text.replaceAll("|", "\\|")}\``, st.callsPerHold, st.execMicrosPerHold, st.planMicrosPerHold);
    }
    lines.push("", "Rows read by sequential scans, per granted hold, by table (pg_stat_user_tables; a table that grows with the sale should read none):", "");
    for (const { r, h } of withStatements) {
      const tables = Object.entries(h.sequentialRowsPerHold ?? {}).map(([table, n]) => `${table} ${n}`);
      lines.push(`- ${r.title}, ${r.clients} clients, ${h.strategy}: ${tables.length === 0 ? "none" : tables.join(", ")}`);
    }
  }
  if (results.skipped.length > 0) lines.push("", `Skipped (the server does not implement their policy yet): ${results.skipped.join(", ")}.`);
  return lines.join("\n");
}

const DOCS = here("../../docs/benchmarks.md");
const START = "<!-- bench:holds:start (written by npm run bench) -->";
const END = "<!-- bench:holds:end -->";

/** Replaces the generated part of docs/benchmarks.md (between the markers). */
async function writeDocs(table: string): Promise<void> {
  const text = await readFile(DOCS, "utf8");
  const from = text.indexOf(START);
  const to = text.indexOf(END);
  if (from < 0 || to < from) throw new Error(`docs/benchmarks.md has no ${START} … ${END} section`);
  await writeFile(DOCS, `${text.slice(0, from + START.length)}\n${table}\n${text.slice(to)}`);
}

/** The checkout's commit (`-dirty` with local changes), or undefined outside a git checkout. */
function gitDescribe(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn("git", ["describe", "--always", "--dirty"], { cwd: here("../.."), stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.once("error", () => resolve(undefined));
    child.once("exit", (code) => resolve(code === 0 && out.trim() !== "" ? out.trim() : undefined));
  });
}

function pgbenchVersion(): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(PGBENCH, ["--version"], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", () => resolve(out.trim()));
  });
}

async function postgresVersion(cluster: BenchCluster): Promise<string> {
  const client = new pg.Client({ connectionString: cluster.url("postgres") });
  await client.connect();
  try {
    const { rows } = await client.query<{ server_version: string }>("SHOW server_version");
    return `PostgreSQL ${rows[0]!.server_version}`;
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  if (!existsSync(PGBENCH)) throw new Error(`${PGBENCH} not found (Debian: apt-get install postgresql-client)`);
  const loads = [machine().loadAverage1m];
  const sampleLoad = setInterval(() => loads.push(machine().loadAverage1m), 5000);
  const rows: Row[] = [];
  const skipped: string[] = [];
  const cluster = await startBenchCluster(values.statements ? STATEMENTS_SETTINGS : undefined);
  const postgres = await postgresVersion(cluster);
  try {
    for (const name of scenarioNames) {
      if (name === "expiry") continue;
      if (!(await measureScenario(cluster, SCENARIOS.find((s) => s.name === name)!, rows))) skipped.push(name);
    }
  } finally {
    await cluster.stop();
  }
  if (scenarioNames.includes("expiry")) await runExpiryBench();
  clearInterval(sampleLoad);
  loads.push(machine().loadAverage1m);
  const results: Results = {
    date: new Date().toISOString(),
    command: COMMAND,
    commit: await gitDescribe(),
    machine: { nproc: machine().nproc, loadAverage1m: { start: loads[0]!, end: loads.at(-1)!, min: Math.min(...loads), max: Math.max(...loads) }, node: process.version, pgbench: await pgbenchVersion(), postgres },
    options: { seconds, warmup, concurrency: concurrencyOption ?? "per scenario", scenarios: scenarioNames, strategies, serviceEnv, statements: values.statements },
    rows,
    skipped,
    expiry: await readExpiry(),
  };
  await mkdir(here("../results/"), { recursive: true });
  await writeFile(here("../results/holds.json"), `${JSON.stringify(results, null, 2)}\n`);
  const table = markdown(results);
  console.log(`\n${table}\n\nwritten bench/results/holds.json`);
  if (!values["no-docs"]) {
    await writeDocs(table);
    console.log("written docs/benchmarks.md (its generated tables)");
  }
}

await main();
