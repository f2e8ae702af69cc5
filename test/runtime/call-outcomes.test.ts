// How calls that do not simply succeed or fail are answered and recorded:
// undecodable requests, callers whose deadline passes, clients that go away.
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { connectErrorFromGrpc, createGrpcJsClient } from "@holdfast/runtime";
import { rpcFailureOf } from "../support/assertions.js";
import { startInProcess, type InProcessServers } from "../support/in-process.js";

async function waitFor<T>(find: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("runtime: call outcomes beyond success and failure", () => {
  let servers: InProcessServers;
  let streamsOpen = 0;

  before(async () => {
    servers = await startInProcess({
      getSku: (request) => ({ sku: { code: request.sku, name: "ok" } }),
      // Honours its context: gives up when the caller's deadline passes.
      async getAvailability(_request, context) {
        await new Promise((_resolve, reject) => context.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
        return {};
      },
      async *watchAvailability(_request, context) {
        streamsOpen++;
        try {
          yield { event: { case: "heartbeat", value: {} } };
          await new Promise((resolve) => context.signal.addEventListener("abort", resolve, { once: true }));
        } finally {
          streamsOpen--;
        }
      },
    });
  });
  after(async () => {
    await servers?.stop(1000);
  });

  it("answers INVALID_ARGUMENT, not INTERNAL, to bytes that are not a protobuf message (gRPC port)", async () => {
    const Client = grpc.makeGenericClientConstructor(
      {
        getSku: {
          path: "/holdfast.inventory.v1.InventoryReservationService/GetSku",
          requestStream: false,
          responseStream: false,
          requestSerialize: (value: Buffer) => value,
          requestDeserialize: (value: Buffer) => value,
          responseSerialize: (value: Buffer) => value,
          responseDeserialize: (value: Buffer) => value,
        },
      },
      "Raw",
    );
    const raw = new Client(servers.grpcAddress, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      getSku(request: Buffer, callback: (err: grpc.ServiceError | null) => void): void;
    };
    try {
      // Field 1 (sku, a string) announced as 100 bytes long, with 2 present.
      const err = await new Promise<grpc.ServiceError | null>((resolve) => raw.getSku(Buffer.from([0x0a, 0x64, 0x41, 0x42]), resolve));
      expect(err, "the call must fail").to.not.equal(null);
      const failure = connectErrorFromGrpc(err!);
      expect(failure.code).to.equal(Code.InvalidArgument);
    } finally {
      raw.close();
    }
  });

  for (const transport of ["grpc-js", "connect"] as const) {
    it(`ends a call whose deadline passes with DEADLINE_EXCEEDED, logged as such (${transport})`, async () => {
      const requestId = `deadline-${transport}`;
      const options = { headers: { "x-request-id": requestId }, timeoutMs: 300 };
      const grpcJs = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
      const connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: servers.httpUrl, httpVersion: "1.1" }));
      try {
        const failure = await rpcFailureOf(transport === "grpc-js" ? grpcJs.getAvailability({}, options) : connect.getAvailability({}, options));
        expect(failure.code).to.equal(Code.DeadlineExceeded);
        const line = await waitFor(() => servers.logs.find((l) => l.requestId === requestId), "the log line");
        expect(line).to.include({ status: "DEADLINE_EXCEEDED" });
        expect(line.level, "not logged as a server fault").to.be.below(50);
      } finally {
        grpcJs.close();
      }
    });

    it(`records a stream the client abandons as CANCELLED and lets its implementation end (${transport})`, async () => {
      const requestId = `abandoned-${transport}`;
      const abort = new AbortController();
      const options = { headers: { "x-request-id": requestId }, signal: abort.signal };
      const grpcJs = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
      const connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: servers.httpUrl, httpVersion: "1.1" }));
      try {
        const stream = (transport === "grpc-js" ? grpcJs.watchAvailability({}, options) : connect.watchAvailability({}, options))[Symbol.asyncIterator]();
        await stream.next();
        expect(streamsOpen).to.equal(1);
        abort.abort();
        await stream.next().catch(() => undefined);
        const line = await waitFor(() => servers.logs.find((l) => l.requestId === requestId), "the stream's log line");
        expect(line).to.include({ status: "CANCELLED", method: "InventoryReservationService/WatchAvailability" });
        await waitFor(() => (streamsOpen === 0 ? true : undefined), "the implementation to end");
      } finally {
        grpcJs.close();
      }
    });
  }
});
