import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { EPHEMERAL_LOOPBACK_PORTS } from "@holdfast/dev-stack";
import { SERVICE_NODE_OPTIONS } from "@holdfast/runtime";
import { TEST_AUTH_ENV } from "./auth.js";

export type ServiceName = "reservation-service" | "expiry-worker";

const ENTRY: Record<ServiceName, string> = {
  "reservation-service": "@holdfast/reservation-service/main",
  "expiry-worker": "@holdfast/expiry-worker/main",
};

export interface ServiceProcess {
  child: ChildProcess;
  /** host:port of the gRPC port. */
  grpcAddress: string;
  /** http://host:port of the HTTP port. */
  httpUrl: string;
  /** Every stdout line so far (JSON log lines). */
  output: string[];
  /** SIGTERM, then wait for exit (SIGKILL after `timeoutMs`); resolves to the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

export interface ExitedProcess {
  code: number | null;
  stdout: string;
  stderr: string;
}

function nodeArgs(service: ServiceName): string[] {
  return [...SERVICE_NODE_OPTIONS, fileURLToPath(import.meta.resolve(ENTRY[service]))];
}

/** Every listener of both services on loopback, on a port the OS picks. */
export { EPHEMERAL_LOOPBACK_PORTS };

/** Environment for a service on ephemeral loopback ports. */
function serviceEnv(databaseUrl: string, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    NODE_ENV: "test",
    DATABASE_URL: databaseUrl,
    LOG_LEVEL: "info",
    SHUTDOWN_GRACE_MS: "5000",
    // Bursts of hundreds of calls at once are how the concurrency tests make races; a
    // loaded CI machine serves them slowly, and the default admission wait (500 ms)
    // would shed some, which is not what those tests are about. Calls wait for a slot
    // instead; the overload tests (test/faults/overload.test.ts) set their own limits.
    MAX_CALLS_WAITING: "100000",
    MAX_CALL_WAIT_MS: "60000",
    ...TEST_AUTH_ENV,
    ...EPHEMERAL_LOOPBACK_PORTS,
    ...extra,
  };
}

/** Starts a service as its own process and resolves once it logs "ready". */
export function startService(service: ServiceName, databaseUrl: string, extraEnv: NodeJS.ProcessEnv = {}, timeoutMs = 20_000): Promise<ServiceProcess> {
  const child = spawn(process.execPath, nodeArgs(service), { env: serviceEnv(databaseUrl, extraEnv), stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${service} did not become ready in ${timeoutMs} ms\n${output.join("\n")}\n${stderr}`));
    }, timeoutMs);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${service} exited with ${code} before it was ready\n${output.join("\n")}\n${stderr}`));
    });
    createInterface({ input: child.stdout! }).on("line", (line) => {
      output.push(line);
      let entry: { msg?: string; grpc?: string; http?: string } = {};
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg !== "ready") return;
      clearTimeout(timer);
      resolve({
        child,
        grpcAddress: entry.grpc!,
        httpUrl: entry.http!,
        output,
        async stop(stopTimeoutMs = 15_000) {
          if (child.exitCode !== null) return child.exitCode;
          child.kill("SIGTERM");
          const killer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
          const code = await exited;
          clearTimeout(killer);
          return code;
        },
      });
    });
  });
}

/** Runs a service process expected to exit by itself (e.g. on bad configuration). */
export function runServiceToExit(service: ServiceName, env: NodeJS.ProcessEnv, timeoutMs = 15_000): Promise<ExitedProcess> {
  const child = spawn(process.execPath, nodeArgs(service), { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${service} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
