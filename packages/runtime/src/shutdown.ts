import type { Logger } from "pino";

/**
 * Runs `stop` once on the first SIGTERM or SIGINT, then exits with 0 (or 1 if
 * stopping failed). A second signal while stopping exits at once, so a stuck
 * drain never traps an operator.
 *
 * A process started by a supervisor with an IPC channel (`npm start`) also
 * stops when that channel closes, so it never outlives a supervisor that was
 * killed outright.
 */
export function exitOnShutdownSignal(logger: Logger, stop: (signal: NodeJS.Signals) => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second shutdown signal: exiting without waiting for the drain");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "shutdown requested: draining");
    stop(signal).then(
      () => {
        logger.info("stopped cleanly");
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  if (process.channel !== undefined) {
    process.once("disconnect", () => {
      if (!stopping) onSignal("SIGHUP");
    });
    // The channel alone must not keep the process alive once it has stopped.
    process.channel.unref();
  }
}
