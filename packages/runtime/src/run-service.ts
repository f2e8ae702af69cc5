import type { LevelWithSilent } from "pino";
import { ConfigError } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { exitOnShutdownSignal } from "./shutdown.js";

/** Exit status for a configuration the process cannot run with (sysexits EX_CONFIG). */
export const EXIT_CONFIG = 78;

interface Running {
  stop(): Promise<void>;
  addresses: Record<string, unknown>;
}

/**
 * The `main` of a Holdfast process: validate the configuration (printing every
 * problem and exiting with EX_CONFIG if it is bad), start, log one "ready" line
 * with where it listens, and stop gracefully on SIGTERM/SIGINT.
 *
 * The signal handlers are installed before start-up (which may wait for the
 * database): as PID 1 in a container, a process without them ignores SIGTERM.
 * A signal during start-up stops the service as soon as it has started.
 */
export async function runService<C extends { logLevel: LevelWithSilent }>(
  name: string,
  loadConfig: () => C,
  start: (config: C, logger: Logger) => Promise<Running>,
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
  const starting = start(config, logger);
  exitOnShutdownSignal(logger, async () => (await starting).stop());
  try {
    const running = await starting;
    // Supervisors and tests wait for this line, and may signal at once.
    logger.info(running.addresses, "ready");
  } catch (err) {
    logger.fatal({ err }, "could not start");
    process.exit(1);
  }
}
