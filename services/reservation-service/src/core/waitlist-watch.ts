/**
 * WatchWaitlist: a customer's waitlist entries, then one notification per change
 * (JOINED, POSITION_CHANGED, PROMOTED with the hold, CONFIRMED, EXPIRED, CANCELLED),
 * from whichever replica or worker made it.
 *
 * - Feed. Every change to a waitlist entry happens in a transaction that also changes
 *   its SKU's inventory row (a join or leave moves waitlist_count, a promotion moves
 *   reserved, a confirmation allocated, an expiry or release gives units back), so the
 *   availability feed (watch.ts: LISTEN holdfast_inventory, local announcements, the
 *   30 s safety re-read) already names every SKU whose queue may have changed. The
 *   WaitlistHub is told those codes at each of its flushes (onSkusChanged: no row is
 *   read for it; "all" after a reconnection or the safety re-read) and, after each batch of changed SKUs, re-reads in ONE
 *   statement the entries that watched customers have on those SKUs (the live ones,
 *   and the ones a stream last saw live, to learn how they ended), with their places.
 *   A flash sale with thousands of waiters watching costs a replica one such read per
 *   availability batch (at most one per 50 ms), not one per stream.
 * - Each stream compares what it is given with what it last sent and emits the
 *   difference. States only move forward (WAITING -> PROMOTED -> CONFIRMED | EXPIRED |
 *   CANCELLED, and a place only shrinks), so a read that is older than what the stream
 *   already sent is recognised and ignored; a change that happened in several steps
 *   between two reads (promoted, then expired) is told as those steps.
 * - No gap at the start: the stream subscribes before it reads its initial state.
 */
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  WaitlistEntryStatus as Status,
  WaitlistNotificationSchema,
  WaitlistNotificationType as Type,
  WatchWaitlistResponseSchema,
  type Reservation,
  type WaitlistEntry,
  type WaitlistNotification,
  type WatchWaitlistRequest,
  type WatchWaitlistResponse,
} from "@holdfast/contracts";
import { Violations, customerScope } from "@holdfast/core";
import type { Logger } from "@holdfast/runtime";
import { HEARTBEAT_INTERVAL_DEFAULT_MS, type Db } from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { loadReservations } from "./reads.js";
import { Mailbox, deliver } from "./streams.js";
import { readEntries } from "./waitlist.js";
import type { AvailabilityHub } from "./watch.js";

interface Watcher {
  customer: string;
  /** Ids of the entries this stream last saw live: their next read tells how they ended. */
  live(): Iterable<string>;
  deliver(entries: readonly WaitlistEntry[], holds: ReadonlyMap<string, Reservation>): void;
}

/** What a stream (or the hub) reads: the entries and the holds of those that were promoted. */
async function readState(db: Db, where: string, params: readonly unknown[]): Promise<{ entries: WaitlistEntry[]; holds: Map<string, Reservation> }> {
  const entries = (await readEntries(db, where, params)).map((r) => r.entry);
  const holds = await loadReservations(db, entries.flatMap((e) => (e.reservationId === "" ? [] : [e.reservationId])));
  return { entries, holds: new Map(holds.map((h) => [h.id, h])) };
}

const LIVE = `e.status IN ('WAITING', 'PROMOTED')`;

export class WaitlistHub {
  private readonly watchers = new Set<Watcher>();
  private unsubscribeFeed: (() => void) | undefined;
  /** SKUs changed since the last read ("all": maybe any, after a lost connection or the safety re-read). */
  private dirty: Set<string> | "all" = new Set();
  private reading: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  /** Wait before reading again after a failed read; doubles up to 5 s. */
  private retryMs = 50;
  private closed = false;

  constructor(
    private readonly db: Db,
    private readonly feed: AvailabilityHub,
    private readonly logger: Logger,
  ) {}

  /** Starts delivering to `watcher` after each change to the SKUs of its customer's entries; returns the unsubscribe. */
  subscribe(watcher: Watcher): () => void {
    this.watchers.add(watcher);
    // Follow the changed SKUs' codes (no rows are read for it) only while somebody watches a waitlist.
    this.unsubscribeFeed ??= this.feed.onSkusChanged((skus) => this.changed(skus));
    return () => {
      this.watchers.delete(watcher);
      if (this.watchers.size === 0) {
        this.unsubscribeFeed?.();
        this.unsubscribeFeed = undefined;
      }
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    this.unsubscribeFeed?.();
    await this.reading;
  }

  private changed(skus: ReadonlySet<string> | "all"): void {
    if (skus === "all") this.dirty = "all";
    else if (this.dirty !== "all") for (const sku of skus) this.dirty.add(sku);
    this.read();
  }

  private read(): void {
    if (this.closed || this.reading !== undefined || this.retry !== undefined || (this.dirty !== "all" && this.dirty.size === 0)) return;
    const skus = this.dirty;
    this.dirty = new Set();
    this.reading = this.readNow(skus).finally(() => {
      this.reading = undefined;
      this.read(); // changes that arrived during the read
    });
  }

  private async readNow(skus: Set<string> | "all"): Promise<void> {
    const watchers = [...this.watchers];
    if (watchers.length === 0) return;
    const customers = [...new Set(watchers.map((w) => w.customer))];
    const live = [...new Set(watchers.flatMap((w) => [...w.live()]))];
    let state: Awaited<ReturnType<typeof readState>>;
    try {
      state =
        skus === "all"
          ? await readState(this.db, `e.customer_id = ANY(?::text[]) AND (${LIVE} OR e.id = ANY(?::uuid[]))`, [customers, live])
          : await readState(this.db, `e.customer_id = ANY(?::text[]) AND e.sku_code = ANY(?::text[]) AND (${LIVE} OR e.id = ANY(?::uuid[]))`, [customers, [...skus], live]);
    } catch (err) {
      if (this.retryMs === 50) this.logger.warn({ err }, "could not read changed waitlist entries; retrying with backoff");
      // Read them again after the backoff, with whatever changed meanwhile.
      this.dirty = skus === "all" || this.dirty === "all" ? "all" : new Set([...skus, ...this.dirty]);
      this.retry = setTimeout(() => {
        this.retry = undefined;
        this.read();
      }, this.retryMs);
      this.retry.unref();
      this.retryMs = Math.min(this.retryMs * 2, 5_000);
      return;
    }
    this.retryMs = 50;
    const byCustomer = new Map<string, WaitlistEntry[]>();
    for (const e of state.entries) byCustomer.set(e.customerId, [...(byCustomer.get(e.customerId) ?? []), e]);
    for (const watcher of watchers) {
      const mine = byCustomer.get(watcher.customer);
      if (mine !== undefined) watcher.deliver(mine, state.holds);
    }
  }
}

/** Forward order of an entry's life: a read showing a lower rank than what was sent is stale. */
const rank = (s: Status) => (s === Status.WAITING ? 0 : s === Status.PROMOTED ? 1 : 2);

const FINAL: Partial<Record<Status, Type>> = {
  [Status.CONFIRMED]: Type.CONFIRMED,
  [Status.EXPIRED]: Type.EXPIRED,
  [Status.CANCELLED]: Type.CANCELLED,
};

/** One stream's view: what it last told the client about each entry, and the notifications still to send. */
class Inbox extends Mailbox {
  private readonly told = new Map<string, WaitlistEntry>();
  private readonly queue: WaitlistNotification[] = [];

  constructor(private readonly skus: ReadonlySet<string> | undefined) {
    super();
  }

  protected get filled(): boolean {
    return this.queue.length > 0;
  }

  live(): string[] {
    return [...this.told.values()].filter((e) => rank(e.status) < 2).map((e) => e.id);
  }

  /** The initial state: what the client is told first, and the base of every later comparison. */
  start(entries: readonly WaitlistEntry[]): void {
    for (const e of entries) this.told.set(e.id, e);
  }

  /** Compares a read with what was told, and queues the difference. */
  update(entries: readonly WaitlistEntry[], holds: ReadonlyMap<string, Reservation>): void {
    for (const now of entries) {
      if (this.skus !== undefined && !this.skus.has(now.sku)) continue;
      const before = this.told.get(now.id);
      const hold = holds.get(now.reservationId);
      if (before === undefined) {
        if (rank(now.status) === 2) continue; // created and closed between two reads of another stream's interest: not ours to tell
        this.told.set(now.id, now);
        this.notify(Type.JOINED, { ...now, status: Status.WAITING, reservationId: "", promoteTime: undefined }, now.createTime);
        if (now.status === Status.PROMOTED) this.notify(Type.PROMOTED, now, now.promoteTime, hold);
        continue;
      }
      if (rank(now.status) < rank(before.status)) continue; // an older read than what was told
      if (now.status === Status.WAITING) {
        if (now.position < before.position) {
          this.told.set(now.id, now);
          this.notify(Type.POSITION_CHANGED, now, now.updateTime, undefined, before.position);
        }
        continue;
      }
      if (now.status === before.status) continue;
      this.told.set(now.id, now);
      // Promoted since the last read (and maybe settled since): tell the promotion first.
      if (before.status === Status.WAITING && now.reservationId !== "") this.notify(Type.PROMOTED, { ...now, status: Status.PROMOTED }, now.promoteTime, hold);
      const type = FINAL[now.status];
      if (type !== undefined) this.notify(type, now, now.updateTime, type === Type.CONFIRMED ? hold : undefined);
    }
    if (this.queue.length > 0) this.woken();
  }

  take(): WatchWaitlistResponse[] {
    return this.queue.splice(0).map((value) => create(WatchWaitlistResponseSchema, { event: { case: "notification", value } }));
  }

  private notify(type: Type, entry: WaitlistEntry, at: WaitlistEntry["updateTime"], reservation?: Reservation, previousPosition = 0n): void {
    this.queue.push(
      create(WaitlistNotificationSchema, {
        type,
        entry,
        reservation,
        previousPosition,
        eventTime: at ?? timestampNow(),
      }),
    );
  }
}

export async function* watchWaitlist(deps: Deps, call: Call, req: WatchWaitlistRequest): AsyncGenerator<WatchWaitlistResponse> {
  const customer = customerScope(call.principal, req.customerId);
  new Violations().required("customer_id", customer).throwIfAny();
  const skus = req.skus.length > 0 ? new Set(req.skus) : undefined;
  const heartbeatMs = req.heartbeatInterval !== undefined ? durationMs(req.heartbeatInterval) : HEARTBEAT_INTERVAL_DEFAULT_MS;
  const inbox = new Inbox(skus);
  // Reads delivered before the initial state is known wait here, then are compared with it.
  let early: Array<[readonly WaitlistEntry[], ReadonlyMap<string, Reservation>]> | undefined = [];
  const unsubscribe = deps.waitlistHub.subscribe({
    customer,
    live: () => inbox.live(),
    deliver: (entries, holds) => (early !== undefined ? early.push([entries, holds]) : inbox.update(entries, holds)),
  });
  try {
    const where = `e.customer_id = ? AND ${LIVE}` + (skus !== undefined ? ` AND e.sku_code = ANY(?::text[])` : "");
    const initial = await readState(deps.db, where, skus !== undefined ? [customer, [...skus]] : [customer]);
    // A lapsed entry (read-time EXPIRED) is no longer part of the state.
    const entries = initial.entries.filter((e) => rank(e.status) < 2);
    const reservations = entries.flatMap((e) => initial.holds.get(e.reservationId) ?? []);
    inbox.start(entries);
    yield create(WatchWaitlistResponseSchema, { event: { case: "initialState", value: { entries, reservations, asOf: timestampNow() } } });
    for (const [e, h] of early) inbox.update(e, h);
    early = undefined;
    const heartbeat = () => create(WatchWaitlistResponseSchema, { event: { case: "heartbeat", value: { serverTime: timestampNow() } } });
    yield* deliver(inbox, call.signal, heartbeatMs, () => inbox.take(), heartbeat);
  } finally {
    unsubscribe();
  }
}
