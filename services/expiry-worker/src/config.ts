import { hostname } from "node:os";
import { z } from "zod";
import { commonEnv, databaseSettings, envVar, loadConfig } from "@holdfast/runtime";

const environment = z
  .object({
    ...commonEnv,
    WORKER_GRPC_HOST: envVar.host("0.0.0.0"),
    WORKER_GRPC_PORT: envVar.port(50052),
    WORKER_HTTP_HOST: envVar.host("0.0.0.0"),
    WORKER_HTTP_PORT: envVar.port(9464),
    WORKER_ID: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{1,64}$/, "must be 1-64 letters, digits, '.', '_', ':' or '-'")
      .default(`${hostname()}-${process.pid}`.slice(0, 64)),
    GRPC_REFLECTION: envVar.boolean(true),
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    logLevel: env.LOG_LEVEL,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    workerId: env.WORKER_ID,
    database: databaseSettings(env),
    grpc: { host: env.WORKER_GRPC_HOST, port: env.WORKER_GRPC_PORT, reflection: env.GRPC_REFLECTION },
    http: { host: env.WORKER_HTTP_HOST, port: env.WORKER_HTTP_PORT },
  }));

export type ExpiryWorkerConfig = z.output<typeof environment>;

/** Reads and validates the expiry-worker's environment (see README, "Configuration"). */
export function loadExpiryWorkerConfig(env: NodeJS.ProcessEnv = process.env): ExpiryWorkerConfig {
  return loadConfig(environment, env);
}
