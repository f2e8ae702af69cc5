import { z } from "zod";

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
    const shown = given === undefined ? "not set" : `got ${JSON.stringify(given)}`;
    return `${variable}: ${issue.message} (${shown})`;
  });
  throw new ConfigError(problems);
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
  /** Milliseconds between runs of a periodic job; 0 switches the job off. */
  intervalOrOff: (fallback: number, max: number) =>
    decimal(fallback, "must be a whole number of milliseconds (digits only; 0 = off)").pipe(
      z.number().max(max, `must be at most ${max}`),
    ),
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
  optionalFile: () =>
    z
      .string()
      .optional()
      .transform((v) => (v === undefined || v === "" ? undefined : v)),
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
