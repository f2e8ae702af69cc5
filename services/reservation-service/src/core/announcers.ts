/**
 * What the reservation-service tells other processes after a commit, through
 * PostgreSQL notifications (packages/schema/src/notifications.ts):
 *
 * - ExpiryAnnouncer (channel holdfast_expiry): new holds, so a sleeping
 *   expiry-worker wakes in time for a hold that expires before its planned
 *   wake-up instead of at its next poll.
 * - InventoryAnnouncer (channel holdfast_inventory): SKUs whose availability
 *   rows changed, for WatchAvailability streams on every replica (core/watch.ts).
 *
 * Sent after the change committed, on a pooled connection, never inside its
 * transaction: a NOTIFY there would make its COMMIT take PostgreSQL's global
 * notification lock, serialising the commits of every hold in a flash sale.
 *
 * Coalesced: at most one NOTIFY per WINDOW_MS per process and channel, merging
 * what was committed since the last one (the first after a quiet period goes at
 * once). Why nothing is missed:
 * - expiry: every hold is covered by a notification sent after its commit with
 *   an expiry no later than its own. A worker that receives it either re-arms its
 *   timer for that expiry, or already sleeps until an earlier moment; either way
 *   it looks at the database again no later than the hold's expiry, after the
 *   hold committed, and plans from what it finds there. A lost notification (a
 *   failed send, a reconnecting listener) costs at most EXPIRY_MAX_SLEEP_MS.
 * - inventory: every change is followed by a notification naming its SKU, sent
 *   after its commit, so a watcher that re-reads the row then sees it (or a later
 *   version). A listener that reconnects re-reads every watched row.
 */
import type { Logger } from "@holdfast/runtime";
import { announceExpiry, notifyInventoryChanged, type Db, type Promotion } from "@holdfast/schema";

/** At most this many NOTIFYs per second per process and channel: 1000 / WINDOW_MS. */
const WINDOW_MS = 50;

/** Sends at most one message per WINDOW_MS, merging the values added in between. */
export class Coalescer<T> {
  private pending: T | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastSentAt = -Infinity;

  constructor(
    private readonly merge: (pending: T | undefined, value: T) => T,
    private readonly send: (value: T) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Never throws, never waits. */
  add(value: T): void {
    this.pending = this.merge(this.pending, value);
    if (this.timer !== undefined) return;
    const wait = Math.max(0, this.lastSentAt + WINDOW_MS - Date.now());
    if (wait === 0) return this.flush();
    this.timer = setTimeout(() => this.flush(), wait);
    this.timer.unref();
  }

  private inFlight = new Set<Promise<void>>();

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending === undefined) return;
    const value = this.pending;
    this.pending = undefined;
    this.lastSentAt = Date.now();
    const sent = this.send(value).catch(this.onError);
    this.inFlight.add(sent);
    void sent.finally(() => this.inFlight.delete(sent));
  }

  /** Sends what is pending now and waits for every send in flight (shutdown, before the pool closes). */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all(this.inFlight);
  }
}

export class ExpiryAnnouncer {
  /** Pending: the earliest expiry (epoch ms, database clock) not announced yet. */
  private readonly coalescer: Coalescer<number>;

  constructor(db: Db, logger: Logger) {
    this.coalescer = new Coalescer<number>(
      (pending, at) => Math.min(pending ?? Infinity, at),
      (at) => announceExpiry(db, new Date(at)),
      (err) => logger.warn({ err }, "could not announce hold expiries to the expiry-worker (it finds them at its next poll)"),
    );
  }

  /**
   * Something the worker must act on at `expiresAt` (database time) was committed: a
   * hold's expiry, or a waitlist entry's max_wait.
   */
  holdCreated(expiresAt: Date): void {
    this.coalescer.add(expiresAt.getTime());
  }

  /** The holds of waitlist promotions were committed. */
  promoted(promotions: readonly Promotion[]): void {
    for (const p of promotions) this.holdCreated(p.expiresAt);
  }

  drain(): Promise<void> {
    return this.coalescer.drain();
  }
}

export class InventoryAnnouncer {
  /** Pending: the SKUs changed since the last notification. */
  private readonly coalescer: Coalescer<Set<string>>;

  /**
   * @param local this process's own watchers (AvailabilityHub.changed): told at once,
   *   so they do not depend on the notification's round trip, nor on its success.
   */
  constructor(
    db: Db,
    logger: Logger,
    private readonly local: (skus: ReadonlySet<string>) => void = () => undefined,
  ) {
    this.coalescer = new Coalescer<Set<string>>(
      (pending, skus) => (pending === undefined ? skus : new Set([...pending, ...skus])),
      (skus) => notifyInventoryChanged(db, skus),
      (err) => logger.warn({ err }, "could not announce availability changes (watchers on other replicas see them at their next change)"),
    );
  }

  /** The availability rows of `skus` changed in a committed transaction. */
  changed(skus: Iterable<string>): void {
    const set = new Set(skus);
    if (set.size === 0) return;
    this.local(set);
    this.coalescer.add(set);
  }

  drain(): Promise<void> {
    return this.coalescer.drain();
  }

  /**
   * `work`'s outcome, announcing `skus` once it settled, whatever the outcome (a
   * refusal may have changed rows too, e.g. lapsed holds expired in line; watchers
   * re-read the rows and drop what did not change).
   */
  async around<T>(skus: Iterable<string>, work: Promise<T>): Promise<T> {
    try {
      return await work;
    } finally {
      this.changed(skus);
    }
  }
}
