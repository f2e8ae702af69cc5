/**
 * LISTEN/NOTIFY: how Holdfast processes tell each other, through the database, that
 * something changed. PostgreSQL delivers a notification to every listening session
 * when the sending transaction commits (never before, never for a rollback), so a
 * listener that re-reads the database after a notification sees the change.
 *
 * Channels (payloads are JSON):
 * - `holdfast_expiry`: a hold that expires sooner than any announced before was
 *   created: `{"expire_at_ms": <epoch ms, database clock>}`. The expiry-worker sleeps
 *   until the next known expiry and is woken early by these. Sent AFTER the hold
 *   committed, on another connection, and only when sooner than what this process
 *   announced last: a NOTIFY inside the hold's transaction would serialise its commit
 *   with every other notifying commit (PostgreSQL takes a global lock for it).
 * - `holdfast_inventory`: a SKU's availability changed (the expiry-worker's expiries
 *   and repairs): `{"sku", "version", "on_hand", "reserved", "allocated", "available"}`,
 *   one per SKU and transaction, sent inside the changing transaction. Listeners drop
 *   a payload whose version is not newer than the one they have.
 *
 * Notifications are a latency optimisation, never the only path: a listener that was
 * disconnected misses them, so every consumer also re-reads on a timer.
 */
import pg from 'pg';
import { query, type Db } from './query.js';

export const EXPIRY_CHANNEL = 'holdfast_expiry';
export const INVENTORY_CHANNEL = 'holdfast_inventory';

/** Announces that a hold expiring at `expiresAt` (database time) exists. */
export async function announceExpiry(db: Db, expiresAt: Date): Promise<void> {
  await query(db, `SELECT pg_notify(?, ?)`, [EXPIRY_CHANNEL, JSON.stringify({ expire_at_ms: expiresAt.getTime() })]);
}

/** Parses a `holdfast_expiry` payload; undefined if malformed. */
export function parseExpiryPayload(payload: string | undefined): Date | undefined {
  try {
    const ms = (JSON.parse(payload ?? '') as { expire_at_ms?: unknown }).expire_at_ms;
    return typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms) : undefined;
  } catch {
    return undefined;
  }
}

/** Bytes of SKU codes per `holdfast_inventory` payload (PostgreSQL's limit is 8000). */
const INVENTORY_PAYLOAD_BUDGET = 7000;

/**
 * Queues `holdfast_inventory` notifications naming the SKUs whose availability
 * rows changed: `{"skus": ["A", "B"]}`, split to fit the payload limit. Inside a
 * transaction they are delivered when it commits. Watchers re-read the rows, so
 * a payload carries no counters (and a late or duplicate one is harmless).
 */
export async function notifyInventoryChanged(db: Db, skus: Iterable<string>): Promise<void> {
  const payloads: string[] = [];
  let batch: string[] = [];
  let size = 0;
  for (const sku of new Set(skus)) {
    if (size + sku.length + 3 > INVENTORY_PAYLOAD_BUDGET && batch.length > 0) {
      payloads.push(JSON.stringify({ skus: batch }));
      batch = [];
      size = 0;
    }
    batch.push(sku);
    size += sku.length + 3;
  }
  if (batch.length > 0) payloads.push(JSON.stringify({ skus: batch }));
  if (payloads.length === 0) return;
  await query(db, `SELECT count(pg_notify(?, p)) FROM unnest(?::text[]) AS p`, [INVENTORY_CHANNEL, payloads]);
}

/** The SKU codes of a `holdfast_inventory` payload; undefined if it is not one. */
export function parseInventoryPayload(payload: string | undefined): string[] | undefined {
  try {
    const parsed = JSON.parse(payload ?? "") as { skus?: unknown };
    return Array.isArray(parsed.skus) && parsed.skus.every((s) => typeof s === "string") ? (parsed.skus as string[]) : undefined;
  } catch {
    return undefined;
  }
}

export interface ListenerOptions {
  url: string;
  applicationName: string;
  channels: readonly string[];
  onNotification(channel: string, payload: string | undefined): void;
  /** Called with true once listening (again), false when the connection is lost (not on close()). */
  onListening?(listening: boolean): void;
  onError?(err: unknown): void;
  /** Delay before reconnecting after a lost connection; doubles up to 10 s. Default 250 ms. */
  reconnectDelayMs?: number;
}

/**
 * A dedicated session that LISTENs (a pooled connection cannot: it is handed to
 * other work between queries). Reconnects by itself, with backoff, until closed;
 * after a reconnection `onListening(true)` tells the consumer to re-read what it may
 * have missed.
 */
export class NotificationListener {
  private client: pg.Client | undefined;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private delay: number;
  listening = false;

  constructor(private readonly options: ListenerOptions) {
    this.delay = options.reconnectDelayMs ?? 250;
  }

  /** Connects and listens; resolves once listening or after the first failure (then retries in the background). */
  async start(): Promise<void> {
    await this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    this.listening = false; // closing on purpose: no onListening(false), which means "lost"
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({
      connectionString: this.options.url,
      application_name: this.options.applicationName,
      // A silent connection must not pass for a listening one: TCP keepalive finds a
      // peer that vanished without a reset (failover, NAT), and a connect that hangs
      // gives up and retries instead of leaving the consumer waiting.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
    });
    const lost = (err?: unknown) => {
      if (this.client !== client) return;
      this.client = undefined;
      this.setListening(false);
      if (err !== undefined) this.options.onError?.(err);
      client.end().catch(() => undefined);
      this.scheduleReconnect();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (n) => this.options.onNotification(n.channel, n.payload));
    this.client = client;
    try {
      await client.connect();
      for (const channel of this.options.channels) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      if (this.closed || this.client !== client) {
        await client.end().catch(() => undefined);
        return;
      }
      this.delay = this.options.reconnectDelayMs ?? 250;
      this.setListening(true);
    } catch (err) {
      lost(err);
    }
  }

  private scheduleReconnect(): void {
    if (this.closed || this.timer !== undefined) return;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, 10_000);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, delay);
    this.timer.unref();
  }

  private setListening(listening: boolean): void {
    if (this.listening === listening) return;
    this.listening = listening;
    this.options.onListening?.(listening);
  }
}
