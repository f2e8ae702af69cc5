import { execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createTestDatabase, type TestDatabase } from "./support/database.js";

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

describe("npm start (dev-stack launcher) with DATABASE_URL", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("dev_stack", { migrate: false });
  });
  after(async () => {
    await db?.drop();
  });

  it("migrates, starts both services, prints where they listen, and stops everything on Ctrl-C", async function () {
    this.timeout(60_000);
    const launcher = spawn(process.execPath, [fileURLToPath(import.meta.resolve("@holdfast/dev-stack/start"))], {
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: db.url,
        GRPC_HOST: "127.0.0.1",
        GRPC_PORT: "0",
        HTTP_HOST: "127.0.0.1",
        HTTP_PORT: "0",
        WORKER_GRPC_HOST: "127.0.0.1",
        WORKER_GRPC_PORT: "0",
        WORKER_HTTP_HOST: "127.0.0.1",
        WORKER_HTTP_PORT: "0",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    launcher.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    launcher.stderr!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => launcher.once("exit", (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no banner within 40 s:\n${stdout}`)), 40_000);
        const check = () => {
          if (stdout.includes("Press Ctrl-C to stop.")) {
            clearTimeout(timer);
            resolve();
          }
        };
        launcher.stdout!.on("data", check);
        void exited.then(() => reject(new Error(`launcher exited early:\n${stdout}`)));
      });
      expect(stdout).to.include("migrations applied");
      const grpcAddresses = [...stdout.matchAll(/gRPC\s+(127\.0\.0\.1:\d+)/g)].map((m) => m[1]);
      expect(grpcAddresses).to.have.length(2);
      for (const address of grpcAddresses) {
        const health = createGrpcJsClient(Health, address);
        try {
          expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
        } finally {
          health.close();
        }
      }
      const children = childPids(launcher.pid!);
      expect(children).to.have.length(2);

      launcher.kill("SIGINT");
      expect(await exited).to.equal(0);
      expect(stdout).to.include("everything stopped");
      for (const pid of children) expect(isAlive(pid), `service process ${pid} left behind`).to.equal(false);
    } finally {
      if (launcher.exitCode === null) launcher.kill("SIGKILL");
    }
  });
});
