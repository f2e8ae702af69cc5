#!/usr/bin/env node
// The load of `npm run bench`, in a process of its own (so that the service's CPU
// can be told apart from the load's): `--concurrency` closed-loop workers over one
// @grpc/grpc-js channel, each making single-unit CreateHold calls for a SKU drawn
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
import { InventoryReservationService, LockingStrategy } from "@holdfast/contracts";
import * as grpc from "@grpc/grpc-js";
import { DEFAULT_MAX_CONCURRENT_STREAMS, createGrpcJsClient } from "@holdfast/runtime";
import { benchCaller } from "./auth.js";
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
const clients = Array.from({ length: Math.ceil(concurrency / DEFAULT_MAX_CONCURRENT_STREAMS) }, () =>
  createGrpcJsClient(InventoryReservationService, values.target!, grpc.credentials.createInsecure(), { ...benchCaller, "grpc.use_local_subchannel_pool": 1 }),
);
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
  async (worker, i) => {
    try {
      await clients[worker % clients.length]!.createHold({
        requestId: `${values.run}-${worker}-${i}`,
        customerId: `c${worker}`,
        lines: [{ sku: skuCode(Math.floor(Math.random() * skus)), quantity: 1 }],
        lockingStrategy: strategy,
        ttl: { seconds: 3600n },
      });
      return "OK";
    } catch (err) {
      return refusalReason(err);
    }
  },
);
for (const client of clients) client.close();
emit({ result: { ...result, cpuMicros: cpuAtEnd - cpuAtStart } });
