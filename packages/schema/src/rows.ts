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
// Value sets (each mirrors a CHECK constraint in the migrations)
// ---------------------------------------------------------------------------------------

export const LOCKING_STRATEGIES = ['OPTIMISTIC', 'PESSIMISTIC'] as const;
/** reservations.locking_strategy, skus.default_locking_strategy (NULL there = server default). */
export type LockingStrategy = (typeof LOCKING_STRATEGIES)[number];

export const HOT_MODES = ['OFF'] as const;
/** skus.hot_mode. Only OFF until a bucketed hot-SKU mode is implemented. */
export type HotMode = (typeof HOT_MODES)[number];

export const RESERVATION_TYPES = ['HOLD', 'ALLOCATION'] as const;
export type ReservationType = (typeof RESERVATION_TYPES)[number];

export const RESERVATION_STATUSES = ['HELD', 'ALLOCATED', 'RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED'] as const;
/** HOLD: HELD -> ALLOCATED | RELEASED | EXPIRED; ALLOCATED -> FULFILLED | CANCELLED. */
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];
/** Statuses with `closed_at` set: nothing changes after them. */
export const FINAL_RESERVATION_STATUSES = ['RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED'] as const satisfies readonly ReservationStatus[];
/** Statuses whose lines count in inventory.reserved (HELD) and inventory.allocated (ALLOCATED). */
export const ACTIVE_RESERVATION_STATUSES = ['HELD', 'ALLOCATED'] as const satisfies readonly ReservationStatus[];

export const AUDIT_OPERATIONS = [
  'SKU_CREATED',
  'STOCK_ADJUSTED',
  'HOLD_CREATED',
  'HOLD_EXTENDED',
  'HOLD_CONFIRMED',
  'HOLD_RELEASED',
  'HOLD_EXPIRED',
  'ALLOCATION_CREATED',
  'ALLOCATION_FULFILLED',
  'ALLOCATION_CANCELLED',
  'RECONCILIATION_REPAIR',
  'WAITLIST_PROMOTED',
] as const;
/**
 * audit_events.operation. Each one moves the counters in one way only
 * (constraint audit_events_delta_shape):
 * - SKU_CREATED: on_hand += initial (all "before" values 0)
 * - STOCK_ADJUSTED: on_hand += delta
 * - HOLD_CREATED, WAITLIST_PROMOTED: reserved += q
 * - HOLD_EXTENDED: no change (all deltas 0)
 * - HOLD_CONFIRMED: reserved -= q, allocated += q
 * - HOLD_RELEASED, HOLD_EXPIRED: reserved -= q
 * - ALLOCATION_CREATED: allocated += q
 * - ALLOCATION_FULFILLED: on_hand -= q, allocated -= q
 * - ALLOCATION_CANCELLED: allocated -= q
 * - RECONCILIATION_REPAIR: any correction. To keep counters = SUM(deltas) after a
 *   change made outside the ledger, record the drift (before = ledger value, after =
 *   value found) and then the correction (before = found, after = repaired).
 * All but SKU_CREATED, STOCK_ADJUSTED and RECONCILIATION_REPAIR need a reservation_id.
 */
export type AuditOperation = (typeof AUDIT_OPERATIONS)[number];

export const SNAPSHOT_SOURCES = ['SCHEDULED', 'ON_DEMAND'] as const;
export type SnapshotSource = (typeof SNAPSHOT_SOURCES)[number];

export const RECONCILIATION_MODES = ['CHECK', 'REPAIR'] as const;
export type ReconciliationMode = (typeof RECONCILIATION_MODES)[number];

export const RECONCILIATION_STATUSES = ['RUNNING', 'OK', 'ISSUES', 'FAILED'] as const;
export type ReconciliationStatus = (typeof RECONCILIATION_STATUSES)[number];

export const WAITLIST_STATUSES = ['WAITING', 'PROMOTED', 'CANCELLED', 'EXPIRED'] as const;
/** EXPIRED: the entry was promoted and its hold expired; the turn is lost. */
export type WaitlistStatus = (typeof WAITLIST_STATUSES)[number];

export const IDEMPOTENCY_STATES = ['IN_FLIGHT', 'COMPLETED'] as const;
export type IdempotencyState = (typeof IDEMPOTENCY_STATES)[number];

export const HOLD_ATTEMPT_OUTCOMES = ['GRANTED', 'REFUSED', 'WAITLISTED', 'FAILED'] as const;
export type HoldAttemptOutcome = (typeof HOLD_ATTEMPT_OUTCOMES)[number];

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

export interface SkuRow {
  code: string;
  name: string;
  default_locking_strategy: LockingStrategy | null;
  max_units_per_customer: number | null;
  default_hold_ttl_seconds: number | null;
  max_hold_ttl_seconds: number | null;
  attempt_rate_limit_per_minute: number | null;
  hot_mode: HotMode;
  created_at: Date;
  updated_at: Date;
}
export type SkuInsert = Optional<
  SkuRow,
  | 'default_locking_strategy'
  | 'max_units_per_customer'
  | 'default_hold_ttl_seconds'
  | 'max_hold_ttl_seconds'
  | 'attempt_rate_limit_per_minute'
  | 'hot_mode'
  | 'created_at'
  | 'updated_at'
>;
export type SkuUpdate = Partial<Omit<SkuRow, 'code' | 'created_at'>>;

// inventory -----------------------------------------------------------------------------

export interface InventoryRow {
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  /** Generated: on_hand - reserved - allocated. Never written. */
  available: number;
  version: number;
  updated_at: Date;
}
export type InventoryInsert = Optional<
  Omit<InventoryRow, 'available'>,
  'on_hand' | 'reserved' | 'allocated' | 'version' | 'updated_at'
>;
export type InventoryUpdate = Partial<Omit<InventoryRow, 'sku_code' | 'available'>>;

// reservations --------------------------------------------------------------------------

export interface ReservationRow {
  id: string;
  type: ReservationType;
  status: ReservationStatus;
  customer_id: string;
  /** The authenticated principal; idempotency is scoped per caller. */
  caller: string;
  request_id: string | null;
  locking_strategy: LockingStrategy;
  /** Set for every HOLD (kept after confirmation), null for a direct ALLOCATION. */
  expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  confirmed_at: Date | null;
  closed_at: Date | null;
  /** The waitlist entry whose promotion created this hold. */
  waitlist_entry_id: string | null;
  version: number;
}
export type ReservationInsert = Optional<
  ReservationRow,
  | 'id'
  | 'request_id'
  | 'expires_at'
  | 'created_at'
  | 'updated_at'
  | 'confirmed_at'
  | 'closed_at'
  | 'waitlist_entry_id'
  | 'version'
>;
export type ReservationUpdate = Partial<Omit<ReservationRow, 'id' | 'created_at'>>;

// reservation_items ---------------------------------------------------------------------

export interface ReservationItemRow {
  reservation_id: string;
  sku_code: string;
  /** > 0; lines of the same SKU are summed into one row. */
  quantity: number;
  /** 1-based position of the SKU's first line in the request. */
  line_no: number;
}
export type ReservationItemInsert = ReservationItemRow;
export type ReservationItemUpdate = Partial<Pick<ReservationItemRow, 'quantity' | 'line_no'>>;

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
  actor: string;
  request_id: string | null;
  reason: string | null;
  details: JsonValue | null;
}
export type AuditEventInsert = Optional<
  Omit<AuditEventRow, 'id' | 'details'>,
  'occurred_at' | 'reservation_id' | 'delta_on_hand' | 'delta_reserved' | 'delta_allocated' | 'request_id' | 'reason'
> & { details?: JsonbWrite | null };
/** The ledger is append-only: the database refuses every UPDATE. */
export type AuditEventUpdate = never;

// inventory_snapshots -------------------------------------------------------------------

export interface InventorySnapshotRow {
  id: number;
  /** Shared by every row of one snapshot (the snapshot transaction's now()). */
  taken_at: Date;
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  version: number;
  /** The SKU's last ledger event included in these counters (null if none). */
  last_audit_event_id: number | null;
  source: SnapshotSource;
}
export type InventorySnapshotInsert = Optional<Omit<InventorySnapshotRow, 'id'>, 'taken_at' | 'last_audit_event_id'>;
export type InventorySnapshotUpdate = Partial<Omit<InventorySnapshotRow, 'id'>>;

// reconciliation_runs -------------------------------------------------------------------

export interface ReconciliationRunRow {
  id: string;
  mode: ReconciliationMode;
  status: ReconciliationStatus;
  started_at: Date;
  finished_at: Date | null;
  triggered_by: string;
  worker_id: string;
  /** null = every SKU. */
  sku_filter: string[] | null;
  skus_checked: number;
  issues_found: number;
  issues_repaired: number;
  /** Always a JSON array (constraint reconciliation_runs_findings_is_array). */
  findings: JsonValue[];
  error: string | null;
}
export type ReconciliationRunInsert = Optional<
  Omit<ReconciliationRunRow, 'findings'>,
  'id' | 'status' | 'started_at' | 'finished_at' | 'sku_filter' | 'skus_checked' | 'issues_found' | 'issues_repaired' | 'error'
> & { /** JSON text of an array: use toJsonb(findings). */ findings?: string };
export type ReconciliationRunUpdate = Partial<Omit<ReconciliationRunRow, 'id' | 'findings'>> & {
  /** JSON text of an array: use toJsonb(findings). */
  findings?: string;
};

// waitlist_entries ----------------------------------------------------------------------

export interface WaitlistEntryRow {
  id: string;
  /** Arrival order (identity), the FIFO key. */
  seq: number;
  sku_code: string;
  customer_id: string;
  quantity: number;
  status: WaitlistStatus;
  caller: string;
  request_id: string | null;
  /** The hold created by the promotion. */
  reservation_id: string | null;
  created_at: Date;
  promoted_at: Date | null;
  closed_at: Date | null;
  /** TTL for the promoted hold; null = SKU / server default. */
  hold_ttl_seconds: number | null;
}
export type WaitlistEntryInsert = Optional<
  Omit<WaitlistEntryRow, 'seq'>,
  'id' | 'status' | 'request_id' | 'reservation_id' | 'created_at' | 'promoted_at' | 'closed_at' | 'hold_ttl_seconds'
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
  /** google.rpc.ErrorInfo reason for anything but GRANTED. */
  reason: string | null;
  reservation_id: string | null;
  waitlist_entry_id: string | null;
  replayed: boolean;
}
export type HoldAttemptInsert = Optional<
  Omit<HoldAttemptRow, 'id'>,
  'request_id' | 'locking_strategy' | 'reason' | 'reservation_id' | 'waitlist_entry_id' | 'replayed'
>;
export type HoldAttemptUpdate = Partial<Omit<HoldAttemptRow, 'id'>>;

// ---------------------------------------------------------------------------------------
// Knex table typing
// ---------------------------------------------------------------------------------------

/** Table name -> row / insert / update types. */
export interface HoldfastTables {
  skus: Knex.CompositeTableType<SkuRow, SkuInsert, SkuUpdate>;
  inventory: Knex.CompositeTableType<InventoryRow, InventoryInsert, InventoryUpdate>;
  reservations: Knex.CompositeTableType<ReservationRow, ReservationInsert, ReservationUpdate>;
  reservation_items: Knex.CompositeTableType<ReservationItemRow, ReservationItemInsert, ReservationItemUpdate>;
  audit_events: Knex.CompositeTableType<AuditEventRow, AuditEventInsert, AuditEventUpdate>;
  inventory_snapshots: Knex.CompositeTableType<InventorySnapshotRow, InventorySnapshotInsert, InventorySnapshotUpdate>;
  reconciliation_runs: Knex.CompositeTableType<ReconciliationRunRow, ReconciliationRunInsert, ReconciliationRunUpdate>;
  waitlist_entries: Knex.CompositeTableType<WaitlistEntryRow, WaitlistEntryInsert, WaitlistEntryUpdate>;
  idempotency_records: Knex.CompositeTableType<IdempotencyRecordRow, IdempotencyRecordInsert, IdempotencyRecordUpdate>;
  hold_attempts: Knex.CompositeTableType<HoldAttemptRow, HoldAttemptInsert, HoldAttemptUpdate>;
}

export type HoldfastTableName = keyof HoldfastTables;

/** Every table the migrations create, in creation order. */
export const HOLDFAST_TABLES = [
  'skus',
  'inventory',
  'reservations',
  'reservation_items',
  'audit_events',
  'inventory_snapshots',
  'reconciliation_runs',
  'waitlist_entries',
  'idempotency_records',
  'hold_attempts',
] as const satisfies readonly HoldfastTableName[];

// Module augmentation (knex docs, "TypeScript: Using custom types for tables"): with this,
// `knex('inventory')` / `knex<...>('inventory')` resolve to the types above wherever this
// package is imported. The `.js` suffix is how NodeNext resolves knex's types/tables.d.ts
// (knex has no "exports" map); it names the same module knex itself imports.
declare module 'knex/types/tables.js' {
  interface Tables extends HoldfastTables {}
}
