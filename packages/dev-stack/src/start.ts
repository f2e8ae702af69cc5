#!/usr/bin/env node
// `npm start`: the whole stack in one command. Database (embedded unless
// DATABASE_URL is set), migrations, then both services as child processes.
// Ctrl-C stops the services first (they drain), then the database.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { prettyFactory } from "pino-pretty";
import { ConfigError, SERVICE_NODE_OPTIONS, createLogger } from "@holdfast/runtime";
import { createKnex, migrateLatest } from "@holdfast/schema";
import { ROLE_NAMES } from "@holdfast/core";
import { mintCallerTokens, type CallerTokens } from "./callers.js";
import { resolveDatabase } from "./database.js";
import { localAuthSettings, localSigningSecret, withLocalSecretFile } from "./tokens.js";

const logger = createLogger("dev-stack", "info");
const pretty = process.stdout.isTTY ? prettyFactory({ colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname" }) : undefined;

interface ServiceProcess {
  name: string;
  child: ChildProcess;
  ready: Promise<Record<string, unknown>>;
}

const SERVICES = [
  { name: "reservation-service", entry: "@holdfast/reservation-service/main" },
  { name: "expiry-worker", entry: "@holdfast/expiry-worker/main" },
];

function launch(name: string, entry: string, env: NodeJS.ProcessEnv): ServiceProcess {
  // Each service runs in its own process group, so that Ctrl-C reaches only
  // this launcher, which then stops them one SIGTERM each and waits for their
  // drain. The IPC channel makes a service stop by itself if the launcher dies.
  const child = spawn(process.execPath, [...SERVICE_NODE_OPTIONS, fileURLToPath(import.meta.resolve(entry))], {
    env,
    detached: true,
    stdio: ["ignore", "pipe", "inherit", "ipc"],
  });
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    // Each service logs one "ready" line with its addresses once it listens.
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let entryLog: Record<string, unknown> | undefined;
      try {
        entryLog = JSON.parse(line) as Record<string, unknown>;
      } catch {
        entryLog = undefined;
      }
      if (entryLog?.msg === "ready") resolve(entryLog);
      process.stdout.write(pretty && entryLog ? pretty(entryLog) : `${line}\n`);
    });
    child.once("exit", (code, signal) => reject(new Error(`${name} exited during start-up (code ${code}, signal ${signal})`)));
  });
  return { name, child, ready };
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      logger.warn({ pid: child.pid }, "child did not stop in time: killing it");
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function banner(database: string, reservation: Record<string, unknown>, worker: Record<string, unknown>, tokens: CallerTokens | undefined): string {
  const tokenLines =
    tokens === undefined
      ? ["Tokens: the services verify with a public key; use tokens from your identity provider."]
      : [
          `Bearer tokens (valid ${TOKEN_TTL_HOURS} h; more with: npm run -s token -- --role customer --sub alice):`,
          ...ROLE_NAMES.map((role) => `  ${role.padEnd(9)} ${tokens[role]}`),
          `  e.g. grpcurl -plaintext -H "authorization: Bearer <service token>" -d '{"skus":["SKU-1"]}' \\`,
          `         ${reservation.grpc} holdfast.inventory.v1.InventoryReservationService/GetAvailability`,
          `  dashboard (admin):  ${reservation.http}/dashboard/#token=${tokens.admin}`,
        ];
  return [
    "",
    "Holdfast is running",
    `  reservation-service  gRPC           ${reservation.grpc}   (grpcurl -plaintext ${reservation.grpc} list)`,
    `                       Connect/Web    ${reservation.http}   (/dashboard/, /healthz, /metrics)`,
    `  expiry-worker        gRPC           ${worker.grpc}`,
    `                       metrics        ${worker.http}/metrics`,
    `  database             ${database}`,
    ...tokenLines,
    "Press Ctrl-C to stop.",
    "",
  ].join("\n");
}

const TOKEN_TTL_HOURS = 12;

/** One token per role for the banner, signed with the key the services will verify with. */
async function bannerTokens(env: NodeJS.ProcessEnv): Promise<CallerTokens | undefined> {
  const settings = localAuthSettings(env);
  const secret = localSigningSecret(settings);
  if (secret === undefined) return undefined;
  return mintCallerTokens(secret, { issuer: settings.issuer, audience: settings.audience, ttlSeconds: TOKEN_TTL_HOURS * 3600 });
}

async function main(): Promise<void> {
  // What a Ctrl-C does depends on how far start-up got; it is never ignored.
  let stopping = false;
  let stop: (exitCode: number) => Promise<void> = async (exitCode) => process.exit(exitCode);
  const requestStop = (exitCode: number) => {
    if (stopping) return;
    stopping = true;
    void stop(exitCode).then(() => {
      logger.info("everything stopped");
      process.exit(exitCode);
    });
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => requestStop(0));

  const database = await resolveDatabase(logger);
  stop = () => database.stop();
  if (stopping) return;
  const knex = createKnex({ url: database.url, poolMax: 1, applicationName: "holdfast-migrate" });
  try {
    const { migrations } = await migrateLatest(knex);
    logger.info({ migrations }, migrations.length > 0 ? "migrations applied" : "schema is up to date");
  } finally {
    await knex.destroy();
  }
  if (stopping) return;

  // Local development listens on loopback unless told otherwise.
  const env = withLocalSecretFile({
    GRPC_HOST: "127.0.0.1",
    HTTP_HOST: "127.0.0.1",
    WORKER_GRPC_HOST: "127.0.0.1",
    WORKER_HTTP_HOST: "127.0.0.1",
    ...process.env,
    DATABASE_URL: database.url,
  });
  const services = SERVICES.map((s) => launch(s.name, s.entry, env));
  // Services first (each drains on its SIGTERM), the database last.
  stop = async () => {
    for (const s of services) s.child.kill("SIGTERM");
    await Promise.all(services.map((s) => waitForExit(s.child, 20_000)));
    await database.stop();
  };
  for (const s of services) {
    s.child.once("exit", (code, signal) => {
      if (stopping) return;
      logger.error({ service: s.name, code, signal }, "a service exited unexpectedly: stopping the stack");
      requestStop(1);
    });
  }
  try {
    const [reservation, worker] = await Promise.all(services.map((s) => s.ready));
    process.stdout.write(banner(database.description, reservation, worker, await bannerTokens(env)));
  } catch (err) {
    // A service that dies during start-up has already asked for the stop; a
    // Ctrl-C during start-up too. Either way the stop path reports and exits.
    if (!stopping) throw err;
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
  else logger.fatal({ err }, "could not start the stack");
  process.exit(1);
});
