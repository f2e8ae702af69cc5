// Open Watch streams are counted per principal (issue 5, "stream count per
// customer"): the one past the limit is RESOURCE_EXHAUSTED / TOO_MANY_STREAMS
// with QuotaFailure and RetryInfo, other callers are unaffected, and a closed
// stream frees its place. In-process servers over a hand-made stream, with the
// real authorizeService in front.
import { expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService, WatchAvailabilityResponseSchema } from "@holdfast/contracts";
import { QuotaFailureSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { Authenticator, authorizeService } from "@holdfast/core";
import { createGrpcJsClient } from "@holdfast/runtime";
import { bearer, token, TEST_AUDIENCE, TEST_ISSUER, TEST_JWT_SECRET } from "../support/auth.js";
import { failureOf } from "../support/calls.js";
import { startInProcess, type InProcessServers } from "../support/in-process.js";
import { until } from "../support/wait.js";

describe("stream limits per principal", () => {
  let servers: InProcessServers;
  let open = 0;

  before(async () => {
    const authenticator = Authenticator.create({ key: { kind: "secret", secret: TEST_JWT_SECRET }, issuer: TEST_ISSUER, audience: TEST_AUDIENCE, clockToleranceS: 0 });
    servers = await startInProcess(
      {
        // One message, then open until the client goes away.
        async *watchAvailability(_request, context) {
          open++;
          try {
            yield create(WatchAvailabilityResponseSchema, {});
            await new Promise((resolve) => context.signal.addEventListener("abort", resolve, { once: true }));
          } finally {
            open--;
          }
        },
      },
      (impl) => authorizeService(InventoryReservationService, impl, authenticator, { perCustomer: 2, perCaller: 3 }),
    );
  });
  after(async () => servers?.stop(1000));

  /** Opens a stream and waits for its first message; returns its cancel, or the failure. */
  async function watch(client: ReturnType<typeof createGrpcJsClient<typeof InventoryReservationService>>, jwt: string) {
    const abort = new AbortController();
    const iterator = client.watchAvailability({ skus: ["A"] }, { headers: bearer(jwt), signal: abort.signal })[Symbol.asyncIterator]();
    try {
      await iterator.next();
      return { cancel: () => abort.abort() };
    } catch (err) {
      return { failure: failureOf(err) };
    }
  }

  it("the customer's third stream is TOO_MANY_STREAMS with QuotaFailure and RetryInfo; another customer and a service are unaffected; closing one frees a place", async () => {
    const client = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
    const alice = await token("customer", "alice");
    try {
      const first = await watch(client, alice);
      const second = await watch(client, alice);
      expect(first.cancel && second.cancel, "two streams open").to.be.a("function");
      const third = await watch(client, alice);
      expect(third.failure).to.include({ code: Code.ResourceExhausted, reason: "TOO_MANY_STREAMS" });
      expect(third.failure!.metadata).to.deep.equal({ limit: "2" });

      const bob = await watch(client, await token("customer", "bob"));
      expect(bob.cancel).to.be.a("function");
      const service = await token("service", "checkout");
      const services = [await watch(client, service), await watch(client, service), await watch(client, service)];
      expect(services.every((s) => s.cancel !== undefined)).to.equal(true);
      expect((await watch(client, service)).failure).to.include({ reason: "TOO_MANY_STREAMS" });

      // Alice closes one: once the server has seen it go, she may open another.
      const before = open;
      first.cancel!();
      await until("the server sees the cancelled stream end", async () => open === before - 1, 5000, 10);
      const again = await watch(client, alice);
      expect(again.cancel).to.be.a("function");
      for (const s of [second, again, bob, ...services]) s.cancel?.();
    } finally {
      client.close();
    }
  });

  it("the refusal carries QuotaFailure and RetryInfo over Connect too", async () => {
    const client = createClient(InventoryReservationService, createConnectTransport({ baseUrl: servers.httpUrl, httpVersion: "1.1" }));
    const carol = await token("customer", "carol");
    const aborts = [new AbortController(), new AbortController()];
    try {
      for (const abort of aborts) await client.watchAvailability({ skus: ["A"] }, { headers: bearer(carol), signal: abort.signal })[Symbol.asyncIterator]().next();
      let error: unknown;
      try {
        for await (const _ of client.watchAvailability({ skus: ["A"] }, { headers: bearer(carol) })) break;
      } catch (err) {
        error = err;
      }
      const failure = failureOf(error);
      expect(failure).to.include({ code: Code.ResourceExhausted, reason: "TOO_MANY_STREAMS" });
      const connectError = error as import("@connectrpc/connect").ConnectError;
      expect(connectError.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).to.equal("customer/carol");
      expect(connectError.findDetails(RetryInfoSchema)).to.have.length(1);
    } finally {
      for (const abort of aborts) abort.abort();
    }
  });
});
