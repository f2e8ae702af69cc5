#!/usr/bin/env node
// Server CPU per trivial unary call: grpc-js vs connect-node (gRPC over HTTP/2,
// Connect over HTTP/1.1), all serving the same implementation, wrapped as the
// services wrap theirs: instrumented, and with the contract's request rules
// checked (validateService; --without-validation leaves that out, to measure it).
// The server runs in a child process so that only its CPU is measured; rounds
// alternate between transports so that machine noise hits all of them alike.
//
//   npm run bench:transport -- [--calls 4000] [--concurrency 16] [--rounds 5] [--without-validation]
import http from "node:http";
import http2 from "node:http2";
import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { writeFile, mkdir } from "node:fs/promises";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { addServiceImpl, createGrpcJsClient, createLogger, createMetrics, instrumentService, unimplementedService, validateService } from "@holdfast/runtime";

type ServerMessage = { ports: { grpcJs: number; connectH2: number; connectH1: number } } | { cpuMicros: number };

async function serve(validation: boolean): Promise<void> {
  const logic = {
    ...unimplementedService(InventoryReservationService),
    getSku: (req: { sku: string }) => ({ sku: { code: req.sku, name: "Benchmark SKU" } }),
  };
  const impl = instrumentService(
    InventoryReservationService,
    validation ? validateService(InventoryReservationService, logic) : logic,
    { logger: createLogger("bench", "silent"), metrics: createMetrics("bench"), stopping: new AbortController().signal },
  );
  const grpcServer = new grpc.Server();
  addServiceImpl(grpcServer, InventoryReservationService, impl);
  const grpcJs = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const handler = connectNodeAdapter({ routes: (router) => router.service(InventoryReservationService, impl) });
  const h2 = http2.createServer(handler).listen(0, "127.0.0.1");
  const h1 = http.createServer(handler).listen(0, "127.0.0.1");
  await Promise.all([once(h2, "listening"), once(h1, "listening")]);
  const port = (s: http.Server | http2.Http2Server) => (s.address() as { port: number }).port;
  process.send!({ ports: { grpcJs, connectH2: port(h2), connectH1: port(h1) } } satisfies ServerMessage);
  process.on("message", () => {
    const cpu = process.cpuUsage();
    process.send!({ cpuMicros: cpu.user + cpu.system } satisfies ServerMessage);
  });
}

async function serverCpu(child: ChildProcess): Promise<number> {
  child.send("cpu");
  const [message] = (await once(child, "message")) as [ServerMessage];
  if (!("cpuMicros" in message)) throw new Error("unexpected message");
  return message.cpuMicros;
}

async function drive(call: () => Promise<unknown>, calls: number, concurrency: number): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < calls) await call();
    }),
  );
  return performance.now() - started;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      calls: { type: "string", default: "4000" },
      concurrency: { type: "string", default: "16" },
      rounds: { type: "string", default: "5" },
      "without-validation": { type: "boolean", default: false },
    },
  });
  const validation = !values["without-validation"];
  const calls = Number(values.calls);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const child = fork(new URL(import.meta.url).pathname, ["--serve", ...(validation ? ["--validate"] : [])]);
  const [ready] = (await once(child, "message")) as [ServerMessage];
  if (!("ports" in ready)) throw new Error("server did not report its ports");
  const { ports } = ready;

  const grpcJsClient = createGrpcJsClient(InventoryReservationService, `127.0.0.1:${ports.grpcJs}`);
  const h2Client = createClient(InventoryReservationService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.connectH2}` }));
  const h1Client = createClient(InventoryReservationService, createConnectTransport({ baseUrl: `http://127.0.0.1:${ports.connectH1}`, httpVersion: "1.1" }));
  const transports = {
    "grpc-js server, gRPC over HTTP/2 (grpc-js client)": () => grpcJsClient.getSku({ sku: "BENCH-1" }),
    "connect-node server, gRPC over HTTP/2 (Connect gRPC client)": () => h2Client.getSku({ sku: "BENCH-1" }),
    "connect-node server, Connect over HTTP/1.1 (Connect client)": () => h1Client.getSku({ sku: "BENCH-1" }),
  };
  const samples: Record<string, { cpuPerCall: number[]; callsPerSecond: number[] }> = {};
  for (const [name, call] of Object.entries(transports)) {
    await drive(call, 500, concurrency); // warm-up: JIT, connections
    samples[name] = { cpuPerCall: [], callsPerSecond: [] };
  }
  for (let round = 0; round < rounds; round++) {
    for (const [name, call] of Object.entries(transports)) {
      const before = await serverCpu(child);
      const elapsedMs = await drive(call, calls, concurrency);
      const after = await serverCpu(child);
      samples[name].cpuPerCall.push((after - before) / calls / 1000);
      samples[name].callsPerSecond.push((calls / elapsedMs) * 1000);
    }
  }
  grpcJsClient.close();
  child.kill();

  const baseline = median(samples[Object.keys(transports)[0]].cpuPerCall);
  const rows = Object.entries(samples).map(([name, s]) => ({
    transport: name,
    serverCpuMsPerCall: Number(median(s.cpuPerCall).toFixed(3)),
    ratioToGrpcJs: Number((median(s.cpuPerCall) / baseline).toFixed(2)),
    callsPerSecond: Math.round(median(s.callsPerSecond)),
  }));
  const result = { benchmark: "transport-overhead", date: new Date().toISOString(), node: process.version, calls, concurrency, rounds, validation, rows };
  await mkdir(new URL("../results/", import.meta.url), { recursive: true });
  await writeFile(new URL("../results/transport-overhead.json", import.meta.url), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`calls=${calls} concurrency=${concurrency} rounds=${rounds} validation=${validation} (medians)\n`);
  for (const r of rows) {
    process.stdout.write(`${r.transport.padEnd(62)} ${r.serverCpuMsPerCall.toFixed(3)} ms CPU/call  x${r.ratioToGrpcJs.toFixed(2)}  ${r.callsPerSecond} calls/s\n`);
  }
}

if (process.argv.includes("--serve")) await serve(process.argv.includes("--validate"));
else await main();
