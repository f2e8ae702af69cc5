// Bounded resources (issue 5): what one client can hold on the ports.
// (a) a message above MAX_MESSAGE_BYTES is RESOURCE_EXHAUSTED on every protocol, and
//     the client's next call works; an error quoting a huge input does not wedge the
//     connection;
// (b) slowloris: calls and requests whose bytes stop coming (HTTP/2 HEADERS without
//     END_STREAM, a message cut short, HTTP/1.1 headers trickled, a body cut short,
//     a socket that says nothing) are cut off within a bound of
//     REQUEST_RECEIVE_TIMEOUT_MS, logged once each, while a well-behaved client's
//     calls keep succeeding quickly, on the same connection too; server streams
//     still last as long as they need;
// (c) GRPC_MAX_CONCURRENT_STREAMS: the server advertises it, refuses the stream past
//     it (REFUSED_STREAM), grpc-js clients queue theirs, other connections are not
//     affected.
// Every wait is on an event (response, stream or socket close) with a timeout as bound.
import http2 from "node:http2";
import net from "node:net";
import { Writable } from "node:stream";
import { expect } from "chai";
import { pino } from "pino";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { ErrorReason, ExpiryWorkerService, GetSkuRequestSchema, InventoryReservationService, ListSkusResponseSchema, UpdateSkuRequestSchema, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema } from "@holdfast/contracts/rpc";
import {
  bind,
  createGrpcJsClient,
  createMetrics,
  instrumentService,
  MAX_STATUS_MESSAGE_BYTES,
  rpcError,
  startGrpcServer,
  startHttpServer,
  unimplementedService,
  type GrpcJsClient,
  type RunningGrpcServer,
  type RunningHttpServer,
} from "@holdfast/runtime";
import { loadReservationServiceConfig } from "@holdfast/reservation-service";
import { loadExpiryWorkerConfig } from "@holdfast/expiry-worker";
import { bearer, testCaller, testCallerInterceptor, token } from "../support/auth.js";
import { rpcFailureOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startInProcess } from "../support/in-process.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

const KiB = 1024;
const MAX_MESSAGE_BYTES = 64 * KiB;
const RECEIVE_TIMEOUT_MS = 1_000;
const MAX_STREAMS = 8;
/** How long after its start a stalled request must be gone: the timeout plus scheduling slack on 2 shared cores. */
const CUT_OFF_BOUND_MS = 5_000;
const SKU = "LIM-1";

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

const grpcFrame = (payload: Uint8Array, length = payload.length) => {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(length, 1);
  return Buffer.concat([head, payload]);
};

/** A gRPC call on a raw HTTP/2 session, as far as the server's answer and the stream's end. */
interface RawCall {
  stream: http2.ClientHttp2Stream;
  startedAt: number;
  /** grpc-status and grpc-message, from headers (trailers-only) or trailers. */
  status: Promise<{ code: number; message: string; at: number }>;
  /** When the stream closed, and with which RST_STREAM code (0 = NO_ERROR). */
  closed: Promise<{ at: number; rstCode: number }>;
}

function rawCall(session: http2.ClientHttp2Session, path: string, headers: Record<string, string>, body?: { write: Buffer; end: boolean }): RawCall {
  const startedAt = Date.now();
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers }, { endStream: false });
  stream.on("error", () => undefined);
  stream.on("data", () => undefined);
  const status = new Promise<{ code: number; message: string; at: number }>((resolve) => {
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) resolve({ code: Number(h["grpc-status"]), message: decodeURIComponent(String(h["grpc-message"] ?? "")), at: Date.now() });
    };
    stream.on("response", take);
    stream.on("trailers", take);
  });
  const closed = new Promise<{ at: number; rstCode: number }>((resolve) => stream.on("close", () => resolve({ at: Date.now(), rstCode: stream.rstCode ?? -1 })));
  if (body !== undefined) {
    if (body.end) stream.end(body.write);
    else stream.write(body.write);
  }
  return { stream, startedAt, status, closed };
}

/** A raw TCP connection to an HTTP/1.1 port: what the server wrote, and when it closed the socket. */
function rawSocket(url: string, onConnect: (socket: net.Socket) => void): { socket: net.Socket; startedAt: number; closed: Promise<{ at: number; received: string }> } {
  const { hostname, port } = new URL(url);
  const startedAt = Date.now();
  const socket = net.connect(Number(port), hostname, () => onConnect(socket));
  let received = "";
  socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
  socket.on("error", () => undefined);
  const closed = new Promise<{ at: number; received: string }>((resolve) => socket.on("close", () => resolve({ at: Date.now(), received })));
  return { socket, startedAt, closed };
}

describe("limits: message size, slow clients, streams per connection", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let svc: ServiceProcess;
  let worker: ServiceProcess;
  let grpcClient: GrpcJsClient<typeof InventoryReservationService>;
  let connectClient: Client<typeof InventoryReservationService>;
  let adminAuth: Record<string, string>;

  before(async () => {
    db = await createTestDatabase("limits");
    const limits = { REQUEST_RECEIVE_TIMEOUT_MS: String(RECEIVE_TIMEOUT_MS), GRPC_MAX_CONCURRENT_STREAMS: String(MAX_STREAMS) };
    [svc, worker] = await Promise.all([
      startService("reservation-service", db.url, { ...limits, MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES) }),
      startService("expiry-worker", db.url, limits),
    ]);
    grpcClient = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    connectClient = createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
    await grpcClient.createSku({ requestId: "lim-sku", sku: SKU, name: "Limits", initialOnHand: 100n });
    adminAuth = bearer(await token("admin", "lim-admin"));
  });
  after(async () => {
    grpcClient?.close();
    await Promise.all([svc?.stop(), worker?.stop()]);
    await db?.drop();
  });

  /** Undone after each test, passed or failed: raw sessions and sockets, background traffic. */
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const undo of cleanup.splice(0)) undo();
  });

  const logLines = (proc: ServiceProcess, msg: string) => proc.output.filter((line) => line.includes(`"msg":"${msg}"`));

  it("reads the limits from the environment, with defaults, and refuses nonsense", () => {
    const DATABASE_URL = "postgres://u:p@127.0.0.1:5432/d";
    expect(loadReservationServiceConfig({ DATABASE_URL }).limits).to.deep.equal({ maxConcurrentStreams: 100, requestReceiveTimeoutMs: 10_000 });
    expect(loadExpiryWorkerConfig({ DATABASE_URL, GRPC_MAX_CONCURRENT_STREAMS: "20", REQUEST_RECEIVE_TIMEOUT_MS: "2500" }).limits).to.deep.equal({
      maxConcurrentStreams: 20,
      requestReceiveTimeoutMs: 2_500,
    });
    expect(() => loadReservationServiceConfig({ DATABASE_URL, GRPC_MAX_CONCURRENT_STREAMS: "0", REQUEST_RECEIVE_TIMEOUT_MS: "10s" }))
      .to.throw(/GRPC_MAX_CONCURRENT_STREAMS: must be greater than 0/)
      .with.property("message")
      .that.matches(/REQUEST_RECEIVE_TIMEOUT_MS: must be a whole number/);
  });

  describe("(a) message size", () => {
    const oversized = () => ({ requestId: "lim-oversized", sku: "LIM-BIG", name: "n".repeat(MAX_MESSAGE_BYTES + KiB), initialOnHand: 1n });

    it("gRPC: above MAX_MESSAGE_BYTES is RESOURCE_EXHAUSTED, and the same client's next call works", async () => {
      const failure = await rpcFailureOf(grpcClient.createSku(oversized()));
      expect(failure.codeName).to.equal("ResourceExhausted");
      expect(failure.message).to.match(/larger than max .*65536/);
      // Just below the limit the size is fine (the name is then simply too long for the contract).
      const below = await rpcFailureOf(grpcClient.createSku({ ...oversized(), name: "n".repeat(MAX_MESSAGE_BYTES - KiB) }));
      expect(below.codeName).to.equal("InvalidArgument");
      expect((await grpcClient.getSku({ sku: SKU })).sku?.code).to.equal(SKU);
    });

    it("Connect and gRPC-Web: above MAX_MESSAGE_BYTES is RESOURCE_EXHAUSTED, and the same client's next call works", async () => {
      const web = createClient(InventoryReservationService, createGrpcWebTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
      for (const client of [connectClient, web]) {
        const failure = await rpcFailureOf(client.createSku(oversized()));
        expect(failure.codeName).to.equal("ResourceExhausted");
        expect(failure.message).to.match(/65536/);
        expect((await client.getSku({ sku: SKU })).sku?.code).to.equal(SKU);
      }
    });

    it("HTTP/1.1: a request refused before its body arrived ends its connection at once (nothing is left half-read)", async () => {
      // gRPC-Web: the envelope announces more than MAX_MESSAGE_BYTES; the server answers at
      // once. Nobody reads the rest of that body, so the connection cannot serve another
      // request: it says "Connection: close" and closes, rather than leave the client's next
      // request waiting for the receive timeout.
      const path = `/${InventoryReservationService.typeName}/GetSku`;
      const body = grpcFrame(Buffer.alloc(MAX_MESSAGE_BYTES + KiB, 0x41));
      const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nAuthorization: ${adminAuth.authorization}\r\nContent-Length: ${body.length}\r\n\r\n`;
      const refused = rawSocket(svc.httpUrl, (s) => s.write(head + body.subarray(0, KiB).toString("latin1")));
      cleanup.push(() => refused.socket.destroy());
      const closed = await within(RECEIVE_TIMEOUT_MS, "the refused request's connection to close", refused.closed);
      expect(closed.received).to.match(/^HTTP\/1\.1 200 OK\r\nConnection: close\r\n/);
      expect(closed.received.replace(/\s/g, "")).to.match(/grpc-status:8/i);
      // A client goes on, on a new connection.
      const web = createClient(InventoryReservationService, createGrpcWebTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));
      expect((await web.getSku({ sku: SKU }, { timeoutMs: 2_000 })).sku?.code).to.equal(SKU);
    });

    it("an error quoting a huge input is cut to a bounded status, and does not wedge the connection", async () => {
      // The service's own errors quote little of the input (UpdateSku's bad mask path)...
      const mask = await rpcFailureOf(grpcClient.updateSku({ requestId: "lim-mask", sku: { code: SKU, name: "x" }, updateMask: { paths: ["x".repeat(40_000)] } }, { timeoutMs: 10_000 }));
      expect(mask.reason).to.equal("INVALID_UPDATE_MASK");
      expect(Buffer.byteLength(mask.message)).to.be.at.most(MAX_STATUS_MESSAGE_BYTES);
      // ...and whatever raises a huge one, the gRPC port bounds it. Sent whole in the trailers
      // (~100 KiB here), such a status used to hang this call and every later call on the
      // connection.
      const servers = await startInProcess({
        getSku: async (request) => {
          throw rpcError(Code.InvalidArgument, ErrorReason.BAD_REQUEST, request.sku.repeat(100_000 / request.sku.length), {
            metadata: { echo: request.sku.repeat(10_000) },
            details: [{ desc: BadRequestSchema, value: { fieldViolations: [{ field: "sku", description: request.sku.repeat(20_000) }] } }],
          });
        },
        listSkus: async () => create(ListSkusResponseSchema, {}),
      });
      const client = createGrpcJsClient(InventoryReservationService, servers.grpcAddress);
      try {
        for (const unit of ["x", "🙂"]) {
          const failure = await rpcFailureOf(client.getSku({ sku: unit }, { timeoutMs: 10_000 }));
          expect(failure.codeName).to.equal("InvalidArgument");
          expect(failure.reason, "ErrorInfo is kept first").to.equal("BAD_REQUEST");
          expect(Buffer.byteLength(failure.message)).to.be.at.most(MAX_STATUS_MESSAGE_BYTES);
          expect(failure.message).to.match(/… \(truncated\)$/);
        }
        await client.listSkus({}, { timeoutMs: 5_000 });
      } finally {
        client.close();
        await servers.stop(1000);
      }
      expect((await grpcClient.getSku({ sku: SKU }, { timeoutMs: 5_000 })).sku?.code).to.equal(SKU);
    });
  });

  describe("(b) slow clients are cut off; everyone else is served", () => {
    it("gRPC calls whose request never arrives whole, and HTTP/1.1 requests that stall, end within the bound while well-behaved calls succeed", async () => {
      const path = `/${InventoryReservationService.typeName}/GetSku`;
      const workerPath = `/${ExpiryWorkerService.typeName}/GetWorkerStatus`;
      const valid = Buffer.from(toBinary(GetSkuRequestSchema, create(GetSkuRequestSchema, { sku: SKU })));
      const sessions = Array.from({ length: 4 }, () => http2.connect(`http://${svc.grpcAddress}`));
      const workerSession = http2.connect(`http://${worker.grpcAddress}`);
      for (const s of [...sessions, workerSession]) s.on("error", () => undefined);
      cleanup.push(() => {
        for (const s of [...sessions, workerSession]) s.destroy();
      });

      // Well-behaved traffic for as long as the attack lasts: gRPC and Connect, one call at a time each.
      const stderr: string[] = [];
      svc.child.stderr!.on("data", (c: Buffer) => stderr.push(c.toString()));
      const latencies: number[] = [];
      const failures: string[] = [];
      let attacking = true;
      cleanup.push(() => (attacking = false));
      const steady = async (call: () => Promise<unknown>) => {
        while (attacking) {
          const t = Date.now();
          try {
            await call();
          } catch (err) {
            failures.push(String(err));
          }
          latencies.push(Date.now() - t);
        }
      };
      const traffic = Promise.all([steady(() => grpcClient.getSku({ sku: SKU }, { timeoutMs: 5_000 })), steady(() => connectClient.getSku({ sku: SKU }, { timeoutMs: 5_000 }))]);

      // gRPC: 4 connections × 5 calls with HEADERS only, 4 × 2 with half a message, then
      // one with a length prefix over the size limit that stops sending; 5 on the worker.
      const grpcCalls: RawCall[] = [];
      for (const session of sessions) {
        for (let i = 0; i < 5; i++) grpcCalls.push(rawCall(session, path, adminAuth));
        for (let i = 0; i < 2; i++) grpcCalls.push(rawCall(session, path, adminAuth, { write: grpcFrame(valid).subarray(0, 7), end: false }));
      }
      const oversizedStall = rawCall(sessions[0], path, adminAuth, { write: grpcFrame(Buffer.alloc(16), 10 * 1024 * 1024), end: false });
      const workerCalls = Array.from({ length: 5 }, () => rawCall(workerSession, workerPath, adminAuth));

      // The same HTTP/2 connection still serves a well-behaved call meanwhile (7 of its 8 slots are taken).
      const neighbour = rawCall(sessions[1], path, adminAuth, { write: grpcFrame(valid), end: true });
      const neighbourStatus = await within(2_000, "a complete call next to the stalled ones", neighbour.status);
      expect(neighbourStatus.code, neighbourStatus.message).to.equal(0);

      // HTTP/1.1: headers trickled forever, a body cut short, a body too large then cut short,
      // sockets that say nothing; the same on the worker's metrics port.
      const rpcUrl = `${svc.httpUrl}/${InventoryReservationService.typeName}/GetSku`;
      const requestHead = (extra: string) => `POST ${new URL(rpcUrl).pathname} HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nAuthorization: ${adminAuth.authorization}\r\n${extra}`;
      const sockets = [
        ...Array.from({ length: 8 }, () =>
          rawSocket(svc.httpUrl, (s) => {
            s.write(requestHead(""));
            const trickle = setInterval(() => (s.writable ? s.write(`X-Slow-${Date.now()}: 1\r\n`) : clearInterval(trickle)), 150);
            s.on("close", () => clearInterval(trickle));
          }),
        ),
        ...Array.from({ length: 8 }, () => rawSocket(svc.httpUrl, (s) => s.write(`${requestHead("Content-Length: 1000\r\n")}\r\n${"\u0000".repeat(10)}`))),
        rawSocket(svc.httpUrl, (s) => s.write(`${requestHead(`Content-Length: ${MAX_MESSAGE_BYTES * 4}\r\n`)}\r\nabc`)),
        ...Array.from({ length: 6 }, () => rawSocket(svc.httpUrl, () => undefined)),
        ...Array.from({ length: 3 }, () => rawSocket(worker.httpUrl, () => undefined)),
      ];
      cleanup.push(() => {
        for (const s of sockets) s.socket.destroy();
      });

      const allGrpc = [...grpcCalls, oversizedStall, ...workerCalls];
      const ended = await within(
        CUT_OFF_BOUND_MS + 2_000,
        "the stalled calls and sockets to be cut off",
        Promise.all([Promise.all(allGrpc.map(async (c) => ({ call: c, status: await c.status, closed: await c.closed }))), Promise.all(sockets.map((s) => s.closed))]),
      );
      attacking = false;
      await traffic;

      const [grpcEnded, socketsEnded] = ended;
      for (const { call, status, closed } of grpcEnded) {
        const expected = call === oversizedStall ? [Code.ResourceExhausted, /larger than max/] : [Code.DeadlineExceeded, /the request was not received within 1000 ms/];
        expect(status.code, status.message).to.equal(expected[0]);
        expect(status.message).to.match(expected[1] as RegExp);
        expect(closed.at - call.startedAt, "stream closed within the bound").to.be.below(CUT_OFF_BOUND_MS);
        expect(closed.rstCode, "closed by the server (RST_STREAM NO_ERROR after the answer)").to.equal(http2.constants.NGHTTP2_NO_ERROR);
      }
      // The size refusal is immediate; the stream is then reset once its sender has stalled for the timeout.
      const stalled = grpcEnded.find((e) => e.call === oversizedStall)!;
      expect(stalled.status.at - oversizedStall.startedAt).to.be.below(RECEIVE_TIMEOUT_MS);
      for (const [i, closed] of socketsEnded.entries()) {
        expect(closed.at - sockets[i].startedAt, `socket ${i} closed within the bound`).to.be.below(CUT_OFF_BOUND_MS);
        // The oversized one is refused at once (429 resource_exhausted, connection closed), the others get Node's 408.
        expect(closed.received, `socket ${i}`).to.match(i === 16 ? /^HTTP\/1\.1 429 .*Connection: close.*"code":"resource_exhausted".*\}$/s : /^HTTP\/1\.1 408 Request Timeout/);
      }
      expect(failures, "well-behaved calls").to.deep.equal([]);
      expect(latencies.length, "well-behaved calls made during the attack").to.be.above(10);
      expect(Math.max(...latencies), `well-behaved call latencies (ms): ${latencies.join(", ")}`).to.be.below(1_000);

      // Logged once each, at info.
      const grpcCut = grpcCalls.length;
      await until("the cut-offs to be logged", async () => logLines(svc, "gRPC request not received in time: call cut off").length >= grpcCut && logLines(worker, "gRPC request not received in time: call cut off").length >= 5, 5_000);
      expect(logLines(svc, "gRPC request not received in time: call cut off")).to.have.length(grpcCut);
      expect(logLines(svc, "gRPC request not received in time after its answer: stream reset")).to.have.length(1);
      expect(logLines(worker, "gRPC request not received in time: call cut off")).to.have.length(5);
      expect(logLines(svc, "gRPC request not received in time: call cut off")[0]).to.include('"level":"info"').and.include(`"method":"${path}"`);
      // Every socket on the service's port but the oversized one (refused at once, and closed).
      const svcSockets = sockets.length - 3 - 1;
      await until(
        "the HTTP cut-offs to be logged",
        async () => logLines(svc, "HTTP request not received in time: connection closed").length >= svcSockets && logLines(worker, "HTTP request not received in time: connection closed").length >= 3,
        5_000,
      );
      expect(logLines(svc, "HTTP request not received in time: connection closed")).to.have.length(svcSockets);
      expect(logLines(worker, "HTTP request not received in time: connection closed")).to.have.length(3);

      expect(stderr.join(""), "nothing on the service's stderr (connect-node reports failed handlers there)").to.equal("");
      // The connections whose calls were cut off serve again.
      const again = await within(2_000, "a call on a connection whose calls were cut off", rawCall(sessions[2], path, adminAuth, { write: grpcFrame(valid), end: true }).status);
      expect(again.code).to.equal(0);
      // No error was logged for any of it.
      expect([...svc.output, ...worker.output].filter((l) => /"level":"(error|fatal)"/.test(l))).to.deep.equal([]);
    });
  });

  it("HTTP/1.1: request headers over 16 KiB are 431 and the connection is closed", async () => {
    const big = rawSocket(svc.httpUrl, (s) => s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(17 * KiB)}\r\n\r\n`));
    cleanup.push(() => big.socket.destroy());
    const closed = await within(CUT_OFF_BOUND_MS, "the connection to be closed", big.closed);
    expect(closed.received).to.match(/^HTTP\/1\.1 431 Request Header Fields Too Large/);
    const fine = await fetch(new URL("/healthz", svc.httpUrl), { headers: { "x-big": "b".repeat(8 * KiB) } });
    expect(fine.status).to.equal(200);
  });

  describe("(c) streams per connection", () => {
    it("advertises GRPC_MAX_CONCURRENT_STREAMS; a stream past it waits (or, sent before the SETTINGS, is refused); other connections are not affected", async () => {
      const path = `/${InventoryReservationService.typeName}/GetSku`;
      const valid = Buffer.from(toBinary(GetSkuRequestSchema, create(GetSkuRequestSchema, { sku: SKU })));

      // A client that opens its streams before it has read the server's SETTINGS: the one past the limit is refused.
      const eager = http2.connect(`http://${svc.grpcAddress}`);
      eager.on("error", () => undefined);
      cleanup.push(() => eager.destroy());
      const eagerHeld = Array.from({ length: MAX_STREAMS }, () => rawCall(eager, path, adminAuth));
      const eagerExtra = rawCall(eager, path, adminAuth, { write: grpcFrame(valid), end: true });
      const refused = await within(2_000, "the stream past the limit to be refused", eagerExtra.closed);
      expect(refused.rstCode, "RST_STREAM REFUSED_STREAM").to.equal(http2.constants.NGHTTP2_REFUSED_STREAM);

      // A client that knows the limit: its stream past it waits for a free slot, then runs.
      const patient = http2.connect(`http://${svc.grpcAddress}`);
      patient.on("error", () => undefined);
      cleanup.push(() => patient.destroy());
      const settings = await within(2_000, "the server's SETTINGS", new Promise<http2.Settings>((resolve) => patient.once("remoteSettings", resolve)));
      expect(settings.maxConcurrentStreams).to.equal(MAX_STREAMS);
      const patientHeld = Array.from({ length: MAX_STREAMS }, () => rawCall(patient, path, adminAuth));
      const waiting = rawCall(patient, path, adminAuth, { write: grpcFrame(valid), end: true });

      // Meanwhile another connection is served at once, 20 calls at a time.
      const other = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
      try {
        const started = Date.now();
        const answers = await Promise.all(Array.from({ length: 20 }, () => other.getSku({ sku: SKU }, { timeoutMs: 5_000 })));
        expect(answers.every((a) => a.sku?.code === SKU)).to.equal(true);
        expect(Date.now() - started).to.be.below(RECEIVE_TIMEOUT_MS);
      } finally {
        other.close();
      }

      const firstFreed = await within(CUT_OFF_BOUND_MS, "a held stream to be cut off", Promise.race(patientHeld.map((c) => c.closed)));
      const ran = await within(CUT_OFF_BOUND_MS, "the waiting stream to run", waiting.status);
      expect(ran.code, ran.message).to.equal(0);
      expect(ran.at, "the waiting stream ran once a slot was free").to.be.at.least(firstFreed.at);
      await within(CUT_OFF_BOUND_MS, "every held stream to be cut off", Promise.all([...patientHeld, ...eagerHeld].map((c) => c.closed)));

      // The eager connection takes new calls again too.
      const after = await within(2_000, "a call after the cut-off", rawCall(eager, path, adminAuth, { write: grpcFrame(valid), end: true }).status);
      expect(after.code).to.equal(0);
    });
  });

  describe("server streams are not bounded by the receive timeout; grpc-js queues streams past the limit", () => {
    // In this process, over a stream that sends a heartbeat every 100 ms until cancelled.
    let grpcServer: RunningGrpcServer;
    let httpServer: RunningHttpServer;
    let opened = 0;
    const logs: string[] = [];

    before(async () => {
      const logger = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _e, done) => (logs.push(chunk.toString()), done()) }));
      const impl = instrumentService(
        InventoryReservationService,
        {
          ...unimplementedService(InventoryReservationService),
          async *watchAvailability(_request, context): AsyncGenerator<WatchAvailabilityResponse> {
            opened++;
            while (!context.signal.aborted) {
              yield { $typeName: "holdfast.inventory.v1.WatchAvailabilityResponse", event: { case: "heartbeat", value: { $typeName: "holdfast.inventory.v1.StreamHeartbeat", serverTime: timestampNow() } } };
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          },
        },
        { logger, metrics: createMetrics("limits-test"), stopping: new AbortController().signal },
      );
      grpcServer = await startGrpcServer({
        host: "127.0.0.1",
        port: 0,
        services: [bind(InventoryReservationService, impl)],
        reflection: false,
        maxMessageBytes: 64 * KiB,
        maxConcurrentStreams: 4,
        requestReceiveTimeoutMs: 300,
        logger,
      });
      httpServer = await startHttpServer({
        host: "127.0.0.1",
        port: 0,
        logger,
        registry: createMetrics("limits-test-http").registry,
        isServing: () => true,
        requestReceiveTimeoutMs: 300,
        handler: connectNodeAdapter({ routes: (router) => router.service(InventoryReservationService, impl) }),
      });
    });
    after(async () => {
      await Promise.all([grpcServer?.stop(1_000), httpServer?.stop(1_000)]);
    });

    /** Reads `stream` for `ms`; resolves with the number of messages (throws what the stream throws). */
    async function readFor(stream: AsyncIterable<unknown>, ms: number): Promise<number> {
      let count = 0;
      const until_ = Date.now() + ms;
      for await (const _ of stream) {
        count++;
        if (Date.now() >= until_) break;
      }
      return count;
    }

    it("a stream lasts well past REQUEST_RECEIVE_TIMEOUT_MS on the gRPC port and over HTTP/1.1 (Connect, gRPC-Web)", async () => {
      const grpc = createGrpcJsClient(InventoryReservationService, `127.0.0.1:${grpcServer.port}`);
      const baseUrl = `http://127.0.0.1:${httpServer.port}`;
      const connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
      const web = createClient(InventoryReservationService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }));
      try {
        // 1.5 s: five times the 300 ms receive timeout.
        const counts = await Promise.all([readFor(grpc.watchAvailability({}), 1_500), readFor(connect.watchAvailability({}), 1_500), readFor(web.watchAvailability({}), 1_500)]);
        for (const count of counts) expect(count).to.be.at.least(10);
      } finally {
        grpc.close();
      }
      expect(logs.filter((l) => /not received in time/.test(l))).to.deep.equal([]);
    });

    it("a grpc-js client queues its streams past the server's limit on one connection, and they start as others end", async () => {
      const client = createGrpcJsClient(InventoryReservationService, `127.0.0.1:${grpcServer.port}`);
      try {
        const base = opened;
        const aborts = Array.from({ length: 7 }, () => new AbortController());
        const iterators = aborts.map((abort) => client.watchAvailability({}, { signal: abort.signal })[Symbol.asyncIterator]());
        const firsts: number[] = [];
        const streams = iterators.map((iterator, i) =>
          iterator.next().then(
            () => firsts.push(i),
            () => undefined,
          ),
        );
        await until("4 streams to open", async () => firsts.length === 4, 5_000);
        const firstFour = [...firsts];
        // The other 3 wait for a free slot: while an open stream delivers 5 more heartbeats
        // (half a second of the server's time), none of them starts.
        for (let k = 0; k < 5; k++) await within(2_000, "a heartbeat", iterators[firstFour[3]].next());
        expect(firsts, "streams open while 4 hold the connection's slots").to.have.length(4);
        expect(opened - base).to.equal(4);
        // End 3 of the open ones: the 3 queued ones start.
        for (const i of firstFour.slice(0, 3)) aborts[i].abort();
        await until("the queued streams to start", async () => firsts.length === 7, 5_000);
        for (const abort of aborts) abort.abort();
        await Promise.all(streams);
      } finally {
        client.close();
      }
    });
  });
});
