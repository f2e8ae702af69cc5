/**
 * Rows to contract messages. The database stores enum values as their names without
 * prefix ("HELD"), which are also the member names of the generated TypeScript enums.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import { enumValue, ts, tsOrUndefined } from "@holdfast/core";
import {
  AuditEventSchema,
  AuditOperation,
  AvailabilitySchema,
  AvailabilitySnapshotSchema,
  DemandStatus,
  HotSkuMode,
  LockingStrategy,
  ReservationSchema,
  ReservationStatus,
  ReservationType,
  SkuPolicySchema,
  SkuSchema,
  SnapshotTrigger,
  WaitlistEntrySchema,
  WaitlistEntryStatus,
  WaitlistPromotionPolicy,
  type AuditEvent,
  type Availability,
  type AvailabilitySnapshot,
  type Reservation,
  type Sku,
  type SkuPolicy,
  type WaitlistEntry,
} from "@holdfast/contracts";
import type { AuditEventRow, InventoryRow, InventorySnapshotRow, ReservationRow, SkuRow, WaitlistEntryRow } from "@holdfast/schema";

const dur = (ms: number | null): Duration | undefined => (ms === null ? undefined : durationFromMs(ms));

/**
 * Demand indicator, from the availability row alone so that it only changes with
 * `version` (contract). Provisional rule until the fairness work defines it in
 * docs/fairness.md: OUT_OF_STOCK when nothing is available; HIGH_DEMAND when people
 * are waiting or at most 10% of on-hand is left; HEALTHY otherwise.
 */
export function demandStatus(row: InventoryRow): DemandStatus {
  if (row.available <= 0) return DemandStatus.OUT_OF_STOCK;
  if (row.waitlist_count > 0 || row.available * 10 <= row.on_hand) return DemandStatus.HIGH_DEMAND;
  return DemandStatus.HEALTHY;
}

export function toAvailability(row: InventoryRow): Availability {
  return create(AvailabilitySchema, {
    sku: row.sku_code,
    onHand: BigInt(row.on_hand),
    reserved: BigInt(row.reserved),
    allocated: BigInt(row.allocated),
    available: BigInt(row.available),
    version: BigInt(row.version),
    demandStatus: demandStatus(row),
    waitlistLength: BigInt(row.waitlist_count),
    waitlistUnits: BigInt(row.waitlist_units),
    updateTime: ts(row.updated_at),
  });
}

/** Sku.policy as stored (NULL = zero value = server default). */
export function toPolicy(row: SkuRow): SkuPolicy {
  return create(SkuPolicySchema, {
    defaultLockingStrategy: enumValue(LockingStrategy, row.default_locking_strategy),
    maxUnitsPerCustomer: row.max_units_per_customer ?? 0,
    defaultHoldTtl: dur(row.default_hold_ttl_ms),
    maxHoldTtl: dur(row.max_hold_ttl_ms),
    maxHoldLifetime: dur(row.max_hold_lifetime_ms),
    customerAttemptRateLimit:
      row.rate_limit_max_attempts === null ? undefined : { maxAttempts: row.rate_limit_max_attempts, window: dur(row.rate_limit_window_ms) },
    abandonmentAwareTtl: row.abandonment_aware_ttl,
    hotSkuMode: enumValue(HotSkuMode, row.hot_sku_mode),
    stockBuckets: row.stock_buckets ?? 0,
    waitlistDisabled: row.waitlist_disabled,
    maxWaitlistLength: row.max_waitlist_length ?? 0,
    waitlistPromotionPolicy: enumValue(WaitlistPromotionPolicy, row.waitlist_promotion_policy),
    promotionHoldTtl: dur(row.promotion_hold_ttl_ms),
  });
}

export function toSku(row: SkuRow, inventory: InventoryRow): Sku {
  return create(SkuSchema, {
    code: row.code,
    name: row.name,
    policy: toPolicy(row),
    availability: toAvailability(inventory),
    createTime: ts(row.created_at),
    updateTime: ts(row.updated_at),
  });
}

/** A reservation line as read (SKU order). */
export interface LineRow {
  sku_code: string;
  quantity: number;
}

/**
 * Reservation as the contract reports it. Expiry is a rule: a HELD hold whose
 * expires_at is not after `now` (the database's clock) is reported EXPIRED with
 * close_reason "expired", before any sweep.
 */
export function toReservation(row: ReservationRow, lines: readonly LineRow[], now: Date): Reservation {
  const lapsed = row.status === "HELD" && row.expires_at !== null && row.expires_at.getTime() <= now.getTime();
  return create(ReservationSchema, {
    id: row.id,
    type: enumValue(ReservationType, row.type),
    status: lapsed ? ReservationStatus.EXPIRED : enumValue(ReservationStatus, row.status),
    customerId: row.customer_id,
    lines: lines.map((l) => ({ sku: l.sku_code, quantity: l.quantity })),
    lockingStrategy: enumValue(LockingStrategy, row.locking_strategy),
    createTime: ts(row.created_at),
    updateTime: ts(row.updated_at),
    expireTime: tsOrUndefined(row.expires_at),
    confirmTime: tsOrUndefined(row.confirmed_at),
    closeTime: lapsed ? tsOrUndefined(row.expires_at) : tsOrUndefined(row.closed_at),
    closeReason: lapsed ? "expired" : (row.close_reason ?? ""),
    requestId: row.request_id ?? "",
    waitlistEntryId: row.waitlist_entry_id ?? "",
    createdBy: row.caller,
  });
}

export function toAuditEvent(row: AuditEventRow): AuditEvent {
  return create(AuditEventSchema, {
    id: BigInt(row.id),
    eventTime: ts(row.occurred_at),
    operation: enumValue(AuditOperation, row.operation),
    sku: row.sku_code,
    reservationId: row.reservation_id ?? "",
    onHandDelta: BigInt(row.delta_on_hand),
    reservedDelta: BigInt(row.delta_reserved),
    allocatedDelta: BigInt(row.delta_allocated),
    onHandBefore: BigInt(row.on_hand_before),
    onHandAfter: BigInt(row.on_hand_after),
    reservedBefore: BigInt(row.reserved_before),
    reservedAfter: BigInt(row.reserved_after),
    allocatedBefore: BigInt(row.allocated_before),
    allocatedAfter: BigInt(row.allocated_after),
    versionAfter: BigInt(row.version_after),
    actor: row.actor,
    requestId: row.request_id ?? "",
    reason: row.reason ?? "",
    reconciliationRunId: row.reconciliation_run_id ?? "",
  });
}

export function toSnapshot(row: InventorySnapshotRow): AvailabilitySnapshot {
  return create(AvailabilitySnapshotSchema, {
    id: String(row.id),
    snapshotRunId: row.snapshot_run_id,
    // demand_status is not recorded (contract): UNSPECIFIED.
    availability: { ...toAvailability({ ...row, updated_at: row.inventory_updated_at, recent_attempts_per_minute: 0 }), demandStatus: DemandStatus.UNSPECIFIED },
    snapshotTime: ts(row.taken_at),
    trigger: enumValue(SnapshotTrigger, row.trigger),
  });
}

/**
 * Where a waitlist entry stands at read time (see waitlist.ts `readEntries`): its place
 * among the live WAITING entries of its SKU (null when it holds none) and the units
 * ahead of it, and whether it has lapsed without having been swept yet (WAITING past its
 * own max_wait, or PROMOTED with its hold past expiry: EXPIRED at read time, as
 * toReservation reports a lapsed hold).
 */
export interface EntryStanding {
  place: number | null;
  unitsAhead: number;
  lapsed: boolean;
}

/** A waitlist entry; position and units_ahead only while WAITING (0 otherwise, contract). */
export function toWaitlistEntry(row: WaitlistEntryRow, standing: EntryStanding = { place: null, unitsAhead: 0, lapsed: false }): WaitlistEntry {
  const status = standing.lapsed ? "EXPIRED" : row.status;
  const waiting = status === "WAITING" && standing.place !== null;
  return create(WaitlistEntrySchema, {
    id: row.id,
    sku: row.sku_code,
    customerId: row.customer_id,
    quantity: row.quantity,
    status: enumValue(WaitlistEntryStatus, status),
    position: waiting ? BigInt(standing.place!) : 0n,
    unitsAhead: waiting ? BigInt(standing.unitsAhead) : 0n,
    createTime: ts(row.created_at),
    updateTime: ts(row.updated_at),
    expireTime: tsOrUndefined(row.expires_at),
    promoteTime: tsOrUndefined(row.promoted_at),
    reservationId: row.reservation_id ?? "",
    requestId: row.request_id,
  });
}
