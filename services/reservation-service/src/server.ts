import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InventoryReservationService } from "@holdfast/contracts";
import { Admission, bind, createMetrics, exportCounts, knexLog, instrumentService, refuseUndecodableRequests, startGrpcServer, startHttpServer, validateService, type Logger } from "@holdfast/runtime";
import { createKnex, assertDatabaseReady } from "@holdfast/schema";
import { authorizeService, createAuthenticator } from "@holdfast/core";
import { dashboardPages } from "@holdfast/dashboard/pages";
import type { ReservationServiceConfig } from "./config.js";
import { ExpiryAnnouncer, InventoryAnnouncer } from "./core/announcers.js";
import { AttemptLog } from "./core/attempts.js";
import { RateLimitHints } from "./core/fairness-controls.js";
import { GroupCommit } from "./core/group-commit.js";
import { AvailabilityHub } from "./core/watch.js";
import { WaitlistHub } from "./core/waitlist-watch.js";
import { createInventoryReservationService } from "./service.js";

export interface RunningReservationService {
  /** Where it listens, for the "ready" log line. */
  addresses: { grpc: string; http: string; grpcTransport: string; reflection: boolean };
  stop(): Promise<void>;
}

/**
 * The composition root: one implementation of InventoryReservationService,
 * served over gRPC (grpc-js, with health and reflection) and over
 * Connect / gRPC-Web (connect-node, with CORS) for browsers, next to the
 * dashboard page.
 */
export async function startReservationService(config: ReservationServiceConfig, logger: Logger): Promise<RunningReservationService> {
  const db = createKnex({ ...config.database, applicationName: "holdfast-reservation-service", log: knexLog(logger) });
  await assertDatabaseReady(db, { timeoutMs: config.database.connectTimeoutMs, logger });

  const metrics = createMetrics("reservation-service");
  const admission = new Admission(config.admission, logger, metrics.registry);
  const stopping = new AbortController();
  const authenticator = createAuthenticator(config.auth, logger);
  const hub = new AvailabilityHub(db, config.database.url, logger);
  await hub.start();
  const waitlistHub = new WaitlistHub(db, hub, logger);
  const expiry = new ExpiryAnnouncer(db, logger);
  const inventory = new InventoryAnnouncer(db, logger, (skus) => hub.changed(skus));
  const attempts = new AttemptLog(db, logger, config.requestLog);
  const rateLimits = new RateLimitHints();
  const hotSku = new GroupCommit({ db, settings: config.reservations, logger, expiry, rateLimits });
  exportCounts(metrics.registry, "holdfast_hot_sku_batches_total", "Batch transactions of GROUP_COMMIT SKUs, committed or failed (then their holds took the normal path).", "outcome", () => hotSku.stats.batches);
  exportCounts(metrics.registry, "holdfast_hot_sku_holds_total", "Holds that joined a GROUP_COMMIT batch, by how it answered them (normal: handed to the normal path).", "answer", () => hotSku.stats.holds);
  const logic = createInventoryReservationService({
    db,
    settings: config.reservations,
    logger,
    expiry,
    inventory,
    attempts,
    rateLimits,
    hub,
    waitlistHub,
    hotSku,
  });
  // Outermost first: instrument (log, metrics, error mapping, admission of unary calls), authenticate and authorize
  // (and count streams), validate the request, then the logic.
  const impl = instrumentService(InventoryReservationService, authorizeService(InventoryReservationService, validateService(InventoryReservationService, logic), authenticator, config.streamLimits), {
    logger,
    metrics,
    stopping: stopping.signal,
    admission,
  });

  const grpc = await startGrpcServer({
    ...config.grpc,
    services: [bind(InventoryReservationService, impl)],
    maxMessageBytes: config.maxMessageBytes,
    ...config.limits,
    logger,
  });
  const http = await startHttpServer({
    ...config.http,
    requestReceiveTimeoutMs: config.limits.requestReceiveTimeoutMs,
    logger,
    registry: metrics.registry,
    isServing: () => !stopping.signal.aborted,
    // The dashboard (static files at /dashboard/; it calls the API below like any browser client).
    pages: dashboardPages(),
    handler: connectNodeAdapter({
      routes: (router) => {
        router.service(InventoryReservationService, impl);
        // Undecodable protobuf is INVALID_ARGUMENT here too, as on the gRPC port (connect-es says INTERNAL).
        refuseUndecodableRequests(router);
      },
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
      admission.close();
      // Announce what the last calls committed, and write their attempts, before the pool closes.
      await Promise.all([expiry.drain(), inventory.drain(), attempts.drain()]);
      await waitlistHub.close();
      await hub.close();
      await db.destroy();
    },
  };
}
