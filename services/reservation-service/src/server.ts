import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { bind, createMetrics, knexLog, instrumentService, startGrpcServer, startHttpServer, type Logger } from "@holdfast/runtime";
import { createKnex, assertDatabaseReady } from "@holdfast/schema";
import type { ReservationServiceConfig } from "./config.js";
import { ExpiryAnnouncer } from "./core/expiry-announcer.js";
import { createInventoryReservationService } from "./service.js";

export interface RunningReservationService {
  /** Where it listens, for the "ready" log line. */
  addresses: { grpc: string; http: string; grpcTransport: string; reflection: boolean };
  stop(): Promise<void>;
}

/**
 * The composition root: one implementation of InventoryReservationService,
 * served over gRPC (grpc-js, with health and reflection) and over
 * Connect / gRPC-Web (connect-node, with CORS) for browsers.
 */
export async function startReservationService(config: ReservationServiceConfig, logger: Logger): Promise<RunningReservationService> {
  const db = createKnex({ ...config.database, applicationName: "holdfast-reservation-service", log: knexLog(logger) });
  await assertDatabaseReady(db, { timeoutMs: config.database.connectTimeoutMs, logger });

  const metrics = createMetrics("reservation-service");
  const stopping = new AbortController();
  const impl = instrumentService(InventoryReservationService, createInventoryReservationService({ db, settings: config.reservations, logger, expiry: new ExpiryAnnouncer(db, logger) }), {
    logger,
    metrics,
    stopping: stopping.signal,
  });

  const grpc = await startGrpcServer({
    ...config.grpc,
    services: [bind(InventoryReservationService, impl)],
    maxMessageBytes: config.maxMessageBytes,
    logger,
  });
  const http = await startHttpServer({
    ...config.http,
    logger,
    registry: metrics.registry,
    isServing: () => !stopping.signal.aborted,
    handler: connectNodeAdapter({
      routes: (router) => router.service(InventoryReservationService, impl),
      readMaxBytes: config.maxMessageBytes,
    }),
  });

  return {
    addresses: {
      grpc: `${config.grpc.host}:${grpc.port}`,
      http: `http://${config.http.host}:${http.port}`,
      grpcTransport: config.grpc.tls ? "TLS" : "plaintext",
      reflection: config.grpc.reflection,
    },
    async stop() {
      // Refuse new work, let calls in flight finish, end streams, then release the pool.
      stopping.abort();
      await Promise.all([grpc.stop(config.shutdownGraceMs), http.stop(config.shutdownGraceMs)]);
      await db.destroy();
    },
  };
}
