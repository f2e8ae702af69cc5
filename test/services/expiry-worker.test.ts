import { expect } from "chai";
import { ExpiryWorkerService } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { listServices } from "../support/reflection.js";
import { testCaller } from "../support/auth.js";

const SERVICE = "holdfast.worker.v1.ExpiryWorkerService";

describe("expiry-worker: process, health, reflection, metrics", () => {
  let db: TestDatabase;
  let worker: ServiceProcess;

  before(async () => {
    db = await createTestDatabase("expiry_worker");
    worker = await startService("expiry-worker", db.url, { WORKER_ID: "test-worker-1" });
  });
  after(async () => {
    await worker?.stop();
    await db?.drop();
  });

  it("reports SERVING on grpc.health.v1", async () => {
    const health = createGrpcJsClient(Health, worker.grpcAddress);
    try {
      expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
      expect((await health.check({ service: SERVICE })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
    }
  });

  it("lists its own API through reflection", async () => {
    expect(await listServices(worker.grpcAddress)).to.include(SERVICE).and.not.include("holdfast.inventory.v1.InventoryReservationService");
  });

  it("answers GetWorkerStatus with its own id", async () => {
    const client = createGrpcJsClient(ExpiryWorkerService, worker.grpcAddress, undefined, testCaller);
    try {
      expect((await client.getWorkerStatus({})).status?.workerId).to.equal("test-worker-1");
    } finally {
      client.close();
    }
  });

  it("serves /healthz and Prometheus /metrics", async () => {
    expect((await fetch(`${worker.httpUrl}/healthz`)).status).to.equal(200);
    const metrics = await fetch(`${worker.httpUrl}/metrics`);
    expect(await metrics.text()).to.include('service="expiry-worker"');
  });

  it("drains and exits 0 on SIGTERM", async () => {
    const second = await startService("expiry-worker", db.url, { WORKER_ID: "test-worker-2" });
    expect(await second.stop()).to.equal(0);
  });
});
