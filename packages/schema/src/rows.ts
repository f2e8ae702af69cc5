/**
 * Typed rows for every Holdfast table, the value sets of every status column, and the
 * Knex table typing (`knex('inventory')` is typed by the module augmentation at the end).
 *
 * Column names are exactly the database's (snake_case): rows are what `pg` returns, with
 * the type parsing of `createKnex`:
 * - bigint / numeric  -> number (see database.ts; counters are far below 2^53)
 * - timestamptz       -> Date
 * - uuid, text        -> string
 * - jsonb             -> parsed JSON
 * - bytea             -> Buffer
 * - text[]            -> string[]
 *
 * Each table has a Row (what a SELECT returns), an Insert (what an INSERT needs: columns
 * with defaults optional, generated columns absent) and an Update type.
 *
 * jsonb caveat: `pg` serializes a JS *object* to JSON, but a JS *array* to a PostgreSQL
 * array literal, which is not valid JSON. Write jsonb values with {@link toJsonb}
 * (JSON text) unless they are plain objects; the Insert types below accept both.
 */
import type { Knex } from 'knex';

// ---------------------------------------------------------------------------------------
// Value sets (each mirrors a CHECK constraint in the migrations, and each is the
// contract's enum value names without their prefix; UNSPECIFIED is never stored)
// ---------------------------------------------------------------------------------------

export const LOCKING_STRATEGIES = ['OPTIMISTIC', 'PESSIMISTIC'] as const;
/** reservations.locking_strategy, skus.default_locking_strategy (NULL there = server default). */
export type LockingStrategy = (typeof LOCKING_STRATEGIES)[number];

export const HOT_SKU_MODES = ['OFF', 'GROUP_COMMIT', 'BUCKETED'] as const;
/**
 * skus.hot_sku_mode (HotSkuMode; NULL = UNSPECIFIED, which means OFF). Every mode of the
 * contract is storable; the service refuses, with UNIMPLEMENTED, a mode its build does
 * not implement yet, before anything is stored.
 */
export type HotSkuMode = (typeof HOT_SKU_MODES)[number];

export const WAITLIST_PROMOTION_POLICIES = ['STRICT_FIFO', 'FIRST_FIT'] as const;
/** skus.waitlist_promotion_policy (NULL = server default, STRICT_FIFO unless configured). */
export type WaitlistPromotionPolicy = (typeof WAITLIST_PROMOTION_POLICIES)[number];

export const DEMAND_STATUSES = ['HEALTHY', 'HIGH_DEMAND', 'OUT_OF_STOCK'] as const;
/**
 * Availability.demand_status. Not stored: derived at read time from the inventory row
 * (available, waitlist_count, recent_attempts_per_minute; rule in docs/fairness.md).
 */
export type DemandStatus = (typeof DEMAND_STATUSES)[number];

export const RESERVATION_TYPES = ['HOLD', 'ALLOCATION'] as const;
export type ReservationType = (typeof RESERVATION_TYPES)[number];

export const RESERVATION_STATUSES = ['HELD', 'ALLOCATED', 'RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED'] as const;
/**
 * reservations.status and reservation_items.status.
 * HOLD: HELD -> ALLOCATED | RELEASED | EXPIRED; ALLOCATED -> FULFILLED | CANCELLED.
 */
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];
/** Statuses with `closed_at` set: nothing changes after them. */
export const FINAL_RESERVATION_STATUSES = ['RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED'] as const satisfies readonly ReservationStatus[];
/** Statuses whose lines count in inventory.reserved (HELD) and inventory.allocated (ALLOCATED). */
export const ACTIVE_RESERVATION_STATUSES = ['HELD', 'ALLOCATED'] as const satisfies readonly ReservationStatus[];
/** Statuses with `confirmed_at` set (both types). */
export const ALLOCATION_RESERVATION_STATUSES = ['ALLOCATED', 'FULFILLED', 'CANCELLED'] as const satisfies readonly ReservationStatus[];
/** reservations.close_reason of every EXPIRED reservation (constraint reservations_close_reason_valid). */
export const CLOSE_REASON_EXPIRED = 'expired';

export const AUDIT_OPERATIONS = [
  'SKU_CREATED',
  'STOCK_ADJUSTED',
  'HOLD_CREATED',
  'HOLD_CONFIRMED',
  'HOLD_RELEASED',
  'HOLD_EXPIRED',
  'ALLOCATION_CREATED',
  'ALLOCATION_FULFILLED',
  'ALLOCATION_CANCELLED',
  'WAITLIST_PROMOTED',
  'RECONCILIATION_REPAIR',
] as const;
/**
 * audit_events.operation: exactly the contract's AuditOperation, in its order. Each one
 * moves the counters in one way only (constraint audit_events_delta_shape):
 * - SKU_CREATED: on_hand += initial (all "before" values 0; version_after = 1)
 * - STOCK_ADJUSTED: on_hand += delta
 * - HOLD_CREATED, WAITLIST_PROMOTED: reserved += q
 * - HOLD_CONFIRMED: reserved -= q, allocated += q
 * - HOLD_RELEASED, HOLD_EXPIRED: reserved -= q
 * - ALLOCATION_CREATED: allocated += q
 * - ALLOCATION_FULFILLED: on_hand -= q, allocated -= q
 * - ALLOCATION_CANCELLED: allocated -= q
 * - RECONCILIATION_REPAIR: any correction, with its reconciliation_run_id. To keep
 *   counters = SUM(deltas) after a change made outside the ledger, record the drift
 *   (before = ledger value, after = value found) and then the correction (before =
 *   found, after = repaired).
 * There is no "extended" operation: ExtendHold changes no counter and writes no event.
 * All but SKU_CREATED, STOCK_ADJUSTED and RECONCILIATION_REPAIR need a reservation_id.
 */
export type AuditOperation = (typeof AUDIT_OPERATIONS)[number];

export const SNAPSHOT_TRIGGERS = ['SCHEDULED', 'ON_DEMAND'] as const;
/** inventory_snapshots.trigger (SnapshotTrigger). */
export type SnapshotTrigger = (typeof SNAPSHOT_TRIGGERS)[number];

export const RECONCILIATION_MODES = ['CHECK', 'REPAIR'] as const;
export type ReconciliationMode = (typeof RECONCILIATION_MODES)[number];

export const RECONCILIATION_STATUSES = ['RUNNING', 'OK', 'ISSUES', 'FAILED'] as const;
export type ReconciliationStatus = (typeof RECONCILIATION_STATUSES)[number];

export const RECONCILIATION_TRIGGERS = ['SCHEDULED', 'ON_DEMAND'] as const;
/** reconciliation_runs.trigger (ReconciliationTrigger). */
export type ReconciliationTrigger = (typeof RECONCILIATION_TRIGGERS)[number];

export const WAITLIST_STATUSES = ['WAITING', 'PROMOTED', 'CONFIRMED', 'EXPIRED', 'CANCELLED'] as const;
/**
 * waitlist_entries.status (WaitlistEntryStatus).
 * WAITING -> PROMOTED | EXPIRED | CANCELLED; PROMOTED -> CONFIRMED | EXPIRED | CANCELLED.
 * EXPIRED: the entry's own expires_at passed while WAITING, or its promoted hold expired.
 */
export type WaitlistStatus = (typeof WAITLIST_STATUSES)[number];
/** At most one entry per customer and SKU in these (index waitlist_entries_one_active_per_customer). */
export const ACTIVE_WAITLIST_STATUSES = ['WAITING', 'PROMOTED'] as const satisfies readonly WaitlistStatus[];
/** Statuses with `closed_at` set. */
export const FINAL_WAITLIST_STATUSES = ['CONFIRMED', 'EXPIRED', 'CANCELLED'] as const satisfies readonly WaitlistStatus[];

export const IDEMPOTENCY_STATES = ['IN_FLIGHT', 'COMPLETED'] as const;
export type IdempotencyState = (typeof IDEMPOTENCY_STATES)[number];

export const HOLD_ATTEMPT_OUTCOMES = ['GRANTED', 'REFUSED', 'WAITLISTED'] as const;
/** hold_attempts.outcome: FlashSaleReport's requests_granted / requests_refused / requests_waitlisted. */
export type HoldAttemptOutcome = (typeof HOLD_ATTEMPT_OUTCOMES)[number];

/** The principal recorded for holds created by a waitlist promotion (Reservation.created_by). */
export const WAITLIST_PRINCIPAL = 'system:waitlist';
/** reconciliation_runs.requested_by of a scheduled run. */
export const SCHEDULE_PRINCIPAL = 'system:schedule';

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * A jsonb value to write: JSON text (from {@link toJsonb}), or a plain object (which
 * `pg` serializes itself). Not a bare array: see the module comment.
 */
export type JsonbWrite = string | JsonObject;

/** Serializes a value for a jsonb column (always safe, arrays included). */
export function toJsonb(value: JsonValue): string {
  return JSON.stringify(value);
}

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

/** Makes the listed keys optional. */
type Optional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

// skus ----------------------------------------------------------------------------------

/**
 * The catalog and the per-SKU policy (SkuPolicy, one column per field). NULL = the
 * contract's zero value: server default, or "no limit" for max_units_per_customer,
 * the rate limit and max_waitlist_length. Durations are milliseconds.
 */
export interface SkuRow {
  code: string;
  name: string;
  default_locking_strategy: LockingStrategy | null;
  /** 1..1,000,000; null = no limit. */
  max_units_per_customer: number | null;
  default_hold_ttl_ms: number | null;
  max_hold_ttl_ms: number | null;
  /** Up to 7 days. */
  max_hold_lifetime_ms: number | null;
  /** customer_attempt_rate_limit.max_attempts, 1..1,000,000; null (with the window) = no limit. */
  rate_limit_max_attempts: number | null;
  /** customer_attempt_rate_limit.window, 1 s..1 h; null exactly when rate_limit_max_attempts is. */
  rate_limit_window_ms: number | null;
  abandonment_aware_ttl: boolean;
  hot_sku_mode: HotSkuMode | null;
  /** 1..256; null = server default. */
  stock_buckets: number | null;
  waitlist_disabled: boolean;
  /** 1..1,000,000; null = no limit. */
  max_waitlist_length: number | null;
  waitlist_promotion_policy: WaitlistPromotionPolicy | null;
  /** null = the effective default hold TTL. */
  promotion_hold_ttl_ms: number | null;
  created_at: Date;
  /** Name or policy changed. */
  updated_at: Date;
}
export type SkuInsert = Optional<
  SkuRow,
  | 'default_locking_strategy'
  | 'max_units_per_customer'
  | 'default_hold_ttl_ms'
  | 'max_hold_ttl_ms'
  | 'max_hold_lifetime_ms'
  | 'rate_limit_max_attempts'
  | 'rate_limit_window_ms'
  | 'abandonment_aware_ttl'
  | 'hot_sku_mode'
  | 'stock_buckets'
  | 'waitlist_disabled'
  | 'max_waitlist_length'
  | 'waitlist_promotion_policy'
  | 'promotion_hold_ttl_ms'
  | 'created_at'
  | 'updated_at'
>;
export type SkuUpdate = Partial<Omit<SkuRow, 'code' | 'created_at'>>;

// inventory -----------------------------------------------------------------------------

/** The availability row of a SKU (Availability). Every change bumps `version`. */
export interface InventoryRow {
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  /** Generated: on_hand - reserved - allocated. Never written. */
  available: number;
  /** Availability.waitlist_length: number of WAITING entries. */
  waitlist_count: number;
  /** Availability.waitlist_units: sum of the WAITING entries' quantities. */
  waitlist_units: number;
  /** Demand-status input, rewritten only when it crosses a threshold (docs/fairness.md). */
  recent_attempts_per_minute: number;
  /** Starts at 1 (CreateSku); +1 on any change of the row. */
  version: number;
  /** Availability.update_time. */
  updated_at: Date;
}
export type InventoryInsert = Optional<
  Omit<InventoryRow, 'available'>,
  'on_hand' | 'reserved' | 'allocated' | 'waitlist_count' | 'waitlist_units' | 'recent_attempts_per_minute' | 'version' | 'updated_at'
>;
export type InventoryUpdate = Partial<Omit<InventoryRow, 'sku_code' | 'available'>>;

// reservations --------------------------------------------------------------------------

/**
 * Reservation header. Read-time rule: a HELD row past `expires_at` is reported as
 * EXPIRED (close_reason "expired") before it is swept.
 */
export interface ReservationRow {
  id: string;
  type: ReservationType;
  status: ReservationStatus;
  customer_id: string;
  /** The authenticated principal (Reservation.created_by); idempotency is scoped per caller. */
  caller: string;
  /** Null exactly for a hold created by a waitlist promotion. */
  request_id: string | null;
  locking_strategy: LockingStrategy;
  /** Set for every HOLD (kept after confirmation), null for a direct ALLOCATION. */
  expires_at: Date | null;
  /** HOLD only: created_at + the max hold lifetime in force at creation; bound of ExtendHold. */
  max_expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  /** Set in ALLOCATED / FULFILLED / CANCELLED, for both types (creation time for a direct allocation). */
  confirmed_at: Date | null;
  closed_at: Date | null;
  /** RELEASED / CANCELLED: the caller's reason (or null); EXPIRED: 'expired'; otherwise null. */
  close_reason: string | null;
  /** The waitlist entry whose promotion created this hold. */
  waitlist_entry_id: string | null;
  version: number;
}
export type ReservationInsert = Optional<
  ReservationRow,
  | 'id'
  | 'request_id'
  | 'expires_at'
  | 'max_expires_at'
  | 'created_at'
  | 'updated_at'
  | 'confirmed_at'
  | 'closed_at'
  | 'close_reason'
  | 'waitlist_entry_id'
  | 'version'
>;
export type ReservationUpdate = Partial<Omit<ReservationRow, 'id' | 'created_at'>>;

// reservation_items ---------------------------------------------------------------------

/**
 * One line per SKU per reservation, returned in SKU order (ORDER BY sku_code). `status`
 * and `expires_at` are copies of the header's, kept in step by the service in the same
 * transaction (CheckConsistency verifies them).
 */
export interface ReservationItemRow {
  reservation_id: string;
  sku_code: string;
  /** 1..1,000,000; lines of the same SKU are summed into one row. */
  quantity: number;
  /** = reservations.status. */
  status: ReservationStatus;
  /** = reservations.expires_at. */
  expires_at: Date | null;
  /** = reservations.created_at (never changes). */
  created_at: Date;
}
export type ReservationItemInsert = Optional<ReservationItemRow, 'expires_at'>;
export type ReservationItemUpdate = Partial<Pick<ReservationItemRow, 'quantity' | 'status' | 'expires_at'>>;

// audit_events --------------------------------------------------------------------------

export interface AuditEventRow {
  id: number;
  occurred_at: Date;
  operation: AuditOperation;
  sku_code: string;
  reservation_id: string | null;
  delta_on_hand: number;
  delta_reserved: number;
  delta_allocated: number;
  on_hand_before: number;
  reserved_before: number;
  allocated_before: number;
  on_hand_after: number;
  reserved_after: number;
  allocated_after: number;
  /** inventory.version right after the change (1 for SKU_CREATED; may skip values). */
  version_after: number;
  actor: string;
  request_id: string | null;
  reason: string | null;
  /** Set exactly for RECONCILIATION_REPAIR. */
  reconciliation_run_id: string | null;
  details: JsonValue | null;
}
export type AuditEventInsert = Optional<
  Omit<AuditEventRow, 'id' | 'details'>,
  | 'occurred_at'
  | 'reservation_id'
  | 'delta_on_hand'
  | 'delta_reserved'
  | 'delta_allocated'
  | 'request_id'
  | 'reason'
  | 'reconciliation_run_id'
> & { details?: JsonbWrite | null };
/** The ledger is append-only: the database refuses every UPDATE. */
export type AuditEventUpdate = never;

// inventory_snapshots -------------------------------------------------------------------

/** One SKU's availability row as read by one snapshot pass (AvailabilitySnapshot). */
export interface InventorySnapshotRow {
  /** AvailabilitySnapshot.id (rendered as a decimal string; opaque to clients). */
  id: number;
  /** One uuid per pass, shared by its rows. */
  snapshot_run_id: string;
  /** The pass's consistent-read time (its transaction's now()). */
  taken_at: Date;
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  version: number;
  waitlist_count: number;
  waitlist_units: number;
  /** inventory.updated_at as read (Availability.update_time). */
  inventory_updated_at: Date;
  /** The SKU's last ledger event included in these counters (null if none). */
  last_audit_event_id: number | null;
  trigger: SnapshotTrigger;
}
export type InventorySnapshotInsert = Optional<Omit<InventorySnapshotRow, 'id'>, 'taken_at' | 'last_audit_event_id'>;
export type InventorySnapshotUpdate = Partial<Omit<InventorySnapshotRow, 'id'>>;

// reconciliation_runs -------------------------------------------------------------------

/**
 * One element of reconciliation_runs.findings: the contract's ReconciliationFinding with
 * its field names. Enum values are names without their prefix; optional fields are
 * absent (not null) when unset.
 */
export interface ReconciliationFindingJson {
  sku: string;
  /** InventoryCounter: 'ON_HAND' | 'RESERVED' | 'ALLOCATED' | 'AVAILABLE'. */
  counter: string;
  /** ConsistencyViolationKind, e.g. 'RESERVED_MISMATCH'. */
  kind: string;
  stored_value: number;
  value_from_lines?: number;
  value_from_ledger?: number;
  corrected_value: number;
  repaired: boolean;
  /** The compensating RECONCILIATION_REPAIR event (absent if none). */
  repair_audit_event_id?: number;
  detail: string;
}

export interface ReconciliationRunRow {
  id: string;
  mode: ReconciliationMode;
  status: ReconciliationStatus;
  trigger: ReconciliationTrigger;
  /** "<role>:<subject>" of the caller, or 'system:schedule'. */
  requested_by: string;
  /** The RunReconciliation request_id; null exactly when trigger is SCHEDULED. */
  request_id: string | null;
  /** The replica running (or that ran) it. */
  worker_id: string;
  /** ReconciliationRun.skus; null = every SKU. */
  sku_filter: string[] | null;
  created_at: Date;
  /** Null until the run starts checking. */
  started_at: Date | null;
  finished_at: Date | null;
  /** ReconciliationRun.lease_expire_time: renewed while RUNNING, kept after the run ends. */
  lease_expires_at: Date | null;
  skus_checked: number;
  skus_with_findings: number;
  finding_count: number;
  repaired_count: number;
  /** Always a JSON array (constraint reconciliation_runs_findings_is_array). */
  findings: ReconciliationFindingJson[];
  /** Set exactly when FAILED. */
  error: string | null;
}
export type ReconciliationRunInsert = Optional<
  Omit<ReconciliationRunRow, 'findings'>,
  | 'id'
  | 'status'
  | 'request_id'
  | 'sku_filter'
  | 'created_at'
  | 'started_at'
  | 'finished_at'
  | 'lease_expires_at'
  | 'skus_checked'
  | 'skus_with_findings'
  | 'finding_count'
  | 'repaired_count'
  | 'error'
> & { /** JSON text of an array: use toJsonb(findings). */ findings?: string };
export type ReconciliationRunUpdate = Partial<Omit<ReconciliationRunRow, 'id' | 'findings'>> & {
  /** JSON text of an array: use toJsonb(findings). */
  findings?: string;
};

// worker_replicas -----------------------------------------------------------------------

/** An expiry-worker process and its heartbeat (WorkerStatus.replicas). */
export interface WorkerReplicaRow {
  worker_id: string;
  /** WorkerReplica.host is `${host}/${pid}`. */
  host: string;
  pid: number;
  /** The worker's software version. */
  version: string;
  started_at: Date;
  heartbeat_at: Date;
}
export type WorkerReplicaInsert = Optional<WorkerReplicaRow, 'started_at' | 'heartbeat_at'>;
export type WorkerReplicaUpdate = Partial<Omit<WorkerReplicaRow, 'worker_id'>>;

// waitlist_entries ----------------------------------------------------------------------

/**
 * A place in a SKU's FIFO waitlist. Queue order is `seq`, never created_at. position /
 * units_ahead are derived at read time from the WAITING entries with a smaller seq.
 */
export interface WaitlistEntryRow {
  id: string;
  /** Arrival order (identity), the FIFO key. */
  seq: number;
  sku_code: string;
  customer_id: string;
  /** 1..1,000,000. */
  quantity: number;
  status: WaitlistStatus;
  caller: string;
  /** Of the JoinWaitlist or CreateHold that created it (shared by one CreateHold's entries). */
  request_id: string;
  /** The hold created by the promotion (set exactly when promoted_at is). */
  reservation_id: string | null;
  created_at: Date;
  updated_at: Date;
  /** The entry's own deadline (JoinWaitlist.max_wait); null = waits until promoted or cancelled. */
  expires_at: Date | null;
  promoted_at: Date | null;
  /** Set in CONFIRMED / EXPIRED / CANCELLED. */
  closed_at: Date | null;
}
export type WaitlistEntryInsert = Optional<
  Omit<WaitlistEntryRow, 'seq'>,
  'id' | 'status' | 'reservation_id' | 'created_at' | 'updated_at' | 'expires_at' | 'promoted_at' | 'closed_at'
>;
export type WaitlistEntryUpdate = Partial<Omit<WaitlistEntryRow, 'id' | 'seq' | 'created_at'>>;

// idempotency_records -------------------------------------------------------------------

export interface IdempotencyRecordRow {
  caller: string;
  request_id: string;
  /** Fully qualified RPC name. */
  method: string;
  /** Hash of the canonical request bytes. */
  request_hash: string;
  state: IdempotencyState;
  /** Serialized response or business error; set when COMPLETED. */
  response: Buffer | null;
  /** gRPC status code of the recorded outcome (0 = OK); set when COMPLETED. */
  status_code: number | null;
  created_at: Date;
  completed_at: Date | null;
  /** End of the retention window. */
  expires_at: Date;
  /** For IN_FLIGHT records committed ahead of the work: after this, presumed abandoned. */
  lease_expires_at: Date | null;
}
export type IdempotencyRecordInsert = Optional<
  IdempotencyRecordRow,
  'state' | 'response' | 'status_code' | 'created_at' | 'completed_at' | 'expires_at' | 'lease_expires_at'
>;
export type IdempotencyRecordUpdate = Partial<Omit<IdempotencyRecordRow, 'caller' | 'request_id' | 'created_at'>>;

// hold_attempts -------------------------------------------------------------------------

export interface HoldAttemptRow {
  id: number;
  /** Groups the lines (one row per SKU) of one CreateHold call. */
  attempt_id: string;
  /** Arrival at the server. */
  received_at: Date;
  latency_us: number;
  caller: string;
  customer_id: string;
  request_id: string | null;
  sku_code: string;
  quantity: number;
  locking_strategy: LockingStrategy | null;
  outcome: HoldAttemptOutcome;
  /** ErrorReason name without its prefix (e.g. 'PER_CUSTOMER_LIMIT_EXCEEDED'); null exactly for GRANTED. */
  reason: string | null;
  /** The hold, when GRANTED. */
  reservation_id: string | null;
  /** The entry of this line, when WAITLISTED and this line was short. */
  waitlist_entry_id: string | null;
  /** An idempotent replay: not counted as a new attempt. */
  replayed: boolean;
}
export type HoldAttemptInsert = Optional<
  Omit<HoldAttemptRow, 'id'>,
  'request_id' | 'locking_strategy' | 'reason' | 'reservation_id' | 'waitlist_entry_id' | 'replayed'
>;
export type HoldAttemptUpdate = Partial<Omit<HoldAttemptRow, 'id'>>;

// customer_attempt_windows ------------------------------------------------------------

/** The sliding log of SkuPolicy.customer_attempt_rate_limit for one (SKU, customer) (migration 0004). */
export interface CustomerAttemptWindowRow {
  sku_code: string;
  customer_id: string;
  max_attempts: number;
  window_ms: number;
  /** Admitted attempts still inside the window, oldest first (at most max_attempts). */
  admitted: Date[];
  last_attempt_at: Date;
  last_admitted: boolean;
  /** When the newest admitted attempt leaves the window (retention deletes the row after). */
  expires_at: Date;
}

// ---------------------------------------------------------------------------------------
// Knex table typing
// ---------------------------------------------------------------------------------------

/** Table name -> row / insert / update types. */
export interface HoldfastTables {
  skus: Knex.CompositeTableType<SkuRow, SkuInsert, SkuUpdate>;
  inventory: Knex.CompositeTableType<InventoryRow, InventoryInsert, InventoryUpdate>;
  reservations: Knex.CompositeTableType<ReservationRow, ReservationInsert, ReservationUpdate>;
  reservation_items: Knex.CompositeTableType<ReservationItemRow, ReservationItemInsert, ReservationItemUpdate>;
  reconciliation_runs: Knex.CompositeTableType<ReconciliationRunRow, ReconciliationRunInsert, ReconciliationRunUpdate>;
  audit_events: Knex.CompositeTableType<AuditEventRow, AuditEventInsert, AuditEventUpdate>;
  inventory_snapshots: Knex.CompositeTableType<InventorySnapshotRow, InventorySnapshotInsert, InventorySnapshotUpdate>;
  worker_replicas: Knex.CompositeTableType<WorkerReplicaRow, WorkerReplicaInsert, WorkerReplicaUpdate>;
  waitlist_entries: Knex.CompositeTableType<WaitlistEntryRow, WaitlistEntryInsert, WaitlistEntryUpdate>;
  idempotency_records: Knex.CompositeTableType<IdempotencyRecordRow, IdempotencyRecordInsert, IdempotencyRecordUpdate>;
  hold_attempts: Knex.CompositeTableType<HoldAttemptRow, HoldAttemptInsert, HoldAttemptUpdate>;
  customer_attempt_windows: Knex.CompositeTableType<CustomerAttemptWindowRow, CustomerAttemptWindowRow, Partial<CustomerAttemptWindowRow>>;
}

export type HoldfastTableName = keyof HoldfastTables;

/** Every table the migrations create, in creation order. */
export const HOLDFAST_TABLES = [
  'skus',
  'inventory',
  'reservations',
  'reservation_items',
  'reconciliation_runs',
  'audit_events',
  'inventory_snapshots',
  'worker_replicas',
  'waitlist_entries',
  'idempotency_records',
  'hold_attempts',
  'customer_attempt_windows',
] as const satisfies readonly HoldfastTableName[];

// Module augmentation (knex docs, "TypeScript: Using custom types for tables"): with this,
// `knex('inventory')` / `knex<...>('inventory')` resolve to the types above wherever this
// package is imported. The `.js` suffix is how NodeNext resolves knex's types/tables.d.ts
// (knex has no "exports" map); it names the same module knex itself imports.
declare module 'knex/types/tables.js' {
  interface Tables extends HoldfastTables {}
}
