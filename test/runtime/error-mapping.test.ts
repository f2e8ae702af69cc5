// The one error mapping, seen from real clients on both transports: whatever
// an implementation throws reaches grpc-js and Connect clients with the same
// code, reason and details, and nothing internal leaks.
import { expect } from "chai";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema, RequestInfoSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, invalidArgument, toConnectError } from "@holdfast/runtime";
import { rejectionOf } from "../support/assertions.js";
import { startInProcess, type InProcessServers } from "../support/in-process.js";

/** What a pg driver error looks like: an Error with a SQLSTATE `code`. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

type Client = ReturnType<typeof createClient<typeof InventoryReservationService>>;

describe("runtime: one error mapping for both transports", () => {
  let servers: InProcessServers;

  before(async () => {
    servers = await startInProcess({
      getSku: () => Promise.reject(pgError("55P03", "canceling statement due to lock timeout")),
      listSkus: () => Promise.reject(new Error("TypeError in the secret internals at /srv/holdfast/x.js:12")),
      getAvailability: () => Promise.reject(pgError("ECONNREFUSED", "connect ECONNREFUSED 10.0.0.7:5432")),
      getReservation: () => Promise.reject(invalidArgument([{ field: "reservation_id", description: "must be a UUID" }])),
      listReservations: () => Promise.reject(pgError("23514", 'new row for relation "inventory" violates check constraint "inventory_not_oversold"')),
      listAuditEvents: () => Promise.reject(pgError("22P02", 'invalid input syntax for type uuid: "x"')),
    });
  });
  after(async () => {
    await servers?.stop(1000);
  });

  for (const transport of ["grpc-js", "connect"] as const) {
    describe(`over ${transport}`, () => {
      const call = async (fn: (client: Client) => Promise<unknown>): Promise<ConnectError> => {
        const grpcJs = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
        const connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: servers.httpUrl, httpVersion: "1.1" }));
        try {
          const err = await rejectionOf(fn((transport === "grpc-js" ? grpcJs : connect) as Client));
          expect(err).to.be.instanceOf(ConnectError);
          return err as ConnectError;
        } finally {
          grpcJs.close();
        }
      };
      const reasonOf = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.reason;
      /** Every detail's bytes as text, to look for leaks. */
      const detailText = (err: ConnectError) => err.details.map((d) => ("value" in d && d.value instanceof Uint8Array ? Buffer.from(d.value).toString("latin1") : "")).join("|");

      it("maps a lock timeout to ABORTED / LOCK_TIMEOUT with retry advice", async () => {
        const err = await call((c) => c.getSku({ sku: "A" }));
        expect(err.code).to.equal(Code.Aborted);
        expect(reasonOf(err)).to.equal("LOCK_TIMEOUT");
        expect(err.findDetails(RetryInfoSchema)).to.have.length(1);
      });

      it("maps a CHECK violation (the last line of defence catching a race) to ABORTED, retryable", async () => {
        const err = await call((c) => c.listReservations({}));
        expect(err.code).to.equal(Code.Aborted);
        expect(reasonOf(err)).to.equal("TRANSACTION_ABORTED");
        expect(err.rawMessage).to.not.include("inventory_not_oversold");
      });

      it("maps a value the database refuses to INVALID_ARGUMENT, not INTERNAL", async () => {
        const err = await call((c) => c.listAuditEvents({}));
        expect(err.code).to.equal(Code.InvalidArgument);
        expect(reasonOf(err)).to.equal("BAD_REQUEST");
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
        expect(detailText(err)).to.include(requestId).and.not.include("secret");
        expect(err.findDetails(RequestInfoSchema)[0]?.requestId).to.equal(requestId);
        expect(err.metadata.get("x-request-id"), "request id echoed on the error").to.equal(requestId);
        const line = servers.logs.find((l) => l.requestId === requestId);
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

describe("runtime: a lost database connection, however pg and knex word it", () => {
  for (const [name, err] of [
    ["a terminated backend (57P01)", pgError("57P01", "terminating connection due to administrator command")],
    ["the ROLLBACK knex sends after it", new Error("ROLLBACK - Client has encountered a connection error and is not queryable")],
    ["a connection ended under a query", new Error("Connection terminated unexpectedly")],
    ["a refused connection", pgError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:5432")],
  ] as const) {
    it(`${name} is UNAVAILABLE / DATABASE_UNAVAILABLE, never INTERNAL`, () => {
      const mapped = toConnectError(err);
      expect(mapped.code).to.equal(Code.Unavailable);
      expect(mapped.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("DATABASE_UNAVAILABLE");
    });
  }
});
