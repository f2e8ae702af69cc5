import { ExpiryWorkerService } from "@holdfast/contracts";
import { bind, createMetrics, knexLog, instrumentService, startGrpcServer, startHttpServer, type Logger } from "@holdfast/runtime";
import { createKnex, assertDatabaseReady } from "@holdfast/schema";
import type { ExpiryWorkerConfig } from "./config.js";
import { createExpiryWorkerService } from "./service.js";

export interface RunningExpiryWorker {
  /** Where it listens, for the "ready" log line. */
  addresses: { grpc: string; http: string; workerId: string };
  stop(): Promise<void>;
}

/**
 * The worker process: its operator API on gRPC (with health and reflection)
 * and Prometheus metrics on a small HTTP port. Any number may run at once:
 * all coordination goes through the database.
 */
export async function startExpiryWorker(config: ExpiryWorkerConfig, logger: Logger): Promise<RunningExpiryWorker> {
  const db = createKnex({ ...config.database, applicationName: `holdfast-expiry-worker:${config.workerId}`, log: knexLog(logger) });
  await assertDatabaseReady(db, { timeoutMs: config.database.connectTimeoutMs, logger });

  const metrics = createMetrics("expiry-worker");
  const stopping = new AbortController();
  const impl = instrumentService(ExpiryWorkerService, createExpiryWorkerService({ db, workerId: config.workerId }), {
    logger,
    metrics,
    stopping: stopping.signal,
  });
  const grpc = await startGrpcServer({
    ...config.grpc,
    services: [bind(ExpiryWorkerService, impl)],
    maxMessageBytes: 4 * 1024 * 1024,
    logger,
  });
  const http = await startHttpServer({
    ...config.http,
    logger,
    registry: metrics.registry,
    isServing: () => !stopping.signal.aborted,
  });
  return {
    addresses: { grpc: `${config.grpc.host}:${grpc.port}`, http: `http://${config.http.host}:${http.port}`, workerId: config.workerId },
    async stop() {
      stopping.abort();
      await Promise.all([grpc.stop(config.shutdownGraceMs), http.stop(config.shutdownGraceMs)]);
      await db.destroy();
    },
  };
}
