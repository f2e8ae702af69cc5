// What a benchmark runs against: an embedded PostgreSQL of its own (durable commits),
// migrated, and service processes on loopback ports the OS picks, their log lines
// counted by level (warnings kept), stopped with SIGTERM.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { ensureDatabase, freePort, startEmbeddedPostgres } from "@holdfast/dev-stack";
import { createKnex, migrateLatest } from "@holdfast/schema";

/** A throw-away cluster with database `name`, migrated; `stop()` removes it. */
export async function startBenchDatabase(name: string): Promise<{ url: string; stop(): Promise<void> }> {
  const root = await mkdtemp(path.join(tmpdir(), `holdfast-${name}-`));
  const cluster = await startEmbeddedPostgres({ dataDir: path.join(root, "data"), port: await freePort(), persistent: false });
  const stop = async () => {
    await cluster.stop();
    await rm(root, { recursive: true, force: true });
  };
  try {
    await ensureDatabase(cluster.url("postgres"), name);
    const knex = createKnex({ url: cluster.url(name), poolMax: 1 });
    await migrateLatest(knex).finally(() => knex.destroy());
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: cluster.url(name), stop };
}

export interface BenchProcess {
  child: ChildProcess;
  /** host:port of the gRPC port. */
  grpc: string;
  /** http://host:port of the health / metrics port. */
  http: string;
  /** Log lines by level name. */
  logLevels: Record<string, number>;
  /** The first warn / error / fatal lines. */
  warnings: string[];
}

const LEVELS: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
const LOOPBACK = { GRPC_HOST: "127.0.0.1", GRPC_PORT: "0", HTTP_HOST: "127.0.0.1", HTTP_PORT: "0", WORKER_GRPC_HOST: "127.0.0.1", WORKER_GRPC_PORT: "0", WORKER_HTTP_HOST: "127.0.0.1", WORKER_HTTP_PORT: "0" };

/** Starts `entry` (e.g. "@holdfast/reservation-service/main") and resolves once it logs "ready". */
export function startServiceProcess(entry: string, env: NodeJS.ProcessEnv): Promise<BenchProcess> {
  const child = spawn(process.execPath, ["--enable-source-maps", fileURLToPath(import.meta.resolve(entry))], {
    env: { PATH: process.env.PATH, LOG_LEVEL: "info", ...LOOPBACK, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const logLevels: Record<string, number> = {};
  const warnings: string[] = [];
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${entry} exited with ${code}`)));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const record = JSON.parse(line) as { level: number; msg?: string; grpc?: string; http?: string };
      const level = LEVELS[record.level] ?? String(record.level);
      logLevels[level] = (logLevels[level] ?? 0) + 1;
      if (record.level >= 40 && warnings.length < 100) warnings.push(line);
      if (record.msg === "ready") resolve({ child, grpc: record.grpc!, http: record.http!, logLevels, warnings });
    });
  });
}

/** SIGTERM to each, and waits until all have exited. */
export async function stopProcesses(processes: BenchProcess[]): Promise<void> {
  for (const { child } of processes) child.kill("SIGTERM");
  await Promise.all(processes.map(({ child }) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once("exit", resolve)))));
}
