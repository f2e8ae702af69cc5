// Graceful shutdown, as a service's stop() does it: unary calls in flight
// finish, server streams (ours and health watches) end with UNAVAILABLE /
// SHUTTING_DOWN so clients reconnect elsewhere, and the drain ends when the
// work does, not at the grace deadline.
import { expect } from "chai";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { rpcFailureOf } from "../support/assertions.js";
import { startInProcess, type InProcessServers } from "../support/in-process.js";

const GRACE_MS = 20_000;

describe("runtime: graceful shutdown drains in-flight work", () => {
  let servers: InProcessServers;
  let entered: () => void;
  let release: () => void;
  const bothEntered = new Promise<void>((resolve) => {
    let count = 0;
    entered = () => ++count === 2 && resolve();
  });
  const released = new Promise<void>((resolve) => (release = resolve));

  before(async () => {
    servers = await startInProcess({
      // A unary call that is busy when the stop begins, and ends when the test says.
      async getSku(request) {
        entered();
        await released;
        return { sku: { code: request.sku, name: "drained" } };
      },
      // A stream that would run forever.
      async *watchAvailability(_request, context) {
        yield { event: { case: "heartbeat", value: {} } };
        await new Promise((resolve) => context.signal.addEventListener("abort", resolve, { once: true }));
      },
    });
  });
  after(async () => {
    await servers?.stop(1000);
  });

  it("finishes unary calls, ends every stream with SHUTTING_DOWN, and stops long before the grace period", async () => {
    const grpcClient = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
    const health = createGrpcJsClient(Health, servers.grpcAddress);
    const connectClient = createClient(InventoryReservationService, createConnectTransport({ baseUrl: servers.httpUrl, httpVersion: "1.1" }));
    try {
      const unaryGrpc = grpcClient.getSku({ sku: "A" });
      const unaryConnect = connectClient.getSku({ sku: "B" });
      await bothEntered;

      const stream = grpcClient.watchAvailability({})[Symbol.asyncIterator]();
      expect((await stream.next()).value?.event.case).to.equal("heartbeat");
      const healthWatch = health.watch({ service: "" })[Symbol.asyncIterator]();
      expect((await healthWatch.next()).value?.status).to.equal(ServingStatus.SERVING);

      const startedAt = Date.now();
      const stopped = servers.stop(GRACE_MS);

      // The stream ends at once with the reason clients reconnect on.
      const streamEnd = await rpcFailureOf(stream.next());
      expect(streamEnd).to.include({ code: Code.Unavailable, reason: "SHUTTING_DOWN" });
      // Health watchers learn NOT_SERVING, then their stream ends too.
      expect((await healthWatch.next()).value?.status).to.equal(ServingStatus.NOT_SERVING);
      expect((await rpcFailureOf(healthWatch.next())).code).to.equal(Code.Unavailable);

      // The unary calls in flight were not cut: they finish with their answers.
      release();
      expect((await unaryGrpc).sku?.name).to.equal("drained");
      expect((await unaryConnect).sku?.name).to.equal("drained");

      await stopped;
      expect(Date.now() - startedAt, "drain time").to.be.lessThan(GRACE_MS / 4);

      // Nothing new is accepted afterwards.
      const late = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
      try {
        expect((await rpcFailureOf(late.getSku({ sku: "C" }, { timeoutMs: 2000 }))).code).to.be.oneOf([Code.Unavailable, Code.DeadlineExceeded]);
      } finally {
        late.close();
      }
      const streamLog = servers.logs.find((l) => l.method === "InventoryReservationService/WatchAvailability");
      expect(streamLog).to.include({ status: "UNAVAILABLE", reason: "SHUTTING_DOWN" });
    } finally {
      grpcClient.close();
      health.close();
    }
  });
});
