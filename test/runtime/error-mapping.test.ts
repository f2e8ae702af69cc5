// The one error mapping, seen from real clients on both transports: whatever
// an implementation throws reaches grpc-js and Connect clients with the same
// code, reason and details, and nothing internal leaks.
import { Writable } from "node:stream";
import { expect } from "chai";
import { pino } from "pino";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema, RequestInfoSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import {
  bind,
  createGrpcJsClient,
  createMetrics,
  instrumentService,
  invalidArgument,
  startGrpcServer,
  startHttpServer,
  unimplementedService,
  type RunningGrpcServer,
  type RunningHttpServer,
} from "@holdfast/runtime";
import { rejectionOf } from "../support/assertions.js";

/** What a pg driver error looks like: an Error with a SQLSTATE `code`. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

describe("runtime: one error mapping for both transports", () => {
  const logLines: Record<string, unknown>[] = [];
  let grpc: RunningGrpcServer;
  let http: RunningHttpServer;

  before(async () => {
    const logger = pino(
      { level: "debug" },
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          logLines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
          done();
        },
      }),
    );
    const impl = instrumentService(
      InventoryReservationService,
      {
        ...unimplementedService(InventoryReservationService),
        getSku: () => Promise.reject(pgError("55P03", "canceling statement due to lock timeout")),
        listSkus: () => Promise.reject(new Error("TypeError in the secret internals at /srv/holdfast/x.js:12")),
        getAvailability: () => Promise.reject(pgError("ECONNREFUSED", "connect ECONNREFUSED 10.0.0.7:5432")),
        getReservation: () => Promise.reject(invalidArgument([{ field: "reservation_id", description: "must be a UUID" }])),
      },
      { logger, metrics: createMetrics("test"), stopping: new AbortController().signal },
    );
    grpc = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      services: [bind(InventoryReservationService, impl)],
      reflection: false,
      maxMessageBytes: 1024 * 1024,
      logger,
    });
    http = await startHttpServer({
      host: "127.0.0.1",
      port: 0,
      logger,
      registry: createMetrics("test-http").registry,
      isServing: () => true,
      handler: connectNodeAdapter({ routes: (router) => router.service(InventoryReservationService, impl) }),
    });
  });
  after(async () => {
    await grpc?.stop(1000);
    await http?.stop(1000);
  });

  const clients = () => {
    const grpcJs = createGrpcJsClient(InventoryReservationService, `127.0.0.1:${grpc.port}`);
    const connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: `http://127.0.0.1:${http.port}`, httpVersion: "1.1" }));
    return { grpcJs, connect };
  };

  for (const transport of ["grpc-js", "connect"] as const) {
    describe(`over ${transport}`, () => {
      const call = async (fn: (c: ReturnType<typeof clients>["connect"]) => Promise<unknown>) => {
        const { grpcJs, connect } = clients();
        try {
          const err = await rejectionOf(fn((transport === "grpc-js" ? grpcJs : connect) as ReturnType<typeof clients>["connect"]));
          expect(err).to.be.instanceOf(ConnectError);
          return err as ConnectError;
        } finally {
          grpcJs.close();
        }
      };
      const reasonOf = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.reason;

      it("maps a lock timeout to ABORTED / LOCK_TIMEOUT with retry advice", async () => {
        const err = await call((c) => c.getSku({ sku: "A" }));
        expect(err.code).to.equal(Code.Aborted);
        expect(reasonOf(err)).to.equal("LOCK_TIMEOUT");
        expect(err.findDetails(RetryInfoSchema)).to.have.length(1);
      });

      it("maps a lost database connection to UNAVAILABLE with the request id", async () => {
        const err = await call((c) => c.getAvailability({}, { headers: { "x-request-id": `unavailable-${transport}` } }));
        expect(err.code).to.equal(Code.Unavailable);
        expect(reasonOf(err)).to.equal("DATABASE_UNAVAILABLE");
        expect(err.rawMessage).to.not.include("10.0.0.7");
        expect(err.findDetails(RequestInfoSchema)[0]?.requestId).to.equal(`unavailable-${transport}`);
      });

      it("answers INTERNAL without leaking the cause, and logs the cause with the request id", async () => {
        const requestId = `internal-${transport}`;
        const err = await call((c) => c.listSkus({}, { headers: { "x-request-id": requestId } }));
        expect(err.code).to.equal(Code.Internal);
        expect(err.rawMessage).to.equal("internal error");
        expect(JSON.stringify(err.details)).to.not.include("secret");
        expect(err.findDetails(RequestInfoSchema)[0]?.requestId).to.equal(requestId);
        expect(err.metadata.get("x-request-id"), "request id echoed on the error").to.equal(requestId);
        const line = logLines.find((l) => l.requestId === requestId);
        expect(line).to.include({ level: 50, status: "INTERNAL", method: "InventoryReservationService/ListSkus", reason: "INTERNAL_ERROR" });
        expect(JSON.stringify(line)).to.include("secret internals");
      });

      it("passes field violations through as google.rpc.BadRequest", async () => {
        const err = await call((c) => c.getReservation({}));
        expect(err.code).to.equal(Code.InvalidArgument);
        expect(reasonOf(err)).to.equal("BAD_REQUEST");
        expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).to.deep.equal(["reservation_id"]);
      });
    });
  }
});
