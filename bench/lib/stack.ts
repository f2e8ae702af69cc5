// What every bench starts: an embedded PostgreSQL of its own (durable commits, a
// temporary data directory), migrated databases on it, and the services as child
// processes on loopback.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { EPHEMERAL_LOOPBACK_PORTS, ensureDatabase, freePort, startEmbeddedPostgres } from "@holdfast/dev-stack";
import { createKnex, migrateLatest } from "@holdfast/schema";
import { SERVICE_NODE_OPTIONS } from "@holdfast/runtime";
import { BENCH_AUTH_ENV } from "../auth.js";

export interface BenchCluster {
  /** Connection URL of `database` on this cluster. */
  url(database: string): string;
  /** The postmaster's pid (its children are the server's other processes). */
  pid: number;
  /** Creates `database` (unless it exists) and migrates it to the latest schema. */
  migrated(database: string): Promise<string>;
  /** A fresh copy of `template` (which nobody may be connected to) named `database`. */
  copy(template: string, database: string): Promise<string>;
  drop(database: string): Promise<void>;
  /** Writes every dirty buffer out now, so that the next measurement does not pay for the last one's. */
  checkpoint(): Promise<void>;
  stop(): Promise<void>;
}

/** An embedded PostgreSQL in a temporary directory, removed by stop(); `settings` are server settings (`-c`). */
export async function startBenchCluster(settings?: Record<string, string>): Promise<BenchCluster> {
  const root = await mkdtemp(path.join(tmpdir(), "holdfast-bench-"));
  const dataDir = path.join(root, "data");
  const cluster = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false, settings });
  // postmaster.pid: its first line is the server's pid.
  const pid = Number((await readFile(path.join(dataDir, "postmaster.pid"), "utf8")).split("\n")[0]);
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: cluster.url("postgres") });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  return {
    url: (database) => cluster.url(database),
    pid,
    async migrated(database) {
      await ensureDatabase(cluster.url("postgres"), database);
      const knex = createKnex({ url: cluster.url(database), poolMax: 2 });
      try {
        await migrateLatest(knex);
      } finally {
        await knex.destroy();
      }
      return cluster.url(database);
    },
    async copy(template, database) {
      await admin(`CREATE DATABASE ${pg.escapeIdentifier(database)} TEMPLATE ${pg.escapeIdentifier(template)}`);
      return cluster.url(database);
    },
    drop: (database) => admin(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(database)} WITH (FORCE)`),
    checkpoint: () => admin("CHECKPOINT"),
    async stop() {
      await cluster.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export interface ServiceProcess {
  child: ChildProcess;
  /** host:port of its gRPC listener, from its "ready" log line. */
  grpc: string;
  /** http://host:port of its health / metrics port, from the same line. */
  http: string;
  /** Its log lines so far, by level name. */
  logLevels: Record<string, number>;
  /** Its first warn / error / fatal lines (at most 100). */
  warnings: string[];
  /** SIGTERM, and wait for it to exit. */
  stop(): Promise<void>;
}

const LEVELS: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };


/**
 * Starts a service (`@holdfast/reservation-service/main`, `@holdfast/expiry-worker/main`)
 * with the bench's auth, on loopback, and resolves once it logs "ready".
 */
export function startService(entry: string, env: Record<string, string>): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...SERVICE_NODE_OPTIONS, fileURLToPath(import.meta.resolve(entry))], {
    env: { PATH: process.env.PATH, LOG_LEVEL: "info", ...BENCH_AUTH_ENV, ...EPHEMERAL_LOOPBACK_PORTS, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  const logLevels: Record<string, number> = {};
  const warnings: string[] = [];
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${entry} exited with ${code}`)));
    // Its "ready" line carries the addresses; every line is counted by level.
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const record = JSON.parse(line) as { level: number; msg?: string; grpc?: string; http?: string };
      const level = LEVELS[record.level] ?? String(record.level);
      logLevels[level] = (logLevels[level] ?? 0) + 1;
      if (record.level >= 40 && warnings.length < 100) warnings.push(line);
      if (record.msg === "ready") resolve({ child, grpc: record.grpc!, http: record.http!, logLevels, warnings, stop });
    });
  });
}
