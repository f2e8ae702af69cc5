import type { LevelWithSilent } from "pino";
import { ConfigError } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { exitOnShutdownSignal } from "./shutdown.js";

/** Exit status for a configuration the process cannot run with (sysexits EX_CONFIG). */
export const EXIT_CONFIG = 78;

/**
 * The `main` of a Holdfast process: validate the configuration (printing every
 * problem and exiting with EX_CONFIG if it is bad), start, log one "ready" line
 * with where it listens, and stop gracefully on SIGTERM/SIGINT.
 */
export async function runService<C extends { logLevel: LevelWithSilent }>(
  name: string,
  loadConfig: () => C,
  start: (config: C, logger: Logger) => Promise<{ stop(): Promise<void>; addresses: Record<string, unknown> }>,
): Promise<void> {
  let config: C;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${name}: ${err.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  const logger = createLogger(name, config.logLevel);
  try {
    const running = await start(config, logger);
    exitOnShutdownSignal(logger, () => running.stop());
    // Only now: supervisors and tests wait for this line, and may signal at once.
    logger.info(running.addresses, "ready");
  } catch (err) {
    logger.fatal({ err }, "could not start");
    process.exit(1);
  }
}
