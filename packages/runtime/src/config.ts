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

/** Field builders for environment variables; each gives a precise message. */
export const envVar = {
  port: (fallback: number) =>
    z.coerce
      .number({ error: "must be a port number" })
      .int("must be an integer port")
      .min(0, "must be between 0 and 65535 (0 picks a free port)")
      .max(65535, "must be between 0 and 65535 (0 picks a free port)")
      .default(fallback),
  host: (fallback: string) => z.string().min(1, "must not be empty").default(fallback),
  positiveInt: (fallback: number, max = Number.MAX_SAFE_INTEGER) =>
    z.coerce
      .number({ error: "must be a number" })
      .int("must be an integer")
      .positive("must be greater than 0")
      .max(max, `must be at most ${max}`)
      .default(fallback),
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
  NODE_ENV: z.enum(["development", "production", "test"], { error: "must be development, production or test" }).default("development"),
  DATABASE_URL: envVar.databaseUrl(),
  DATABASE_POOL_MAX: envVar.positiveInt(10, 1000),
  /** How long start-up waits for the database before giving up. */
  DATABASE_CONNECT_TIMEOUT_MS: envVar.positiveInt(30_000, 600_000),
  LOG_LEVEL: envVar.logLevel(),
  SHUTDOWN_GRACE_MS: envVar.positiveInt(10_000, 600_000),
};
