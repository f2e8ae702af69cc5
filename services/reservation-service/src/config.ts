import { z } from "zod";
import { admissionLimits, authEnv, authSettings, checkAuthEnv, commonEnv, databaseSettings, envVar, loadConfig, serverLimits, serverLimitsEnv } from "@holdfast/runtime";
import { IDEMPOTENCY_WINDOW_DEFAULT_MS, LINES_PER_REQUEST_MAX_DEFAULT } from "@holdfast/schema";
import { DEFAULT_STREAM_LIMITS, checkHoldTermsEnv, holdTermSettings, holdTermsEnv } from "@holdfast/core";
import type { ReservationSettings } from "./core/settings.js";

const MiB = 1024 * 1024;

const environment = z
  .object({
    ...commonEnv,
    ...authEnv,
    ...serverLimitsEnv,
    GRPC_HOST: envVar.host("0.0.0.0"),
    GRPC_PORT: envVar.port(50051),
    HTTP_HOST: envVar.host("0.0.0.0"),
    HTTP_PORT: envVar.port(8080),
    CORS_ALLOWED_ORIGINS: envVar.list().superRefine((origins, ctx) => {
      for (const origin of origins) {
        if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
          ctx.addIssue({ code: "custom", message: `"${origin}" is not an origin like https://shop.example.com` });
        }
      }
    }),
    GRPC_REFLECTION: envVar.boolean(true),
    GRPC_TLS_CERT_FILE: envVar.optionalFile(),
    GRPC_TLS_KEY_FILE: envVar.optionalFile(),
    MAX_MESSAGE_BYTES: envVar.positiveInt(4 * MiB, 64 * MiB),
    // Open Watch* streams per principal on this replica (docs/security.md).
    MAX_STREAMS_PER_CUSTOMER: envVar.positiveInt(DEFAULT_STREAM_LIMITS.perCustomer, 10_000),
    MAX_STREAMS_PER_CALLER: envVar.positiveInt(DEFAULT_STREAM_LIMITS.perCaller, 100_000),
    // Reservation behaviour (see docs/concurrency.md and the contract's "unless configured").
    DEFAULT_LOCKING_STRATEGY: z.enum(["PESSIMISTIC", "OPTIMISTIC"], { error: "must be PESSIMISTIC or OPTIMISTIC" }).default("PESSIMISTIC"),
    OPTIMISTIC_MAX_ATTEMPTS: envVar.positiveInt(8, 100),
    OPTIMISTIC_BACKOFF_BASE_MS: envVar.positiveInt(2, 10_000),
    OPTIMISTIC_BACKOFF_MAX_MS: envVar.positiveInt(100, 60_000),
    MAX_LINES_PER_REQUEST: envVar.positiveInt(LINES_PER_REQUEST_MAX_DEFAULT, 1_000),
    ...holdTermsEnv,
    IDEMPOTENCY_WINDOW_MS: envVar.positiveInt(IDEMPOTENCY_WINDOW_DEFAULT_MS, 30 * 24 * 3_600_000),
    // The request log of CreateHold attempts, for the flash-sale report (docs/fairness.md).
    REQUEST_LOG: envVar.boolean(true),
    OVERDUE_HOLD_GRACE_MS: envVar.positiveInt(60_000, 24 * 3_600_000),
    // Holds per batch transaction of a GROUP_COMMIT SKU (docs/concurrency.md: 256 measured best).
    HOT_SKU_MAX_BATCH: envVar.positiveInt(256, 1_000),
    // Batch transactions of one GROUP_COMMIT SKU in flight at once per process (docs/concurrency.md).
    HOT_SKU_BATCHES_IN_FLIGHT: envVar.positiveInt(2, 16),
  })
  .superRefine((env, ctx) => {
    checkAuthEnv(env, ctx);
    if ((env.GRPC_TLS_CERT_FILE === undefined) !== (env.GRPC_TLS_KEY_FILE === undefined)) {
      const missing = env.GRPC_TLS_CERT_FILE === undefined ? "GRPC_TLS_CERT_FILE" : "GRPC_TLS_KEY_FILE";
      ctx.addIssue({ code: "custom", path: [missing], message: "must be set together with the other GRPC_TLS_* file" });
    }
    checkHoldTermsEnv(env, ctx);
    if (env.OPTIMISTIC_BACKOFF_BASE_MS > env.OPTIMISTIC_BACKOFF_MAX_MS) {
      ctx.addIssue({ code: "custom", path: ["OPTIMISTIC_BACKOFF_BASE_MS"], message: "must not exceed OPTIMISTIC_BACKOFF_MAX_MS" });
    }
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    logLevel: env.LOG_LEVEL,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    auth: authSettings(env),
    database: databaseSettings(env),
    grpc: {
      host: env.GRPC_HOST,
      port: env.GRPC_PORT,
      reflection: env.GRPC_REFLECTION,
      tls:
        env.GRPC_TLS_CERT_FILE !== undefined && env.GRPC_TLS_KEY_FILE !== undefined
          ? { certFile: env.GRPC_TLS_CERT_FILE, keyFile: env.GRPC_TLS_KEY_FILE }
          : undefined,
    },
    http: { host: env.HTTP_HOST, port: env.HTTP_PORT, allowedOrigins: env.CORS_ALLOWED_ORIGINS },
    maxMessageBytes: env.MAX_MESSAGE_BYTES,
    limits: serverLimits(env),
    // A hot SKU's batches gather up to HOT_SKU_MAX_BATCH calls each onto one connection.
    admission: admissionLimits(env, env.HOT_SKU_MAX_BATCH * env.HOT_SKU_BATCHES_IN_FLIGHT),
    requestLog: env.REQUEST_LOG,
    streamLimits: { perCustomer: env.MAX_STREAMS_PER_CUSTOMER, perCaller: env.MAX_STREAMS_PER_CALLER },
    reservations: {
      defaultLockingStrategy: env.DEFAULT_LOCKING_STRATEGY,
      lockTimeoutMs: env.LOCK_TIMEOUT_MS,
      optimisticMaxAttempts: env.OPTIMISTIC_MAX_ATTEMPTS,
      optimisticBackoffBaseMs: env.OPTIMISTIC_BACKOFF_BASE_MS,
      optimisticBackoffMaxMs: env.OPTIMISTIC_BACKOFF_MAX_MS,
      maxLinesPerRequest: env.MAX_LINES_PER_REQUEST,
      ...holdTermSettings(env),
      idempotencyWindowMs: env.IDEMPOTENCY_WINDOW_MS,
      overdueHoldGraceMs: env.OVERDUE_HOLD_GRACE_MS,
      hotSkuMaxBatch: env.HOT_SKU_MAX_BATCH,
      hotSkuBatchesInFlight: env.HOT_SKU_BATCHES_IN_FLIGHT,
    } satisfies ReservationSettings,
  }));

export type ReservationServiceConfig = z.output<typeof environment>;

/** Reads and validates the reservation-service's environment (see README, "Configuration"). */
export function loadReservationServiceConfig(env: NodeJS.ProcessEnv = process.env): ReservationServiceConfig {
  return loadConfig(environment, env);
}
