import type { LevelWithSilent } from "pino";
import { ConfigError } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import { exitOnShutdownSignal } from "./shutdown.js";

/**
 * The node options every launcher of a Holdfast service passes (`npm start`, the
 * tests, the benchmarks; the Dockerfile's CMD and the shebang of each service's
 * main.js, its package's `bin`, spell the same list, checked by
 * test/services/configuration.test.ts):
 * - source maps, so that a stack trace at 3 a.m. names the TypeScript line;
 * - a young generation of 64 MiB semi-spaces (V8's default here: 16 MiB). A hold
 *   allocates its request, response and statement parameters and drops them within
 *   milliseconds; in a burst, hundreds are alive at once, so a small young space
 *   scavenges often and copies what is still in flight each time. Issue 8: the
 *   reservation-service spent ~20 % of its CPU in the garbage collector; with this,
 *   CPU per hold of a GROUP_COMMIT SKU at 256 clients went 326 → 291 µs and its holds/s
 *   +9 % (4 of 4 alternated pairs); 10,000 SKUs at 64 clients, bound by PostgreSQL,
 *   did not change. The cost: V8's young generation is three semi-spaces (two, and as
 *   much again for large young objects), so up to 144 MiB more resident memory.
 * V8 reads the semi-space size only at start-up (v8.setFlagsFromString afterwards
 * has no effect), hence a launch flag and not code in `main`.
 */
export const SERVICE_NODE_OPTIONS: readonly string[] = ["--enable-source-maps", "--max-semi-space-size=64"];

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
