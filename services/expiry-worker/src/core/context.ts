import type { HoldTermSettings } from "@holdfast/schema";
import type { Knex } from "knex";
import type { Logger } from "@holdfast/runtime";
import type { ExpirySweep } from "@holdfast/contracts";
import type { WorkerMetrics } from "./metrics.js";

export type { Call, Principal } from "@holdfast/core";

/**
 * The worker's software version (WorkerStatus.version, worker_replicas.version).
 * Here rather than in status.ts, which imports replicas.ts: no import cycle.
 */
export const WORKER_VERSION = "0.1.0";

/** Server settings of the worker (environment variables in README, "Configuration"). */
export interface WorkerSettings {
  /** This replica's id (WORKER_ID): the ledger's actor is "worker:<id>". */
  workerId: string;
  /** Holds per expiry transaction. */
  expiryBatchSize: number;
  /** The longest the sweeper sleeps without looking at the database (a backstop for lost notifications). */
  expiryMaxSleepMs: number;
  /** WorkerStatus.expiry_lag covers this window. */
  expiryLagWindowMs: number;
  /** Scheduled reconciliation every this many ms (0 = none). */
  reconciliationIntervalMs: number;
  reconciliationScheduledMode: "CHECK" | "REPAIR";
  /** A RUNNING run's lease; renewed while it works, FAILED by anyone once it lapses. */
  reconciliationLeaseMs: number;
  /** Scheduled snapshot passes every this many ms (0 = none). */
  snapshotIntervalMs: number;
  /** Snapshot rows older than this are pruned. */
  snapshotRetentionMs: number;
  /** How often retention (idempotency records, snapshots, dead replicas) runs. */
  retentionIntervalMs: number;
  /** How long the worker API's idempotency records are replayed. */
  idempotencyWindowMs: number;
  /** How often this replica records its heartbeat (and renews its leases). */
  heartbeatIntervalMs: number;
  /**
   * Terms of the holds that the worker's waitlist promotions create (expired units go to
   * the SKU's waitlist in the sweep's transaction), from the same HOLD_TTL_* settings as
   * the reservation-service.
   */
  holdTerms: HoldTermSettings;
}

/**
 * What this replica has done since it started: GetWorkerStatus reads it, the
 * Prometheus metrics mirror it. One per process, written only by its own loops.
 */
export class WorkerState {
  readonly startedAt = new Date();
  lastSweep: ExpirySweep | undefined;
  lastSweepAt: Date | undefined;
  sweepsTotal = 0;
  holdsExpiredTotal = 0;
  /** True while the LISTEN connection is up. */
  listening = false;
  lastRetentionAt: Date | undefined;
  idempotencyRecordsPrunedTotal = 0;
  snapshotsPrunedTotal = 0;
  /** Expiry lag samples (ms) with the time they were taken, oldest first. */
  private readonly lag: { at: number; ms: number }[] = [];

  constructor(private readonly lagWindowMs: number) {}

  recordLag(samplesMs: readonly number[], at = Date.now()): void {
    for (const ms of samplesMs) this.lag.push({ at, ms });
    this.trimLag(at);
  }

  /** The lag samples of the window, in ms. */
  lagSamples(now = Date.now()): number[] {
    this.trimLag(now);
    return this.lag.map((s) => s.ms);
  }

  private trimLag(now: number): void {
    const cutoff = now - this.lagWindowMs;
    let drop = 0;
    while (drop < this.lag.length && this.lag[drop]!.at < cutoff) drop++;
    // Bounded memory whatever the expiry rate: keep the newest 100k samples.
    drop = Math.max(drop, this.lag.length - 100_000);
    if (drop > 0) this.lag.splice(0, drop);
  }
}

/** What every operation of the worker runs with. */
export interface WorkerDeps {
  db: Knex;
  settings: WorkerSettings;
  logger: Logger;
  state: WorkerState;
  metrics: WorkerMetrics;
}
