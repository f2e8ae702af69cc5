import type { LockingStrategy } from "@holdfast/schema";

/**
 * Server settings of the reservation logic (environment variables in README,
 * "Configuration"; the contract's "unless configured" values are the defaults).
 */
export interface ReservationSettings {
  /** Strategy when neither the request nor every SKU of it names one. */
  defaultLockingStrategy: LockingStrategy;
  /** The database lock_timeout (PESSIMISTIC waits at most this long per row). */
  lockTimeoutMs: number;
  /** OPTIMISTIC: compare-and-set attempts before CONFLICT_RETRIES_EXHAUSTED. */
  optimisticMaxAttempts: number;
  /** OPTIMISTIC: backoff before retry n is random in [0, min(max, base * 2^n)] ("full jitter"). */
  optimisticBackoffBaseMs: number;
  optimisticBackoffMaxMs: number;
  /** Lines per CreateHold / CreateAllocation. */
  maxLinesPerRequest: number;
  holdTtlMinMs: number;
  holdTtlMaxMs: number;
  /** Already capped at holdTtlMaxMs. */
  defaultHoldTtlMs: number;
  maxHoldLifetimeMs: number;
  /** How long an idempotency record is replayed. */
  idempotencyWindowMs: number;
  /** CheckConsistency reports a HELD hold past expiry by more than this as OVERDUE_HOLD. */
  overdueHoldGraceMs: number;
  /** HOT_SKU_MODE_GROUP_COMMIT: most holds one batch transaction makes. */
  hotSkuMaxBatch: number;
  /** Batch transactions of one GROUP_COMMIT SKU in flight at once in this process (group-commit.ts). */
  hotSkuBatchesInFlight: number;
}
