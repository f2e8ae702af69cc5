import { pino, type Logger, type LevelWithSilent } from "pino";

export type { Logger } from "pino";

/**
 * The one logger: pino, JSON lines on stdout. Every line carries the service
 * name and process id so that interleaved output of replicas stays readable.
 */
export function createLogger(service: string, level: LevelWithSilent = "info"): Logger {
  return pino({
    name: service,
    level,
    base: { service, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.err },
  });
}

/** Routes Knex's own warnings (pool errors, deprecations) into the service log. */
export function knexLog(logger: Logger) {
  return {
    warn: (message: unknown) => logger.warn({ knex: message }, "knex warning"),
    error: (message: unknown) => logger.error({ knex: message }, "knex error"),
    deprecate: (method: string, alternative: string) => logger.warn({ method, alternative }, "knex deprecation"),
    debug: () => undefined,
  };
}
