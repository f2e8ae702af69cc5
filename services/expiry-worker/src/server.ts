import { ExpiryWorkerService } from "@holdfast/contracts";
import { Admission, bind, createMetrics, knexLog, instrumentService, startGrpcServer, startHttpServer, validateService, type Logger } from "@holdfast/runtime";
import { createKnex, assertDatabaseReady } from "@holdfast/schema";
import { authorizeService, createAuthenticator } from "@holdfast/core";
import type { ExpiryWorkerConfig } from "./config.js";
import { WorkerState, type WorkerDeps } from "./core/context.js";
import { createWorkerMetrics } from "./core/metrics.js";
import { every } from "./core/periodic.js";
import * as reconciliation from "./core/reconciliation.js";
import * as replicas from "./core/replicas.js";
import * as retention from "./core/retention.js";
import * as snapshots from "./core/snapshots.js";
import { ExpirySweeper } from "./core/sweeper.js";
import { createExpiryWorkerService } from "./service.js";

export interface RunningExpiryWorker {
  /** Where it listens, for the "ready" log line. */
  addresses: { grpc: string; http: string; workerId: string };
  stop(): Promise<void>;
}

/**
 * The worker process: the expiry sweeper (woken by LISTEN/NOTIFY), the periodic
 * jobs (heartbeat, scheduled reconciliation and snapshots, retention), its
 * operator API on gRPC (with health and reflection) and Prometheus metrics on a
 * small HTTP port. Any number may run at once: all coordination goes through the
 * database (SKIP LOCKED claims, advisory locks, leases).
 */
export async function startExpiryWorker(config: ExpiryWorkerConfig, logger: Logger): Promise<RunningExpiryWorker> {
  const db = createKnex({ ...config.database, applicationName: `holdfast-expiry-worker:${config.workerId}`, log: knexLog(logger) });
  await assertDatabaseReady(db, { timeoutMs: config.database.connectTimeoutMs, logger });

  const metrics = createMetrics("expiry-worker");
  const settings = config.worker;
  const deps: WorkerDeps = { db, settings, logger, state: new WorkerState(settings.expiryLagWindowMs), metrics: createWorkerMetrics(metrics.registry) };
  const stopping = new AbortController();
  const signal = stopping.signal;

  await replicas.register(deps);
  const sweeper = new ExpirySweeper(deps, { ...config.database, applicationName: `holdfast-expiry-worker:${config.workerId}:listen` });
  const loops = [
    sweeper.start(signal),
    every(settings.heartbeatIntervalMs, "heartbeat", () => replicas.heartbeat(deps), { logger, signal, firstDelayMs: settings.heartbeatIntervalMs }),
    every(settings.retentionIntervalMs, "retention", () => retention.prune(deps), { logger, signal }),
    every(settings.heartbeatIntervalMs, "scheduled snapshots", () => snapshots.takeScheduledSnapshotIfDue(deps), { logger, signal }),
    every(settings.heartbeatIntervalMs, "scheduled reconciliation", () => reconciliation.startScheduledRunIfDue(deps, signal), { logger, signal }),
  ];

  const authenticator = createAuthenticator(config.auth, logger);
  const admission = new Admission(config.admission, logger, metrics.registry);
  // Outermost first: instrument (log, metrics, error mapping, admission of unary calls), authenticate and authorize,
  // validate the request, then the logic.
  const impl = instrumentService(ExpiryWorkerService, authorizeService(ExpiryWorkerService, validateService(ExpiryWorkerService, createExpiryWorkerService(deps, sweeper)), authenticator), {
    logger,
    metrics,
    stopping: signal,
    admission,
  });
  const grpc = await startGrpcServer({
    ...config.grpc,
    services: [bind(ExpiryWorkerService, impl)],
    maxMessageBytes: 4 * 1024 * 1024,
    ...config.limits,
    logger,
  });
  const http = await startHttpServer({
    ...config.http,
    requestReceiveTimeoutMs: config.limits.requestReceiveTimeoutMs,
    logger,
    registry: metrics.registry,
    isServing: () => !signal.aborted,
  });
  return {
    addresses: { grpc: `${config.grpc.host}:${grpc.port}`, http: `http://${config.http.host}:${http.port}`, workerId: config.workerId },
    async stop() {
      // Refuse new calls and stop the loops (each finishes its current transaction),
      // end this replica's reconciliation runs, then release the database.
      stopping.abort();
      await Promise.all([grpc.stop(config.shutdownGraceMs), http.stop(config.shutdownGraceMs), ...loops]);
      admission.close();
      await sweeper.drain();
      await reconciliation.stopRuns(deps);
      await replicas.deregister(deps).catch((err: unknown) => logger.warn({ err }, "could not remove this replica's heartbeat"));
      await db.destroy();
    },
  };
}
