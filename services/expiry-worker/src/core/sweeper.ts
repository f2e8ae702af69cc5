/**
 * Expiry: HELD holds past expires_at are moved to EXPIRED and their units returned,
 * promptly and exactly once, by any number of worker replicas.
 *
 * - CLAIM. A batch claims up to EXPIRY_BATCH_SIZE overdue headers with FOR UPDATE
 *   SKIP LOCKED, oldest expiry first (the partial index of HELD headers by
 *   expires_at). A header another replica is sweeping, or a ConfirmHold / ReleaseHold
 *   is working on, is skipped, never waited for: two replicas never expire the same
 *   hold, and a hold racing a confirm ends either confirmed (the sweeper skipped it,
 *   and it is no longer HELD when looked at again) or expired (the confirm waited
 *   for our header lock, then found it EXPIRED and answered HOLD_EXPIRED).
 * - ONE TRANSACTION PER BATCH. Headers and lines to EXPIRED, the units back and one
 *   HOLD_EXPIRED ledger event per line (expireClaimedHolds: inventory rows locked in
 *   SKU order after the headers, the lock order of every writer), and a
 *   holdfast_inventory notification per SKU, all commit together or not at all: a
 *   worker killed mid-batch leaves nothing half-applied, and the next sweep (of any
 *   replica) claims the same holds again.
 * - PROMPT. After a sweep the loop asks the database when the next hold expires and
 *   sleeps exactly until then (database clock, so a skewed host cannot expire early or
 *   late), at most EXPIRY_MAX_SLEEP_MS. A reservation-service that creates a hold
 *   expiring sooner than anything it announced before NOTIFYs holdfast_expiry, which
 *   wakes the sleeping loop early (re-armed for the sooner time). The cap bounds the
 *   delay when a notification is lost (a reconnecting listener).
 * - EXPIRY LAG of a hold = the commit that returned its units - its expire_time,
 *   computed from the database clock read just before COMMIT plus the local time the
 *   COMMIT took.
 * - POISON. A batch that fails for a reason other than a lock wait or a lost
 *   connection (e.g. counters that disagree with the lines, refused by the ledger's
 *   guard) is retried hold by hold; a hold that fails alone is set aside for a minute
 *   and logged, so one broken hold never stops every other hold from expiring.
 *   Reconciliation reports and repairs the counters; the hold is then expired.
 * - WAITLIST max_wait. After the holds, each sweep expires the WAITING entries past
 *   their own expires_at (otherwise only expired lazily, by the next promotion on
 *   their SKU): a batch takes up to WAITLIST_BATCH_SKUS SKUs that have one (the partial
 *   index of WAITING entries by expires_at, no lock) and, in ONE transaction, runs
 *   promoteAndExpireWaiting on them (inventory rows locked in SKU order: every
 *   writer's lock order), which expires the lapsed entries and promotes what now fits
 *   (a lapsed head may have blocked smaller entries behind it), then notifies the
 *   SKUs. Replicas doing it at once are serialised by the row locks; the second one
 *   finds nothing lapsed left and counts nothing. The loop wakes for an entry's
 *   deadline as for a hold's: the join announces it (holdfast_expiry), and the probe
 *   after each sweep includes the next WAITING entry's expires_at.
 *   A SKU whose batch fails alone (poison) is set aside like a poison hold.
 */
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import {
  ExpirySweepSchema,
  RunExpirySweepRequestSchema,
  RunExpirySweepResponseSchema,
  type ExpirySweep,
  type RunExpirySweepRequest,
  type RunExpirySweepResponse,
} from "@holdfast/contracts";
import { Idempotency, durationDistribution, idempotencyKey, ts } from "@holdfast/core";
import { isTransientDatabaseError } from "@holdfast/runtime";
import {
  EXPIRY_CHANNEL,
  NotificationListener,
  expireClaimedHolds,
  notifyInventoryChanged,
  parseExpiryPayload,
  promoteAndExpireWaiting,
  query,
} from "@holdfast/schema";
import type { Call, WorkerDeps } from "./context.js";

const METHOD = "holdfast.worker.v1.ExpiryWorkerService/RunExpirySweep";
/** A RunExpirySweep is presumed dead (its record taken over) this long after it started. */
const ON_DEMAND_LEASE_MS = 10 * 60_000;
/** How long a hold that failed to expire on its own is left aside before it is tried again. */
const POISON_RETRY_MS = 60_000;
/** Pause when overdue holds are left that another transaction has locked. */
const BUSY_PAUSE_MS = 25;
/** SKUs per waitlist expiry transaction (each locks its inventory row and WAITING entries). */
const WAITLIST_BATCH_SKUS = 100;

/** The oldest overdue HELD headers nobody else has locked. */
const CLAIM = `
SELECT id, expires_at
  FROM reservations
 WHERE status = 'HELD'
   -- clock_timestamp() as an InitPlan: evaluated once, so it can bound the index scan.
   AND expires_at <= (SELECT clock_timestamp())
   AND id <> ALL(?::uuid[])                                  -- holds set aside (poison)
   AND (cardinality(?::uuid[]) = 0 OR id = ANY(?::uuid[]))   -- only these, when isolating a failed batch
 ORDER BY expires_at
 LIMIT ?
   FOR UPDATE SKIP LOCKED`;

/**
 * SKUs with WAITING entries past their own expires_at (max_wait), the oldest lapse
 * first, on the partial index of WAITING entries by expires_at. Nothing is locked
 * here: promoteAndExpireWaiting then locks the inventory rows before the entries (the
 * lock order of every writer); entries found here are still lapsed then
 * (clock_timestamp() only grows), unless another replica expired them meanwhile.
 */
const LAPSED_WAITLIST_SKUS = `
SELECT sku_code
  FROM waitlist_entries
 WHERE status = 'WAITING'
   AND expires_at <= (SELECT clock_timestamp())
   AND sku_code <> ALL(?::text[])                                  -- SKUs set aside (poison)
   AND (cardinality(?::text[]) = 0 OR sku_code = ANY(?::text[]))   -- only these, when isolating a failed batch
 GROUP BY sku_code
 ORDER BY min(expires_at), sku_code
 LIMIT ?`;

/**
 * The database's view of the expiry backlog, one statement on the partial index of
 * HELD headers. statement_timestamp() is stable, so both bounds are index conditions.
 */
const PROBE = `
SELECT statement_timestamp() AS now,
       (SELECT min(expires_at) FROM reservations WHERE status = 'HELD' AND id <> ALL(?::uuid[])) AS next_expires_at,
       (SELECT count(*) FROM reservations WHERE status = 'HELD' AND expires_at <= statement_timestamp() AND id <> ALL(?::uuid[]))::bigint AS overdue,
       (SELECT min(expires_at) FROM reservations WHERE status = 'HELD' AND expires_at <= statement_timestamp() AND id <> ALL(?::uuid[])) AS oldest_overdue,
       -- The next waitlist entry to pass its max_wait (waitlist_entries_waiting_expires_at_idx);
       -- only future ones: lapsed entries the last sweep left are another replica's, or set aside.
       (SELECT min(expires_at) FROM waitlist_entries WHERE status = 'WAITING' AND expires_at > statement_timestamp()) AS next_entry_expires_at`;

export interface Backlog {
  now: Date;
  nextExpiresAt: Date | null;
  /** When the next WAITING waitlist entry passes its max_wait, if any. */
  nextEntryExpiresAt: Date | null;
  overdue: number;
  oldestOverdue: Date | null;
}

/**
 * Reads the expiry backlog: database-wide for WorkerStatus, without the holds this
 * replica set aside (`excluding`) for its own next wake-up.
 */
export async function readBacklog(deps: Pick<WorkerDeps, "db">, excluding: readonly string[] = []): Promise<Backlog> {
  const ids = [...excluding];
  const [row] = await query<{ now: Date; next_expires_at: Date | null; overdue: number; oldest_overdue: Date | null; next_entry_expires_at: Date | null }>(deps.db, PROBE, [ids, ids, ids]);
  return { now: row!.now, nextExpiresAt: row!.next_expires_at, overdue: row!.overdue, oldestOverdue: row!.oldest_overdue, nextEntryExpiresAt: row!.next_entry_expires_at };
}

interface BatchResult {
  claimed: number;
  expired: number;
  units: number;
  lagMs: number[];
  /** Waitlist entries promoted with the returned units (in the batch's transaction). */
  promotions: number;
}

interface WaitlistBatchResult {
  /** SKUs found with lapsed WAITING entries. */
  skus: number;
  /** Lapsed WAITING entries moved to EXPIRED. */
  expired: number;
  /** Entries promoted on those SKUs in the same transaction. */
  promotions: number;
}

interface SweepOptions {
  maxHolds: number;
  batchSize: number;
  trigger: "background" | "on_demand";
  signal: AbortSignal;
  /** Keeps a RunExpirySweep's idempotency lease while it works. */
  renew?: () => Promise<void>;
}

export class ExpirySweeper {
  private readonly origin;
  /** Holds that failed to expire on their own, and when they may be tried again. */
  private readonly poisoned = new Map<string, number>();
  /** SKUs whose lapsed waitlist entries failed to expire on their own, and when they may be tried again. */
  private readonly poisonedSkus = new Map<string, number>();
  /** After a failed batch: its holds, to be expired one per transaction to find the culprit. */
  private suspects: string[] = [];
  /** Ends every sweep when the worker stops (set by start()). */
  private stopping: AbortSignal = new AbortController().signal;
  /** On-demand sweeps in progress, awaited by drain(). */
  private readonly onDemand = new Set<Promise<unknown>>();
  /** Database clock minus local clock, as of the last probe (ms). */
  private clockOffsetMs = 0;
  /** The pending sleep: when it ends (local ms) and how to end it sooner. */
  private sleeping: { until: number; rearm(untilLocalMs: number): void } | undefined;
  /** An announced expiry (local ms) received while not sleeping. */
  private announced: number | undefined;
  private listener: NotificationListener | undefined;

  constructor(
    private readonly deps: WorkerDeps,
    private readonly listen: { url: string; applicationName: string },
  ) {
    this.origin = { actor: `worker:${deps.settings.workerId}`, requestId: null };
  }

  /** The background loop; resolves once `signal` aborts and the batch in progress is done. */
  async start(signal: AbortSignal): Promise<void> {
    const { logger, state, metrics } = this.deps;
    this.listener = new NotificationListener({
      ...this.listen,
      channels: [EXPIRY_CHANNEL],
      onNotification: (_channel, payload) => {
        const at = parseExpiryPayload(payload);
        if (at !== undefined) this.onAnnounced(at.getTime() - this.clockOffsetMs);
      },
      onListening: (listening) => {
        state.listening = listening;
        metrics.listening.set(listening ? 1 : 0);
        if (listening) {
          logger.info({ channel: EXPIRY_CHANNEL }, "listening for sooner expiries");
          this.onAnnounced(Date.now()); // may have missed some while disconnected: look now
        } else {
          logger.warn({ channel: EXPIRY_CHANNEL }, "stopped listening for expiries (database connection lost); polling every EXPIRY_MAX_SLEEP_MS until it is back");
        }
      },
      onError: (err) => logger.warn({ err }, "expiry listener connection failed"),
    });
    this.stopping = signal;
    // Not awaited: expiry must not wait for the listener (it polls meanwhile).
    void this.listener.start();

    let failures = 0;
    try {
      while (!signal.aborted) {
        let pauseMs: number;
        try {
          await this.sweep({ maxHolds: 0, batchSize: this.deps.settings.expiryBatchSize, trigger: "background", signal });
          failures = 0;
          pauseMs = await this.untilNextExpiry();
        } catch (err) {
          if (signal.aborted) break;
          failures++;
          pauseMs = Math.min(this.deps.settings.expiryMaxSleepMs, 50 * 2 ** Math.min(failures, 6));
          logger.warn({ err, retryInMs: pauseMs }, "expiry sweep failed (database unavailable or a lock wait timed out); retrying");
        }
        await this.sleepUntil(Date.now() + pauseMs, signal);
      }
    } finally {
      await this.listener.close();
      state.listening = false;
      metrics.listening.set(0);
    }
  }

  /** RunExpirySweep: one sweep now, idempotent by request_id. */
  async runOnDemand(call: Call, req: RunExpirySweepRequest): Promise<RunExpirySweepResponse> {
    const key = idempotencyKey(call.principal.id, METHOD, RunExpirySweepRequestSchema, req);
    const idempotency = new Idempotency(this.deps.db, this.deps.settings.idempotencyWindowMs);
    const signal = AbortSignal.any([call.signal, this.stopping]);
    const running = idempotency.runLeased(key, RunExpirySweepResponseSchema, ON_DEMAND_LEASE_MS, async (renew) => {
      const sweep = await this.sweep({
        maxHolds: Number(req.maxHolds),
        batchSize: req.batchSize === 0 ? this.deps.settings.expiryBatchSize : req.batchSize,
        trigger: "on_demand",
        signal,
        renew,
      });
      // Cut short (the caller left, or the worker is stopping): not the request's
      // outcome. Thrown, so the record is removed and a retry sweeps again.
      signal.throwIfAborted();
      return create(RunExpirySweepResponseSchema, { sweep });
    });
    this.onDemand.add(running);
    try {
      return await running;
    } finally {
      this.onDemand.delete(running);
    }
  }

  /** Waits for the on-demand sweeps in progress (they stop at their next batch once the worker stops). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.onDemand]);
  }

  /**
   * Expires overdue holds batch by batch until none is left to claim (or maxHolds).
   * Recorded in WorkerStatus when it expired something or was asked for (the
   * background loop's empty look-ups are not sweeps).
   */
  async sweep(options: SweepOptions): Promise<ExpirySweep> {
    const start = new Date();
    const done = { expired: 0, units: 0, batches: 0, lag: [] as number[], promotions: 0, waitlistExpired: 0 };
    let renewedAt = Date.now();
    let failure: unknown;
    try {
      while (!options.signal.aborted) {
        const room = options.maxHolds > 0 ? options.maxHolds - done.expired : Number.MAX_SAFE_INTEGER;
        const isolating = this.suspects.length > 0;
        const limit = Math.min(isolating ? 1 : options.batchSize, room);
        if (limit <= 0) break;
        if (options.renew !== undefined && Date.now() - renewedAt > ON_DEMAND_LEASE_MS / 3) {
          await options.renew();
          renewedAt = Date.now();
        }
        const batch = await this.expireBatch(limit, isolating ? this.suspects.splice(0) : []);
        if (batch.claimed === 0) {
          if (!isolating) break;
          continue; // the suspects were tried alone: back to full batches
        }
        if (batch.expired > 0) done.batches++;
        done.expired += batch.expired;
        done.units += batch.units;
        done.promotions += batch.promotions;
        done.lag.push(...batch.lagMs);
        if (batch.claimed < limit && !isolating && this.suspects.length === 0) break;
      }
      await this.expireWaitlist(options.signal, done);
    } catch (err) {
      failure = err;
    }
    const sweep = create(ExpirySweepSchema, {
      workerId: this.deps.settings.workerId,
      startTime: ts(start),
      endTime: ts(new Date()),
      holdsExpired: BigInt(done.expired),
      unitsReturned: BigInt(done.units),
      batches: done.batches,
      waitlistPromotions: BigInt(done.promotions),
      expiryLag: durationDistribution(done.lag, 1000),
    });
    if (done.expired > 0 || done.waitlistExpired > 0 || done.promotions > 0 || options.trigger === "on_demand") {
      const { state, metrics } = this.deps;
      state.lastSweep = sweep;
      state.lastSweepAt = new Date();
      state.sweepsTotal++;
      state.holdsExpiredTotal += done.expired;
      state.recordLag(done.lag);
      metrics.sweeps.inc({ trigger: options.trigger });
    }
    if (failure !== undefined) throw failure;
    return sweep;
  }

  /** One transaction: claim, expire, return the units, notify; then the lag of each hold. */
  private async expireBatch(limit: number, only: string[]): Promise<BatchResult> {
    const { db, metrics, logger } = this.deps;
    pruneSetAside(this.poisoned);
    let claimedIds: string[] = [];
    let beforeCommit = 0;
    let promotions = 0;
    try {
      const result = await db.transaction(async (trx) => {
        const claimed = await query<{ id: string; expires_at: Date }>(trx, CLAIM, [[...this.poisoned.keys()], only, only, limit]);
        claimedIds = claimed.map((c) => c.id);
        if (claimed.length === 0) return { claimed: 0, expired: [] as string[], events: [], clock: new Date(), expiresAt: new Map<string, Date>() };
        const applied = await expireClaimedHolds(trx, claimedIds, this.origin, this.deps.settings.holdTerms);
        // Promotions happen on the same SKUs, so the same notification covers them.
        await notifyInventoryChanged(trx, applied.events.map((e) => e.sku_code));
        promotions = applied.promotions.length;
        const [{ clock }] = (await query<{ clock: Date }>(trx, `SELECT clock_timestamp() AS clock`)) as [{ clock: Date }];
        beforeCommit = performance.now();
        return { claimed: claimed.length, expired: applied.expired, events: applied.events, clock, expiresAt: new Map(claimed.map((c) => [c.id, c.expires_at])) };
      });
      const commitMs = performance.now() - beforeCommit;
      const lagMs = result.expired.map((id) => result.clock.getTime() - result.expiresAt.get(id)!.getTime() + commitMs);
      const units = result.events.reduce((sum, e) => sum - e.delta_reserved, 0);
      for (const ms of lagMs) metrics.expiryLag.observe(ms / 1000);
      metrics.holdsExpired.inc(result.expired.length);
      metrics.unitsReturned.inc(units);
      if (result.expired.length > 0) logger.debug({ holds: result.expired.length, units }, "expired holds");
      return { claimed: result.claimed, expired: result.expired.length, units, lagMs, promotions };
    } catch (err) {
      // Says nothing about the holds themselves: the whole batch is retried later.
      metrics.sweepErrors.inc();
      if (isTransientDatabaseError(err)) throw err;
      if (claimedIds.length === 1) {
        // Suspects not yet tried alone go back in the queue.
        this.suspects.push(...only.filter((id) => id !== claimedIds[0]));
        this.poisoned.set(claimedIds[0]!, Date.now() + POISON_RETRY_MS);
        logger.error({ err, reservationId: claimedIds[0] }, `hold cannot be expired; setting it aside for ${POISON_RETRY_MS / 1000} s (run a reconciliation)`);
        return { claimed: 1, expired: 0, units: 0, lagMs: [], promotions: 0 };
      }
      if (claimedIds.length > 1) {
        logger.warn({ err, holds: claimedIds.length }, "expiry batch failed and was rolled back; retrying its holds one at a time");
        this.suspects = claimedIds;
        return { claimed: claimedIds.length, expired: 0, units: 0, lagMs: [], promotions: 0 };
      }
      throw err;
    }
  }

  /**
   * Expires the WAITING entries past their max_wait, batch by batch, until no SKU has
   * one left (or a batch makes no progress: another replica got there first). Adds
   * to the sweep's batches, waitlist promotions and expired entries.
   */
  private async expireWaitlist(signal: AbortSignal, done: { batches: number; promotions: number; waitlistExpired: number }): Promise<void> {
    pruneSetAside(this.poisonedSkus);
    const add = (batch: WaitlistBatchResult) => {
      if (batch.expired + batch.promotions > 0) done.batches++;
      done.waitlistExpired += batch.expired;
      done.promotions += batch.promotions;
    };
    while (!signal.aborted) {
      const batch = await this.waitlistBatchOrIsolate(WAITLIST_BATCH_SKUS, []);
      add(batch.result);
      for (const sku of batch.suspects) {
        if (signal.aborted) break;
        add((await this.waitlistBatchOrIsolate(1, [sku])).result);
      }
      if (batch.result.skus < WAITLIST_BATCH_SKUS || batch.result.expired === 0) break;
    }
  }

  /**
   * One waitlist batch. A batch that fails for a reason other than a lock wait or a lost
   * connection is rolled back and its SKUs are returned as suspects, to be tried one
   * per transaction; a SKU that fails alone is set aside (POISON_RETRY_MS) and logged.
   */
  private async waitlistBatchOrIsolate(limit: number, only: string[]): Promise<{ result: WaitlistBatchResult; suspects: string[] }> {
    const { metrics, logger } = this.deps;
    const found: string[] = [];
    try {
      return { result: await this.waitlistBatch(limit, only, found), suspects: [] };
    } catch (err) {
      metrics.sweepErrors.inc();
      if (isTransientDatabaseError(err) || found.length === 0) throw err;
      const nothing = { skus: found.length, expired: 0, promotions: 0 };
      if (found.length === 1) {
        this.poisonedSkus.set(found[0]!, Date.now() + POISON_RETRY_MS);
        logger.error({ err, sku: found[0] }, `lapsed waitlist entries of this SKU cannot be expired; setting it aside for ${POISON_RETRY_MS / 1000} s (run a reconciliation)`);
        return { result: nothing, suspects: [] };
      }
      logger.warn({ err, skus: found.length }, "waitlist expiry batch failed and was rolled back; retrying its SKUs one at a time");
      return { result: nothing, suspects: found };
    }
  }

  /**
   * One transaction: find SKUs with lapsed WAITING entries, expire them and promote what
   * now fits (promoteAndExpireWaiting), notify the SKUs that changed. `found` receives
   * the SKUs, for the caller's isolation of a failed batch.
   */
  private async waitlistBatch(limit: number, only: string[], found: string[]): Promise<WaitlistBatchResult> {
    const { db, metrics, logger } = this.deps;
    const result = await db.transaction(async (trx) => {
      const rows = await query<{ sku_code: string }>(trx, LAPSED_WAITLIST_SKUS, [[...this.poisonedSkus.keys()], only, only, limit]);
      found.push(...rows.map((r) => r.sku_code));
      if (rows.length === 0) return { skus: 0, expired: 0, promotions: 0 };
      const outcome = await promoteAndExpireWaiting(trx, found, this.origin, this.deps.settings.holdTerms);
      await notifyInventoryChanged(trx, [...outcome.expired.map((e) => e.sku_code), ...outcome.promotions.map((p) => p.entry.sku_code)]);
      return { skus: rows.length, expired: outcome.expired.length, promotions: outcome.promotions.length };
    });
    metrics.waitlistEntriesExpired.inc(result.expired);
    if (result.expired > 0) logger.info({ waitlistEntriesExpired: result.expired, waitlistPromotions: result.promotions, skus: result.skus }, "expired waitlist entries past their max_wait");
    return result;
  }

  /** How long to sleep before the next sweep: until the next expiry, capped. */
  private async untilNextExpiry(): Promise<number> {
    const { metrics, settings } = this.deps;
    const sent = Date.now();
    const backlog = await readBacklog(this.deps, [...this.poisoned.keys()]);
    const received = Date.now();
    this.clockOffsetMs = backlog.now.getTime() - (sent + received) / 2;
    metrics.overdueHolds.set(backlog.overdue);
    if (this.suspects.length > 0) return 0;
    // Overdue holds we could not claim: another transaction (a replica's sweep, a
    // ConfirmHold) has them locked. Look again shortly, without spinning.
    if (backlog.overdue > 0) return BUSY_PAUSE_MS;
    // The next hold to expire or waitlist entry to pass its max_wait.
    const next = [backlog.nextExpiresAt, backlog.nextEntryExpiresAt].filter((d) => d !== null).sort((a, b) => a.getTime() - b.getTime())[0];
    if (next === undefined) return settings.expiryMaxSleepMs;
    // +1 ms: expires_at has microseconds; wake when it has surely passed.
    const untilNext = Math.ceil(next.getTime() - backlog.now.getTime()) + 1;
    return Math.max(BUSY_PAUSE_MS / 5, Math.min(untilNext, settings.expiryMaxSleepMs));
  }

  /** An expiry at `localMs` was announced: wake up for it if that is sooner than planned. */
  private onAnnounced(localMs: number): void {
    if (this.sleeping === undefined) {
      this.announced = Math.min(this.announced ?? Infinity, localMs);
    } else if (localMs < this.sleeping.until) {
      this.sleeping.rearm(localMs + 1);
    }
  }

  private async sleepUntil(untilLocalMs: number, signal: AbortSignal): Promise<void> {
    if (this.announced !== undefined) {
      untilLocalMs = Math.min(untilLocalMs, this.announced + 1);
      this.announced = undefined;
    }
    if (untilLocalMs <= Date.now() || signal.aborted) return;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.sleeping = undefined;
        resolve();
      };
      const arm = (until: number) => {
        clearTimeout(timer);
        this.sleeping!.until = until;
        timer = setTimeout(done, Math.max(0, until - Date.now()));
      };
      this.sleeping = { until: untilLocalMs, rearm: arm };
      arm(untilLocalMs);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/** Forgets the set-aside (poison) keys whose time is up. */
function pruneSetAside(setAside: Map<string, number>, now = Date.now()): void {
  for (const [key, until] of setAside) if (until <= now) setAside.delete(key);
}
