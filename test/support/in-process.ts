import { Writable } from "node:stream";
import { pino } from "pino";
import type { ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import {
  bind,
  createMetrics,
  instrumentService,
  startGrpcServer,
  startHttpServer,
  unimplementedService,
  type RunningGrpcServer,
  type RunningHttpServer,
} from "@holdfast/runtime";

export interface InProcessServers {
  grpc: RunningGrpcServer;
  http: RunningHttpServer;
  grpcAddress: string;
  httpUrl: string;
  /** Every log line written so far, parsed. */
  logs: Record<string, unknown>[];
  /** What a service's stop() does: streams end, then both ports drain. */
  stop(graceMs: number): Promise<void>;
}

/**
 * Both transports in this process over a hand-made implementation, assembled
 * the way the services assemble theirs (instrumented once, served twice), so a
 * test can make an RPC slow, fail or stream and watch what clients and logs see.
 */
export async function startInProcess(
  methods: Partial<ServiceImpl<typeof InventoryReservationService>>,
  /** Layers between instrumentation and the methods, e.g. authorizeService. */
  wrap: (impl: ServiceImpl<typeof InventoryReservationService>) => ServiceImpl<typeof InventoryReservationService> = (impl) => impl,
): Promise<InProcessServers> {
  const logs: Record<string, unknown>[] = [];
  const logger = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  );
  const stopping = new AbortController();
  const impl = instrumentService(
    InventoryReservationService,
    wrap({ ...unimplementedService(InventoryReservationService), ...methods }),
    { logger, metrics: createMetrics("test"), stopping: stopping.signal },
  );
  const grpc = await startGrpcServer({
    host: "127.0.0.1",
    port: 0,
    services: [bind(InventoryReservationService, impl)],
    reflection: false,
    maxMessageBytes: 1024 * 1024,
    logger,
  });
  const http = await startHttpServer({
    host: "127.0.0.1",
    port: 0,
    logger,
    registry: createMetrics("test-http").registry,
    isServing: () => !stopping.signal.aborted,
    handler: connectNodeAdapter({ routes: (router) => router.service(InventoryReservationService, impl) }),
  });
  return {
    grpc,
    http,
    grpcAddress: `127.0.0.1:${grpc.port}`,
    httpUrl: `http://127.0.0.1:${http.port}`,
    logs,
    async stop(graceMs) {
      stopping.abort();
      await Promise.all([grpc.stop(graceMs), http.stop(graceMs)]);
    },
  };
}
