import { hostname } from "node:os";
import { z } from "zod";
import { admissionLimits, authEnv, authSettings, checkAuthEnv, commonEnv, databaseSettings, envVar, loadConfig, serverLimits, serverLimitsEnv } from "@holdfast/runtime";
import { IDEMPOTENCY_WINDOW_DEFAULT_MS } from "@holdfast/schema";
import { checkHoldTermsEnv, holdTermSettings, holdTermsEnv } from "@holdfast/core";
import type { WorkerSettings } from "./core/context.js";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

const environment = z
  .object({
    ...commonEnv,
    ...authEnv,
    ...serverLimitsEnv,
    WORKER_GRPC_HOST: envVar.host("0.0.0.0"),
    WORKER_GRPC_PORT: envVar.port(50052),
    WORKER_HTTP_HOST: envVar.host("0.0.0.0"),
    WORKER_HTTP_PORT: envVar.port(9464),
    WORKER_ID: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{1,64}$/, "must be 1-64 letters, digits, '.', '_', ':' or '-'")
      .default(`${hostname()}-${process.pid}`.slice(0, 64)),
    GRPC_REFLECTION: envVar.boolean(true),
    // Expiry (docs/worker.md).
    EXPIRY_BATCH_SIZE: envVar.positiveInt(500, 10_000),
    EXPIRY_MAX_SLEEP_MS: envVar.positiveInt(1_000, 10 * MINUTE),
    EXPIRY_LAG_WINDOW_MS: envVar.positiveInt(5 * MINUTE, DAY),
    // Reconciliation: scheduled runs (0 = none), and the lease a running run renews.
    RECONCILIATION_INTERVAL_MS: envVar.intervalOrOff(60 * MINUTE, 7 * DAY),
    RECONCILIATION_SCHEDULED_MODE: z.enum(["CHECK", "REPAIR"], { error: "must be CHECK or REPAIR" }).default("CHECK"),
    RECONCILIATION_LEASE_MS: envVar.positiveInt(30_000, 60 * MINUTE),
    // Snapshots (0 = none scheduled) and retention.
    SNAPSHOT_INTERVAL_MS: envVar.intervalOrOff(5 * MINUTE, 7 * DAY),
    SNAPSHOT_RETENTION_MS: envVar.positiveInt(7 * DAY, 3650 * DAY),
    RETENTION_INTERVAL_MS: envVar.positiveInt(10 * MINUTE, DAY),
    IDEMPOTENCY_WINDOW_MS: envVar.positiveInt(IDEMPOTENCY_WINDOW_DEFAULT_MS, 30 * DAY),
    HEARTBEAT_INTERVAL_MS: envVar.positiveInt(10_000, 60_000),
    // Hold terms of the holds the worker's waitlist promotions create: the same settings,
    // names and defaults as the reservation-service's (set them alike on both).
    ...holdTermsEnv,
  })
  .superRefine((env, ctx) => {
    checkAuthEnv(env, ctx);
    checkHoldTermsEnv(env, ctx);
    if (env.RECONCILIATION_LEASE_MS < 3 * env.HEARTBEAT_INTERVAL_MS) {
      ctx.addIssue({ code: "custom", path: ["RECONCILIATION_LEASE_MS"], message: "must be at least 3 x HEARTBEAT_INTERVAL_MS (the lease is renewed at every heartbeat)" });
    }
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    logLevel: env.LOG_LEVEL,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    auth: authSettings(env),
    workerId: env.WORKER_ID,
    database: databaseSettings(env),
    grpc: { host: env.WORKER_GRPC_HOST, port: env.WORKER_GRPC_PORT, reflection: env.GRPC_REFLECTION },
    http: { host: env.WORKER_HTTP_HOST, port: env.WORKER_HTTP_PORT },
    limits: serverLimits(env),
    admission: admissionLimits(env),
    worker: {
      workerId: env.WORKER_ID,
      expiryBatchSize: env.EXPIRY_BATCH_SIZE,
      expiryMaxSleepMs: env.EXPIRY_MAX_SLEEP_MS,
      expiryLagWindowMs: env.EXPIRY_LAG_WINDOW_MS,
      reconciliationIntervalMs: env.RECONCILIATION_INTERVAL_MS,
      reconciliationScheduledMode: env.RECONCILIATION_SCHEDULED_MODE,
      reconciliationLeaseMs: env.RECONCILIATION_LEASE_MS,
      snapshotIntervalMs: env.SNAPSHOT_INTERVAL_MS,
      snapshotRetentionMs: env.SNAPSHOT_RETENTION_MS,
      retentionIntervalMs: env.RETENTION_INTERVAL_MS,
      idempotencyWindowMs: env.IDEMPOTENCY_WINDOW_MS,
      heartbeatIntervalMs: env.HEARTBEAT_INTERVAL_MS,
      holdTerms: holdTermSettings(env),
    } satisfies WorkerSettings,
  }));

export type ExpiryWorkerConfig = z.output<typeof environment>;

/** Reads and validates the expiry-worker's environment (see README, "Configuration"). */
export function loadExpiryWorkerConfig(env: NodeJS.ProcessEnv = process.env): ExpiryWorkerConfig {
  return loadConfig(environment, env);
}
