/**
 * What the server streams (WatchAvailability, WatchWaitlist) share: a mailbox a feed
 * fills and the stream drains, and the loop that sends what is in it, with a heartbeat
 * after each quiet `heartbeatMs`, until the call ends (client gone, deadline, or the
 * server shutting down: the transport then ends the stream with its status).
 */

/** Something a feed fills from outside the stream; `wait` lets the stream sleep until it does. */
export abstract class Mailbox {
  private wake: (() => void) | undefined;

  /** True when there is something to take. */
  protected abstract get filled(): boolean;

  /** Call after adding to the mailbox: wakes a waiting stream. */
  protected woken(): void {
    this.wake?.();
  }

  /** Resolves when something arrives, after `ms`, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.filled || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.wake = done;
    });
  }
}

/**
 * Sends `next()`'s messages as the mailbox fills (none: nothing new, e.g. only stale
 * rows arrived), and `heartbeat()` once the stream has been quiet for `heartbeatMs`.
 */
export async function* deliver<M>(mailbox: Mailbox, signal: AbortSignal, heartbeatMs: number, next: () => M[], heartbeat: () => M): AsyncGenerator<M> {
  let lastMessageAt = Date.now();
  while (!signal.aborted) {
    await mailbox.wait(Math.max(0, lastMessageAt + heartbeatMs - Date.now()), signal);
    if (signal.aborted) return;
    const messages = next();
    if (messages.length === 0) {
      if (Date.now() - lastMessageAt < heartbeatMs) continue;
      lastMessageAt = Date.now();
      yield heartbeat();
      continue;
    }
    lastMessageAt = Date.now();
    yield* messages;
  }
}
