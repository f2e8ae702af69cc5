import { existsSync } from "node:fs";
import { z } from "zod";
import type { AdmissionLimits } from "./admission.js";
import { DEFAULT_MAX_CALL_WAIT_MS, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS } from "./limits.js";

/**
 * Thrown when the environment does not describe a valid configuration.
 * Its message lists every bad variable at once, so an operator fixes them in one go.
 */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/**
 * The one config loader: parses environment variables with a zod schema and
 * fails with every problem named (variable, rule, value given).
 */
export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv = process.env): z.output<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const variable = String(issue.path[0] ?? "(environment)");
    const given = env[variable];
    const shown = given === undefined ? "not set" : `got ${shownValue(variable, given)}`;
    return `${variable}: ${issue.message} (${shown})`;
  });
  throw new ConfigError(problems);
}

/** A variable's value as an error message may show it: secrets never, URLs without their password. */
function shownValue(variable: string, value: string): string {
  if (/SECRET|PASSWORD/.test(variable)) return `a value of ${value.length} characters (not shown)`;
  if (URL.canParse(value)) {
    const url = new URL(value);
    if (url.password !== "") {
      url.password = "***";
      return JSON.stringify(url.toString());
    }
  }
  return JSON.stringify(value);
}

/**
 * A whole number written in decimal digits. Not z.coerce.number: that would
 * read "" as 0 (a service silently on a random port), "0x50" as 80 and "1e6"
 * as a million.
 */
const decimal = (fallback: number, message: string) =>
  z
    .string()
    .regex(/^\d+$/, message)
    .default(String(fallback))
    .transform((v) => Number(v));

/** A whole number in decimal digits, or unset (its default then depends on other variables). */
const optionalDecimal = (message: string) =>
  z
    .string()
    .regex(/^\d+$/, message)
    .optional()
    .transform((v) => (v === undefined ? undefined : Number(v)));

/** Field builders for environment variables; each gives a precise message. */
export const envVar = {
  port: (fallback: number) =>
    decimal(fallback, "must be a port number (digits only)").pipe(
      z.number().max(65535, "must be between 0 and 65535 (0 picks a free port)"),
    ),
  host: (fallback: string) => z.string().min(1, "must not be empty").default(fallback),
  positiveInt: (fallback: number, max = Number.MAX_SAFE_INTEGER) =>
    decimal(fallback, "must be a whole number (digits only)").pipe(
      z.number().positive("must be greater than 0").max(max, `must be at most ${max}`),
    ),
  nonNegativeInt: (fallback: number, max: number, message = "must be a whole number (digits only)") =>
    decimal(fallback, message).pipe(z.number().max(max, `must be at most ${max}`)),
  /** A whole number from `min` to `max`, or unset: `undefined`, for a default computed from other variables. */
  optionalInt: (min: number, max: number) =>
    optionalDecimal("must be a whole number (digits only)").pipe(
      z.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`).optional(),
    ),
  /** Milliseconds between runs of a periodic job; 0 switches the job off. */
  intervalOrOff: (fallback: number, max: number) => envVar.nonNegativeInt(fallback, max, "must be a whole number of milliseconds (digits only; 0 = off)"),
  boolean: (fallback: boolean) =>
    z
      .enum(["true", "false", "1", "0", "yes", "no"], { error: "must be true or false" })
      .default(fallback ? "true" : "false")
      .transform((v) => v === "true" || v === "1" || v === "yes"),
  logLevel: () =>
    z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"], {
        error: "must be one of fatal, error, warn, info, debug, trace, silent",
      })
      .default("info"),
  databaseUrl: () =>
    z
      .string({ error: "is required (postgres://user:password@host:5432/database)" })
      .min(1, "is required (postgres://user:password@host:5432/database)")
      .refine((v) => /^postgres(ql)?:\/\//.test(v) && URL.canParse(v), "must be a postgres:// or postgresql:// URL"),
  /** A path to a file that must exist, or unset / empty. */
  optionalFile: () =>
    z
      .string()
      .optional()
      .transform((v) => (v === undefined || v === "" ? undefined : v))
      .refine((v) => v === undefined || existsSync(v), "file does not exist"),
  /** A comma-separated list; empty entries are dropped. */
  list: () =>
    z
      .string()
      .default("")
      .transform((v) =>
        v
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s.length > 0),
      ),
};

/** Variables every Holdfast process reads. */
export const commonEnv = {
  /** Free-form, as everywhere in Node; "production" turns on production-only checks. */
  NODE_ENV: z.string().default("development"),
  DATABASE_URL: envVar.databaseUrl(),
  DATABASE_POOL_MAX: envVar.positiveInt(10, 1000),
  /** How long start-up waits for the database before giving up. */
  DATABASE_CONNECT_TIMEOUT_MS: envVar.positiveInt(30_000, 600_000),
  /** Server-side statement_timeout of every database connection. */
  DATABASE_STATEMENT_TIMEOUT_MS: envVar.positiveInt(30_000, 3_600_000),
  /**
   * Server-side lock_timeout: the longest a statement waits for a row lock before the
   * call fails with ABORTED / LOCK_TIMEOUT (the PESSIMISTIC strategy's bound).
   */
  LOCK_TIMEOUT_MS: envVar.positiveInt(2_000, 600_000),
  LOG_LEVEL: envVar.logLevel(),
  SHUTDOWN_GRACE_MS: envVar.positiveInt(10_000, 600_000),
};

/**
 * Limits of the ports every Holdfast service serves (README, docs/security.md
 * "Resource limits"): HTTP/2 streams per gRPC connection, and how long a
 * request may take to arrive (gRPC and HTTP/1.1 ports alike).
 */
export const serverLimitsEnv = {
  GRPC_MAX_CONCURRENT_STREAMS: envVar.positiveInt(DEFAULT_MAX_CONCURRENT_STREAMS, 10_000),
  REQUEST_RECEIVE_TIMEOUT_MS: envVar.positiveInt(DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS, 600_000),
  // Admission control (admission.ts, docs/operations.md "Overload"): unary calls served
  // at once (default 2 x DATABASE_POOL_MAX, + HOT_SKU_MAX_BATCH x HOT_SKU_BATCHES_IN_FLIGHT in the reservation-service), calls that may wait for a slot (default
  // 2 x MAX_CALLS_IN_FLIGHT; 0 = none wait) and how long; beyond, UNAVAILABLE / OVERLOADED.
  MAX_CALLS_IN_FLIGHT: envVar.optionalInt(1, 100_000),
  MAX_CALLS_WAITING: envVar.optionalInt(0, 100_000),
  MAX_CALL_WAIT_MS: envVar.positiveInt(DEFAULT_MAX_CALL_WAIT_MS, 60_000),
};

/**
 * The admission limits of `serverLimitsEnv`. Two calls in flight per pooled
 * connection by default: one in its transaction while another is decoded,
 * authenticated or answered, so the pool stays busy without a queue in front of it;
 * plus `batched` calls that share one connection between them (the reservation-
 * service's hot-SKU batches: HOT_SKU_MAX_BATCH holds each, HOT_SKU_BATCHES_IN_FLIGHT batches).
 * Twice as many may wait: a burst is absorbed, and MAX_CALL_WAIT_MS, not the length
 * of the queue, bounds how long a call waits.
 */
export function admissionLimits(
  env: {
    DATABASE_POOL_MAX: number;
    MAX_CALLS_IN_FLIGHT?: number;
    MAX_CALLS_WAITING?: number;
    MAX_CALL_WAIT_MS: number;
  },
  batched = 0,
): AdmissionLimits {
  const maxInFlight = env.MAX_CALLS_IN_FLIGHT ?? 2 * env.DATABASE_POOL_MAX + batched;
  return { maxInFlight, maxWaiting: env.MAX_CALLS_WAITING ?? 2 * maxInFlight, maxWaitMs: env.MAX_CALL_WAIT_MS };
}

/** The settings of `serverLimitsEnv`, as startGrpcServer / startHttpServer take them. */
export function serverLimits(env: { GRPC_MAX_CONCURRENT_STREAMS: number; REQUEST_RECEIVE_TIMEOUT_MS: number }) {
  return { maxConcurrentStreams: env.GRPC_MAX_CONCURRENT_STREAMS, requestReceiveTimeoutMs: env.REQUEST_RECEIVE_TIMEOUT_MS };
}

/** The database settings of `commonEnv`, as every service passes them to createKnex. */
export function databaseSettings(env: {
  DATABASE_URL: string;
  DATABASE_POOL_MAX: number;
  DATABASE_CONNECT_TIMEOUT_MS: number;
  DATABASE_STATEMENT_TIMEOUT_MS: number;
  LOCK_TIMEOUT_MS: number;
}) {
  return {
    url: env.DATABASE_URL,
    poolMax: env.DATABASE_POOL_MAX,
    connectTimeoutMs: env.DATABASE_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: env.DATABASE_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: env.LOCK_TIMEOUT_MS,
  };
}

/** Where the key that verifies bearer tokens comes from (exactly one). */
export type VerificationKey =
  | { kind: "secret"; secret: string }
  | { kind: "public-key-file"; file: string }
  | { kind: "jwks-file"; file: string }
  /** Outside production only: a random HS256 secret kept in this file (created on first use). */
  | { kind: "development-secret-file"; file: string };

export interface AuthSettings {
  key: VerificationKey;
  issuer: string;
  audience: string;
  clockToleranceS: number;
}

/** RFC 7518 §3.2: an HS256 key must be at least as long as the hash. */
const MIN_SECRET_BYTES = 32;

/** Bearer-token settings, the same variables for every Holdfast service (docs/security.md). */
export const authEnv = {
  AUTH_JWT_SECRET: z
    .string()
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : v))
    .refine((v) => v === undefined || Buffer.byteLength(v) >= MIN_SECRET_BYTES, `must be at least ${MIN_SECRET_BYTES} bytes (e.g. openssl rand -base64 32)`),
  AUTH_JWT_PUBLIC_KEY_FILE: envVar.optionalFile(),
  AUTH_JWKS_FILE: envVar.optionalFile(),
  AUTH_ISSUER: z.string().min(1, "must not be empty").default("holdfast"),
  AUTH_AUDIENCE: z.string().min(1, "must not be empty").default("holdfast"),
  AUTH_CLOCK_TOLERANCE_S: envVar.nonNegativeInt(30, 300),
  AUTH_DEV_SECRET_FILE: z.string().min(1, "must not be empty").default(".holdfast/dev-jwt-secret"),
};

type AuthEnv = z.output<z.ZodObject<typeof authEnv>> & { NODE_ENV: string };

/** The key variables that are set. */
function keyVariables(env: AuthEnv): string[] {
  return (["AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_FILE"] as const).filter((k) => env[k] !== undefined);
}

/** Cross-variable rules of authEnv, for a config's superRefine (each key file's existence is its own field's rule). */
export function checkAuthEnv(env: AuthEnv, ctx: z.RefinementCtx): void {
  const keys = keyVariables(env);
  if (keys.length > 1) ctx.addIssue({ code: "custom", path: [keys[1]], message: `set only one of ${keys.join(", ")}` });
  if (keys.length === 0 && env.NODE_ENV === "production") {
    ctx.addIssue({
      code: "custom",
      path: ["AUTH_JWT_SECRET"],
      message: "a token verification key is required when NODE_ENV=production: set AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE",
    });
  }
}

export function authSettings(env: AuthEnv): AuthSettings {
  const key: VerificationKey =
    env.AUTH_JWT_SECRET !== undefined
      ? { kind: "secret", secret: env.AUTH_JWT_SECRET }
      : env.AUTH_JWT_PUBLIC_KEY_FILE !== undefined
        ? { kind: "public-key-file", file: env.AUTH_JWT_PUBLIC_KEY_FILE }
        : env.AUTH_JWKS_FILE !== undefined
          ? { kind: "jwks-file", file: env.AUTH_JWKS_FILE }
          : { kind: "development-secret-file", file: env.AUTH_DEV_SECRET_FILE };
  return { key, issuer: env.AUTH_ISSUER, audience: env.AUTH_AUDIENCE, clockToleranceS: env.AUTH_CLOCK_TOLERANCE_S };
}
