/**
 * Tells the expiry-worker about new holds (channel holdfast_expiry, see
 * packages/schema/src/notifications.ts), so a sleeping worker wakes up in time for
 * a hold that expires before its planned wake-up instead of at its next poll.
 *
 * Sent after the hold committed, on a pooled connection, never inside the hold's
 * transaction: a NOTIFY there would make its COMMIT take PostgreSQL's global
 * notification lock, serialising the commits of every hold in a flash sale.
 *
 * Coalesced: at most one NOTIFY per WINDOW_MS per process, carrying the earliest
 * expiry of the holds committed since the last one (the first hold after a quiet
 * period is announced at once). Why no hold is missed: every hold is covered by a
 * notification sent after its commit with an expiry no later than its own. A
 * worker that receives it either re-arms its timer for that expiry, or already
 * sleeps until an earlier moment; either way it looks at the database again no
 * later than the hold's expiry, after the hold committed, and plans from what it
 * finds there. A lost notification (a failed send, a reconnecting listener) costs
 * at most the worker's EXPIRY_MAX_SLEEP_MS.
 */
import type { Logger } from "@holdfast/runtime";
import { announceExpiry, type Db } from "@holdfast/schema";

/** At most this many NOTIFYs per second per process: 1000 / WINDOW_MS. */
const WINDOW_MS = 50;

export class ExpiryAnnouncer {
  /** Earliest expiry (epoch ms, database clock) of the holds not announced yet. */
  private pending: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastSentAt = -Infinity;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
  ) {}

  /** A hold expiring at `expiresAt` (database time) was committed. Never throws, never waits. */
  holdCreated(expiresAt: Date): void {
    this.pending = Math.min(this.pending ?? Infinity, expiresAt.getTime());
    if (this.timer !== undefined) return;
    const wait = Math.max(0, this.lastSentAt + WINDOW_MS - Date.now());
    if (wait === 0) return this.flush();
    this.timer = setTimeout(() => this.flush(), wait);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = undefined;
    if (this.pending === undefined) return;
    const at = new Date(this.pending);
    this.pending = undefined;
    this.lastSentAt = Date.now();
    announceExpiry(this.db, at).catch((err: unknown) => {
      this.logger.warn({ err }, "could not announce hold expiries to the expiry-worker (it finds them at its next poll)");
    });
  }
}
