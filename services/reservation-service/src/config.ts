import { existsSync } from "node:fs";
import { z } from "zod";
import { commonEnv, envVar, loadConfig } from "@holdfast/runtime";

const MiB = 1024 * 1024;

const environment = z
  .object({
    ...commonEnv,
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
  })
  .superRefine((env, ctx) => {
    if ((env.GRPC_TLS_CERT_FILE === undefined) !== (env.GRPC_TLS_KEY_FILE === undefined)) {
      const missing = env.GRPC_TLS_CERT_FILE === undefined ? "GRPC_TLS_CERT_FILE" : "GRPC_TLS_KEY_FILE";
      ctx.addIssue({ code: "custom", path: [missing], message: "must be set together with the other GRPC_TLS_* file" });
    }
    for (const variable of ["GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE"] as const) {
      const file = env[variable];
      if (file !== undefined && !existsSync(file)) ctx.addIssue({ code: "custom", path: [variable], message: "file does not exist" });
    }
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    logLevel: env.LOG_LEVEL,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    database: { url: env.DATABASE_URL, poolMax: env.DATABASE_POOL_MAX, connectTimeoutMs: env.DATABASE_CONNECT_TIMEOUT_MS },
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
  }));

export type ReservationServiceConfig = z.output<typeof environment>;

/** Reads and validates the reservation-service's environment (see README, "Configuration"). */
export function loadReservationServiceConfig(env: NodeJS.ProcessEnv = process.env): ReservationServiceConfig {
  return loadConfig(environment, env);
}
