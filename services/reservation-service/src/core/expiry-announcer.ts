/**
 * Tells the expiry-worker about holds that expire sooner than anything this process
 * announced before (channel holdfast_expiry, see packages/schema/src/notifications.ts),
 * so a sleeping worker wakes up in time instead of at its next poll.
 *
 * Sent after the hold committed, on a pooled connection, never inside the hold's
 * transaction: a NOTIFY there would make its COMMIT take PostgreSQL's global
 * notification lock, serialising the commits of every hold in a flash sale.
 *
 * Most holds are not announced: in a sale every hold gets about the same TTL, so
 * after one announcement every later hold expires later than the announced one and
 * the worker, which wakes for that one, will find them in the database then. A hold
 * is announced when it expires before the earliest announced expiry, or when that one
 * is (nearly) due (within CLOCK_MARGIN_MS, which also absorbs a skew between this
 * host's clock and the database's). Why this is enough: a suppressed hold expires
 * after an announced one E0 that the worker wakes for, and the suppressed hold was
 * committed before E0, so the worker's look at the database after E0 includes it.
 * The worker's EXPIRY_MAX_SLEEP_MS bounds the delay if a notification is lost.
 */
import type { Logger } from "@holdfast/runtime";
import { announceExpiry, type Db } from "@holdfast/schema";

const CLOCK_MARGIN_MS = 1_000;

export class ExpiryAnnouncer {
  /** The earliest expiry announced (database clock, epoch ms) that is still ahead. */
  private earliest = -Infinity;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
  ) {}

  /** A hold expiring at `expiresAt` (database time) was committed. Never throws, never waits. */
  holdCreated(expiresAt: Date): void {
    const at = expiresAt.getTime();
    if (at >= this.earliest && this.earliest > Date.now() + CLOCK_MARGIN_MS) return;
    this.earliest = at;
    announceExpiry(this.db, expiresAt).catch((err: unknown) => {
      // The worker's poll still finds the hold; announce the next one.
      this.earliest = -Infinity;
      this.logger.debug({ err }, "could not announce a hold's expiry to the expiry-worker");
    });
  }
}
