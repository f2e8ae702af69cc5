import http from "node:http";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { filesContaining, listServices } from "../support/reflection.js";
import { rpcFailureOf } from "../support/assertions.js";
import { bearer, testCaller, testCallerInterceptor, token } from "../support/auth.js";

const SERVICE = "holdfast.inventory.v1.InventoryReservationService";
/** A well-formed request of an RPC not implemented yet (a malformed one is INVALID_ARGUMENT first). */
const FLASH_SALE_REPORT = { sku: "ANY-SKU", startTime: { seconds: 1_700_000_000n } };
const ALLOWED_ORIGIN = "https://shop.example.com";

describe("reservation-service: process, transports, health, reflection, CORS", () => {
  let db: TestDatabase;
  let svc: ServiceProcess;

  before(async () => {
    db = await createTestDatabase("reservation_service");
    svc = await startService("reservation-service", db.url, { CORS_ALLOWED_ORIGINS: ALLOWED_ORIGIN });
  });
  after(async () => {
    await svc?.stop();
    await db?.drop();
  });

  it("reports SERVING on grpc.health.v1 for the server and for its service", async () => {
    const health = createGrpcJsClient(Health, svc.grpcAddress);
    try {
      expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
      expect((await health.check({ service: SERVICE })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
      expect((await rpcFailureOf(health.check({ service: "no.such.Service" }))).code).to.equal(Code.NotFound);
    } finally {
      health.close();
    }
  });

  it("answers GET /healthz and GET /metrics on the HTTP port", async () => {
    const healthz = await fetch(`${svc.httpUrl}/healthz`);
    expect(healthz.status).to.equal(200);
    expect(await healthz.json()).to.deep.equal({ status: "SERVING" });
    const metrics = await fetch(`${svc.httpUrl}/metrics`);
    expect(metrics.status).to.equal(200);
    expect(metrics.headers.get("content-type")).to.match(/^text\/plain/);
    expect(await metrics.text()).to.include("holdfast_rpc_duration_seconds").and.include("process_cpu_user_seconds_total");
  });

  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists its services through server reflection ${version}`, async () => {
      expect(await listServices(svc.grpcAddress, version)).to.deep.equal([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        SERVICE,
      ]);
    });
  }

  it("describes every method of the contract through reflection", async () => {
    const files = await filesContaining(svc.grpcAddress, SERVICE);
    const service = files.flatMap((f) => f.service.map((s) => ({ pkg: f.package, s }))).find(({ pkg, s }) => `${pkg}.${s.name}` === SERVICE);
    expect(service, "service descriptor").to.not.equal(undefined);
    const methods = service!.s.method.map((m) => m.name);
    expect(methods).to.deep.equal(InventoryReservationService.methods.map((m) => m.name));
    expect(methods).to.include.members(["CreateHold", "ConfirmHold", "ReleaseHold", "GetAvailability", "WatchAvailability", "CheckConsistency"]);
    // The doc comments travel with the descriptors: they are the API reference grpcurl shows.
    const own = files.find((f) => f.name === "holdfast/inventory/v1/service.proto");
    expect(own?.sourceCodeInfo?.location.some((l) => l.leadingComments.length > 40)).to.equal(true);
    // Enough files came back to resolve every message the methods use.
    const known = new Set(files.flatMap((f) => f.messageType.map((m) => `.${f.package}.${m.name}`)));
    for (const m of service!.s.method) {
      expect(known.has(m.inputType), m.inputType).to.equal(true);
      expect(known.has(m.outputType), m.outputType).to.equal(true);
    }
  });

  it("answers a refusal to a @grpc/grpc-js client with its status and machine-readable reason", async () => {
    const client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    try {
      const failure = await rpcFailureOf(client.getFlashSaleReport(FLASH_SALE_REPORT));
      expect(failure).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
      expect(failure.message).to.include("ANY-SKU");
    } finally {
      client.close();
    }
  });

  it("answers the same refusal to Connect's gRPC transport on the gRPC port (HTTP/2)", async () => {
    const client = createClient(InventoryReservationService, createGrpcTransport({ baseUrl: `http://${svc.grpcAddress}`, interceptors: [testCallerInterceptor] }));
    expect(await rpcFailureOf(client.getFlashSaleReport(FLASH_SALE_REPORT))).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
  });

  for (const [protocol, makeTransport] of [
    ["Connect", createConnectTransport],
    ["gRPC-Web", createGrpcWebTransport],
  ] as const) {
    it(`answers the same refusal to a ${protocol} client over HTTP/1.1 on the HTTP port`, async () => {
      const client = createClient(InventoryReservationService, makeTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
      expect(await rpcFailureOf(client.getFlashSaleReport(FLASH_SALE_REPORT))).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
    });
  }

  it("ends a server stream that the logic refuses with its status on both ports", async () => {
    const grpcClient = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    const connectClient = createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) {
        // no messages expected
      }
    };
    try {
      // A service caller must name the customer whose waitlist it watches.
      expect(await rpcFailureOf(drain(grpcClient.watchWaitlist({})))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(await rpcFailureOf(drain(connectClient.watchWaitlist({})))).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
    } finally {
      grpcClient.close();
    }
  });

  it("lets buf curl find and call the service through reflection, as the README shows", async () => {
    const run = promisify(execFile);
    const buf = new URL("../../../node_modules/.bin/buf", import.meta.url).pathname;
    const base = `http://${svc.grpcAddress}`;
    const listed = await run(buf, ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "--list-methods", base]);
    expect(listed.stdout).to.include(`${SERVICE}/CreateHold`);
    const authorization = `authorization: Bearer ${await token("service")}`;
    const call = await run(buf, ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "-H", authorization, "-d", "{}", `${base}/${SERVICE}/GetSku`]).catch(
      (err: { stdout: string; stderr: string }) => err,
    );
    // A real answer from the implementation: the empty request lacks its SKU code.
    expect(`${call.stdout}${call.stderr}`).to.match(/invalid_argument/i).and.to.include("sku");
  });

  describe("CORS on the HTTP port", () => {
    const preflight = (origin: string) =>
      fetch(`${svc.httpUrl}/${SERVICE}/GetSku`, {
        method: "OPTIONS",
        headers: {
          Origin: origin,
          "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "content-type,connect-protocol-version,authorization",
        },
      });

    it("accepts a preflight from an allowed origin", async () => {
      const response = await preflight(ALLOWED_ORIGIN);
      expect(response.status).to.equal(204);
      expect(response.headers.get("access-control-allow-origin")).to.equal(ALLOWED_ORIGIN);
      expect(response.headers.get("access-control-allow-methods")).to.include("POST");
      expect(response.headers.get("access-control-allow-headers")?.toLowerCase()).to.include("connect-protocol-version").and.include("authorization");
    });

    it("refuses a preflight from any other origin", async () => {
      const response = await preflight("https://evil.example.net");
      expect(response.status).to.equal(403);
      expect(response.headers.get("access-control-allow-origin")).to.equal(null);
    });

    it("lets an allowed origin read the response of a real call", async () => {
      const response = await fetch(`${svc.httpUrl}/${SERVICE}/GetSku`, {
        method: "POST",
        headers: { Origin: ALLOWED_ORIGIN, "Content-Type": "application/json", "Connect-Protocol-Version": "1", ...bearer(await token("customer", "alice")) },
        body: "{}",
      });
      expect(response.headers.get("access-control-allow-origin")).to.equal(ALLOWED_ORIGIN);
      expect(response.headers.get("access-control-expose-headers")?.toLowerCase()).to.include("x-request-id");
      expect(((await response.json()) as { code: string }).code).to.equal("invalid_argument");
    });
  });

  it("keeps the HTTP/1.1 connection of a bodyless request (health probe, CORS preflight) alive", async () => {
    const agent = new http.Agent({ keepAlive: true });
    try {
      for (const method of ["GET", "OPTIONS"]) {
        const headers = await new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
          const req = http.request(`${svc.httpUrl}/${method === "GET" ? "healthz" : `${SERVICE}/GetSku`}`, {
            method,
            agent,
            headers: method === "OPTIONS" ? { Origin: ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST" } : {},
          });
          req.on("response", (res) => {
            res.resume();
            res.on("end", () => resolve(res.headers));
          });
          req.on("error", reject);
          req.end();
        });
        expect(headers.connection, method).to.not.equal("close");
      }
    } finally {
      agent.destroy();
    }
  });

  it("drains and exits 0 on SIGTERM", async () => {
    const second = await startService("reservation-service", db.url);
    const code = await second.stop();
    expect(code).to.equal(0);
    expect(second.output.join("\n")).to.include("stopped cleanly");
  });
});
