import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "@holdfast/runtime";

/**
 * Runs `job` now and then every `intervalMs` until `signal` aborts, one run at a
 * time (a slow run delays the next, never overlaps it). A failed run is logged and
 * retried at the next tick: a database outage must not stop the worker. Returns a
 * promise that settles when the loop has ended (after the run in progress).
 */
export function every(intervalMs: number, name: string, job: () => Promise<void>, opts: { logger: Logger; signal: AbortSignal; firstDelayMs?: number }): Promise<void> {
  const { logger, signal } = opts;
  const loop = async () => {
    let delay = opts.firstDelayMs ?? 0;
    while (!signal.aborted) {
      if (delay > 0) {
        try {
          await sleep(delay, undefined, { signal });
        } catch {
          return; // aborted
        }
      }
      try {
        await job();
      } catch (err) {
        if (signal.aborted) return;
        logger.warn({ err, job: name }, `${name} failed; retrying in ${intervalMs} ms`);
      }
      delay = intervalMs;
    }
  };
  return loop();
}
