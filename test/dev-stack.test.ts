import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Code, type ConnectError } from "@connectrpc/connect";
import { ExpiryWorkerService, InventoryReservationService } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createTestDatabase, type TestDatabase } from "./support/database.js";
import { EPHEMERAL_LOOPBACK_PORTS } from "./support/processes.js";

function childPids(pid: number): number[] {
  try {
    return execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" })
      .split("\n")
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface Launcher {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `npm start`'s launcher against DATABASE_URL, resolved once its banner is printed. */
async function launch(databaseUrl: string): Promise<Launcher> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.resolve("@holdfast/dev-stack/start"))], {
    // Its own data folder: the development signing secret is created there.
    env: { PATH: process.env.PATH, DATABASE_URL: databaseUrl, HOLDFAST_DATA_DIR: mkdtempSync(path.join(tmpdir(), "holdfast-dev-stack-")), ...EPHEMERAL_LOOPBACK_PORTS },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let done = false;
  void exited.then(() => (done = true));
  await waitUntil(() => done || output.includes("Press Ctrl-C to stop."), 40_000, "the start-up banner");
  if (done) throw new Error(`launcher exited early:\n${output}`);
  return { child, output: () => output, exited };
}

describe("npm start (dev-stack launcher) with DATABASE_URL", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("dev_stack", { migrate: false });
  });
  after(async () => {
    await db?.drop();
  });

  it("migrates, starts both services, prints where they listen, and stops everything on Ctrl-C", async () => {
    const launcher = await launch(db.url);
    try {
      expect(launcher.output()).to.include("migrations applied");
      const grpcAddresses = [...launcher.output().matchAll(/gRPC\s+(127\.0\.0\.1:\d+)/g)].map((m) => m[1]);
      expect(grpcAddresses).to.have.length(2);
      for (const address of grpcAddresses) {
        const health = createGrpcJsClient(Health, address);
        try {
          expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
        } finally {
          health.close();
        }
      }
      // The banner's tokens work as printed, with their roles: admin reads the worker's
      // status, a customer may not create SKUs.
      const tokens = Object.fromEntries([...launcher.output().matchAll(/^\s+(admin|service|customer)\s+(ey[\w.-]+)$/gm)].map((m) => [m[1], m[2]]));
      expect(Object.keys(tokens).sort()).to.deep.equal(["admin", "customer", "service"]);
      const worker = createGrpcJsClient(ExpiryWorkerService, grpcAddresses[1]);
      const inventory = createGrpcJsClient(InventoryReservationService, grpcAddresses[0]);
      try {
        expect((await worker.getWorkerStatus({}, { headers: { authorization: `Bearer ${tokens.admin}` } })).status?.workerId).to.be.a("string");
        const refused = await inventory.createSku({ requestId: "r1", sku: "DEV-1", name: "x" }, { headers: { authorization: `Bearer ${tokens.customer}` } }).catch((e: unknown) => e);
        expect((refused as ConnectError).code).to.equal(Code.PermissionDenied);
      } finally {
        worker.close();
        inventory.close();
      }
      const services = childPids(launcher.child.pid!);
      expect(services).to.have.length(2);

      launcher.child.kill("SIGINT");
      expect(await launcher.exited).to.equal(0);
      expect(launcher.output()).to.include("everything stopped");
      expect((launcher.output().match(/stopped cleanly/g) ?? []).length, "both services drained").to.equal(2);
      for (const pid of services) expect(isAlive(pid), `service process ${pid} left behind`).to.equal(false);
    } finally {
      if (launcher.child.exitCode === null) launcher.child.kill("SIGKILL");
    }
  });

  it("leaves no service behind when the launcher itself is killed", async () => {
    const launcher = await launch(db.url);
    const services = childPids(launcher.child.pid!);
    expect(services).to.have.length(2);
    launcher.child.kill("SIGKILL");
    await launcher.exited;
    // They drain first (SHUTDOWN_GRACE_MS, 10 s at most, then the pools close): 15 s
    // proved too tight once on a loaded machine (cause not found), so twice the grace
    // plus margin; a service that never noticed its launcher died still fails this.
    await waitUntil(() => services.every((pid) => !isAlive(pid)), 30_000, "the orphaned services to stop");
  });
});
