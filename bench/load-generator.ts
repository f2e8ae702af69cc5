#!/usr/bin/env node
// The load of `npm run bench`, in a process of its own (so that the service's CPU
// can be told apart from the load's): `--concurrency` closed-loop workers over
// @grpc/grpc-js channels (one per 100 workers), each making single-unit CreateHold calls for a SKU drawn
// uniformly at random from `--skus` codes (SKU_PREFIX + 5 digits; 1 = one hot SKU),
// with a fresh request id each. After `--warmup` seconds it counts the calls that
// end within the next `--seconds`.
//
// Its stdout is JSON lines for the harness: {"window":"start"} and {"window":"end"}
// as the measured window opens and closes (the harness reads the service's CPU
// then), and last {"result": {...}}: holds/s, p50/p99, outcomes by reason, and this
// process's own CPU over the window.
//
//   node bench/dist/load-generator.js --target 127.0.0.1:50051 --skus 1 --concurrency 16 \
//     --strategy PESSIMISTIC [--seconds 10] [--warmup 2] [--run r1]
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { CreateHoldRequestSchema, InventoryReservationService, LockingStrategy } from "@holdfast/contracts";
import * as grpc from "@grpc/grpc-js";
import { callerRole } from "@holdfast/dev-stack";
import { DEFAULT_MAX_CONCURRENT_STREAMS, connectErrorFromGrpc } from "@holdfast/runtime";
import { benchTokens } from "./auth.js";
import { drive, refusalReason } from "./lib/drive.js";
import { skuCode } from "./scenarios.js";

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    skus: { type: "string", default: "1" },
    concurrency: { type: "string", default: "16" },
    strategy: { type: "string", default: "PESSIMISTIC" },
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    run: { type: "string", default: "load" },
  },
});
if (values.target === undefined) throw new Error("--target host:port is required");
const strategy = LockingStrategy[values.strategy as keyof typeof LockingStrategy];
if (strategy === undefined) throw new Error(`unknown --strategy ${values.strategy}`);
const skus = Number(values.skus);
const emit = (line: unknown) => process.stdout.write(`${JSON.stringify(line)}\n`);

const concurrency = Number(values.concurrency);
// One HTTP/2 connection per 100 workers: a connection carries at most 100 calls at once
// (the server's default), and more workers on one would queue in the client. A local
// subchannel pool keeps grpc-js from sharing one connection between the clients.
// Without channelz's per-call bookkeeping (nothing reads it here) and without
// transparent retries (a call is made once; grpc-js would otherwise keep each
// request's bytes for a retry that a closed loop never needs).
const CHANNEL_OPTIONS = { "grpc.use_local_subchannel_pool": 1, "grpc.enable_channelz": 0, "grpc.enable_retries": 0 };
const clients = Array.from(
  { length: Math.ceil(concurrency / DEFAULT_MAX_CONCURRENT_STREAMS) },
  () => new grpc.Client(values.target!, grpc.credentials.createInsecure(), CHANNEL_OPTIONS),
);

// The calls are made as cheaply as grpc-js allows, since this process takes its CPU
// from the same cores as the service and PostgreSQL (pgbench, the ceiling's client,
// costs 20-60 µs a transaction): the bare client (no interceptor), the request encoded
// once, and the response not decoded (a granted hold is its OK status; a refusal's
// reason is read from the status details).
const createHold = InventoryReservationService.method.createHold;
const path = `/${InventoryReservationService.typeName}/${createHold.name}`;
const authorization = `Bearer ${benchTokens[callerRole(createHold)]}`;
const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const undecoded = () => true;

function hold(client: grpc.Client, request: Uint8Array): Promise<string> {
  return new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", authorization);
    client.makeUnaryRequest(path, asBuffer, undecoded, request, metadata, {}, (err) => resolve(err ? refusalReason(connectErrorFromGrpc(err)) : "OK"));
  });
}

let cpuAtStart = 0;
let cpuAtEnd = 0;
const result = await drive(
  {
    concurrency,
    seconds: Number(values.seconds),
    warmupSeconds: Number(values.warmup),
    onWindow: (edge) => {
      const cpu = process.cpuUsage();
      if (edge === "start") cpuAtStart = cpu.user + cpu.system;
      else cpuAtEnd = cpu.user + cpu.system;
      emit({ window: edge });
    },
  },
  (worker, i) =>
    hold(
      clients[worker % clients.length]!,
      toBinary(
        CreateHoldRequestSchema,
        create(CreateHoldRequestSchema, {
          requestId: `${values.run}-${worker}-${i}`,
          customerId: `c${worker}`,
          lines: [{ sku: skuCode(Math.floor(Math.random() * skus)), quantity: 1 }],
          lockingStrategy: strategy,
          ttl: { seconds: 3600n },
        }),
      ),
    ),
);
for (const client of clients) client.close();
emit({ result: { ...result, cpuMicros: cpuAtEnd - cpuAtStart } });
