/**
 * Catalog and stock (admin): CreateSku, GetSku, ListSkus, UpdateSku, AdjustStock.
 *
 * - Policy. SkuPolicy has one column per field (NULL = zero value = server default,
 *   see the skus table). Each field has one reader below that validates it and turns
 *   it into its column(s); CreateSku runs all of them, UpdateSku those its mask names,
 *   so the two cannot drift apart. The hold durations are bounded by each other and by
 *   server settings (TTL_OUT_OF_RANGE); they are checked on the policy as it would be
 *   stored, which for UpdateSku needs the stored row (read under its lock).
 * - Ledger. SKU_CREATED and STOCK_ADJUSTED are written in the same statement as the
 *   counters they describe (packages/schema/src/ledger.ts), under the row lock.
 * - Every mutation runs in core/idempotency.ts: a refusal thrown before anything was
 *   written (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION) is recorded for replay;
 *   INVALID_ARGUMENT, ABORTED and UNIMPLEMENTED are not.
 */
import { create } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  AdjustStockRequestSchema,
  AdjustStockResponseSchema,
  CreateSkuRequestSchema,
  CreateSkuResponseSchema,
  GetSkuResponseSchema,
  HotSkuMode,
  InventoryReservationService,
  ListSkusResponseSchema,
  LockingStrategy,
  SkuPolicySchema,
  UpdateSkuRequestSchema,
  UpdateSkuResponseSchema,
  WaitlistPromotionPolicy,
  type AdjustStockRequest,
  type AdjustStockResponse,
  type CreateSkuRequest,
  type CreateSkuResponse,
  type GetSkuRequest,
  type GetSkuResponse,
  type ListSkusRequest,
  type ListSkusResponse,
  type Sku,
  type SkuPolicy,
  type UpdateSkuRequest,
  type UpdateSkuResponse,
} from "@holdfast/contracts";
import { isLockTimeout } from "@holdfast/runtime";
import {
  MAX_HOLD_LIFETIME_MAX_MS,
  MAX_UNITS_PER_CUSTOMER_MAX,
  MAX_WAITLIST_LENGTH_MAX,
  POLICY_DURATION_RESOLUTION_MS,
  RATE_LIMIT_MAX_ATTEMPTS_MAX,
  RATE_LIMIT_WINDOW_MAX_MS,
  RATE_LIMIT_WINDOW_MIN_MS,
  SKU_NAME_MAX_LENGTH,
  STOCK_BUCKETS_MAX,
  applyCounterChanges,
  isValidSkuCode,
  isValidSkuName,
  lockInventoryRows,
  promoteWaiting,
  type Promotion,
  query,
  readInventoryRows,
  type Db,
  type HotSkuMode as StoredHotSkuMode,
  type InventoryRow,
  type LockingStrategy as StoredStrategy,
  type SkuRow,
  type WaitlistPromotionPolicy as StoredPromotionPolicy,
} from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { enumName } from "@holdfast/core";
import { toAuditEvent, toAvailability, toSku, toWaitlistEntry } from "./convert.js";
import {
  invalidPageToken,
  invalidUpdateMask,
  lockTimeout,
  notImplementedFeature,
  skuAlreadyExists,
  skuNotFound,
  stockBelowCommitted,
  ttlOutOfRange,
  versionMismatch,
} from "@holdfast/core";
import { Idempotency, idempotencyKey } from "@holdfast/core";
import { decodePageToken, encodePageToken } from "@holdfast/core";
import type { ReservationSettings } from "./settings.js";
import { Violations, effectivePageSize } from "@holdfast/core";

const method = (name: string) => `${InventoryReservationService.typeName}/${name}`;

// ---------------------------------------------------------------------------------------
// Policy: validation and columns
// ---------------------------------------------------------------------------------------

/** The policy columns of a skus row. */
type PolicyColumns = Omit<SkuRow, "code" | "name" | "created_at" | "updated_at">;

/** The policy of a SKU created without one: every field at its zero value. */
const POLICY_DEFAULTS: PolicyColumns = {
  default_locking_strategy: null,
  max_units_per_customer: null,
  default_hold_ttl_ms: null,
  max_hold_ttl_ms: null,
  max_hold_lifetime_ms: null,
  rate_limit_max_attempts: null,
  rate_limit_window_ms: null,
  abandonment_aware_ttl: false,
  hot_sku_mode: null,
  stock_buckets: null,
  waitlist_disabled: false,
  max_waitlist_length: null,
  waitlist_promotion_policy: null,
  promotion_hold_ttl_ms: null,
};
/** Every policy column, in one fixed order for the INSERT and UPDATE below. */
const POLICY_COLUMN_NAMES = Object.keys(POLICY_DEFAULTS) as (keyof PolicyColumns)[];

/** Validates one SkuPolicy field (adding to `v`) and returns its column value(s). */
type FieldReader = (v: Violations, field: string, policy: SkuPolicy) => Partial<PolicyColumns>;

/** A "no limit" / "server default" integer: 0 = NULL, else 1..max. */
function optionalLimit(v: Violations, field: string, value: number, max: number, zeroMeans: string): number | null {
  if (value < 0 || value > max) v.add(field, `must be between 1 and ${max}, or 0 for ${zeroMeans}`);
  return value === 0 ? null : value;
}

/**
 * A policy duration in ms: NULL when unset or zero; a fraction of a second is
 * BAD_REQUEST. Range checks are the caller's (hold durations are TTL_OUT_OF_RANGE).
 */
function policyDurationMs(v: Violations, field: string, value: Duration | undefined): number | null {
  const ms = v.duration(field, value);
  if (ms === undefined || ms === 0) return null;
  // nanos, not the rounded ms: 60 s + 400 µs is a fraction too.
  if (value!.nanos !== 0 || ms % POLICY_DURATION_RESOLUTION_MS !== 0) {
    v.add(field, "must be a whole number of seconds");
    return null;
  }
  return ms;
}

/**
 * One reader per SkuPolicy field, keyed by its proto name: these keys are also the
 * only "policy.<field>" paths UpdateSku accepts.
 */
const POLICY_FIELDS: Record<string, FieldReader> = {
  default_locking_strategy: (v, f, p) => {
    v.enumValue(f, p.defaultLockingStrategy, [LockingStrategy.OPTIMISTIC, LockingStrategy.PESSIMISTIC]);
    return { default_locking_strategy: enumName(LockingStrategy, p.defaultLockingStrategy) as StoredStrategy | null };
  },
  max_units_per_customer: (v, f, p) => ({
    max_units_per_customer: optionalLimit(v, f, p.maxUnitsPerCustomer, MAX_UNITS_PER_CUSTOMER_MAX, "no limit"),
  }),
  default_hold_ttl: (v, f, p) => ({ default_hold_ttl_ms: policyDurationMs(v, f, p.defaultHoldTtl) }),
  max_hold_ttl: (v, f, p) => ({ max_hold_ttl_ms: policyDurationMs(v, f, p.maxHoldTtl) }),
  max_hold_lifetime: (v, f, p) => ({ max_hold_lifetime_ms: policyDurationMs(v, f, p.maxHoldLifetime) }),
  customer_attempt_rate_limit: (v, f, p) => {
    const attempts = p.customerAttemptRateLimit?.maxAttempts ?? 0;
    const before = v.list.length;
    const windowMs = policyDurationMs(v, `${f}.window`, p.customerAttemptRateLimit?.window);
    if (v.list.length > before) return {};
    // Absent or all zero = no limit; otherwise both halves are required.
    if (attempts === 0 && windowMs === null) return { rate_limit_max_attempts: null, rate_limit_window_ms: null };
    if (attempts < 1 || attempts > RATE_LIMIT_MAX_ATTEMPTS_MAX) {
      v.add(`${f}.max_attempts`, `must be between 1 and ${RATE_LIMIT_MAX_ATTEMPTS_MAX} when a window is set (all zero = no limit)`);
    }
    if (windowMs === null) v.add(`${f}.window`, "is required when max_attempts is set");
    else if (windowMs < RATE_LIMIT_WINDOW_MIN_MS || windowMs > RATE_LIMIT_WINDOW_MAX_MS) {
      v.add(`${f}.window`, `must be between ${RATE_LIMIT_WINDOW_MIN_MS / 1000}s and ${RATE_LIMIT_WINDOW_MAX_MS / 1000}s`);
    }
    return { rate_limit_max_attempts: attempts, rate_limit_window_ms: windowMs };
  },
  abandonment_aware_ttl: (_v, _f, p) => ({ abandonment_aware_ttl: p.abandonmentAwareTtl }),
  hot_sku_mode: (v, f, p) => {
    v.enumValue(f, p.hotSkuMode, [HotSkuMode.OFF, HotSkuMode.GROUP_COMMIT, HotSkuMode.BUCKETED]);
    return { hot_sku_mode: enumName(HotSkuMode, p.hotSkuMode) as StoredHotSkuMode | null };
  },
  stock_buckets: (v, f, p) => ({ stock_buckets: optionalLimit(v, f, p.stockBuckets, STOCK_BUCKETS_MAX, "the server default") }),
  waitlist_disabled: (_v, _f, p) => ({ waitlist_disabled: p.waitlistDisabled }),
  max_waitlist_length: (v, f, p) => ({
    max_waitlist_length: optionalLimit(v, f, p.maxWaitlistLength, MAX_WAITLIST_LENGTH_MAX, "no limit"),
  }),
  waitlist_promotion_policy: (v, f, p) => {
    v.enumValue(f, p.waitlistPromotionPolicy, [WaitlistPromotionPolicy.STRICT_FIFO, WaitlistPromotionPolicy.FIRST_FIT]);
    return { waitlist_promotion_policy: enumName(WaitlistPromotionPolicy, p.waitlistPromotionPolicy) as StoredPromotionPolicy | null };
  },
  promotion_hold_ttl: (v, f, p) => ({ promotion_hold_ttl_ms: policyDurationMs(v, f, p.promotionHoldTtl) }),
};
const ALL_POLICY_FIELDS: ReadonlySet<string> = new Set(Object.keys(POLICY_FIELDS));

/** The columns of the named fields of `policy` (field paths "<prefix>.<field>"). */
function readPolicy(v: Violations, prefix: string, policy: SkuPolicy | undefined, fields: ReadonlySet<string>): Partial<PolicyColumns> {
  const p = policy ?? create(SkuPolicySchema);
  const columns: Partial<PolicyColumns> = {};
  for (const name of fields) Object.assign(columns, POLICY_FIELDS[name](v, `${prefix}.${name}`, p));
  return columns;
}

/**
 * Modes this build serves; the others are refused before anything is stored
 * (HotSkuMode). BUCKETED is not built: group commit won the measurement and keeps
 * the single counter row every other path reads (docs/concurrency.md).
 */
const IMPLEMENTED_HOT_SKU_MODES: readonly HotSkuMode[] = [HotSkuMode.UNSPECIFIED, HotSkuMode.OFF, HotSkuMode.GROUP_COMMIT];

/** Refuses, before anything is stored, the named policy fields whose value this build cannot honour. */
function refuseUnimplementedPolicy(policy: SkuPolicy | undefined, fields: ReadonlySet<string>): void {
  const mode = policy?.hotSkuMode ?? HotSkuMode.UNSPECIFIED;
  if (fields.has("hot_sku_mode") && !IMPLEMENTED_HOT_SKU_MODES.includes(mode)) {
    const name = HotSkuMode[mode];
    throw notImplementedFeature(`hot_sku_mode:${name}`, `hot_sku_mode ${name} is not implemented by this server version; use OFF`);
  }
}

interface TtlViolation {
  field: string;
  ms: number;
  minMs: number;
  maxMs: number;
}

/**
 * The hold durations' bounds (SkuPolicy), on the policy as it would be stored, with
 * server settings for NULLs (a server maximum lowered below a stored value wins):
 * max_hold_ttl within the server's hold TTL bounds; default_hold_ttl and
 * promotion_hold_ttl from the minimum hold TTL to the effective max_hold_ttl;
 * max_hold_lifetime from the effective max_hold_ttl to 7 days. Only `changed` fields
 * are judged: a stored value is not re-judged against settings changed since. But a
 * new max_hold_ttl (set or reset) must keep the stored values bounded by it valid;
 * such a conflict is reported on max_hold_ttl, the field the request changed.
 */
function holdTtlViolations(policy: PolicyColumns, changed: ReadonlySet<string>, prefix: string, s: ReservationSettings): TtlViolation[] {
  const found: TtlViolation[] = [];
  const effectiveMax = Math.min(policy.max_hold_ttl_ms ?? s.holdTtlMaxMs, s.holdTtlMaxMs);
  const check = (name: string, ms: number | null, minMs: number, maxMs: number) => {
    if (changed.has(name) && ms !== null && (ms < minMs || ms > maxMs)) found.push({ field: `${prefix}.${name}`, ms, minMs, maxMs });
  };
  // max_hold_ttl first: the others are bounded by it.
  check("max_hold_ttl", policy.max_hold_ttl_ms, s.holdTtlMinMs, s.holdTtlMaxMs);
  check("default_hold_ttl", policy.default_hold_ttl_ms, s.holdTtlMinMs, effectiveMax);
  // Not below the stored max_hold_ttl either (skus_max_hold_ttl_within_lifetime compares
  // stored values), even when a lowered server maximum makes the effective one smaller.
  check("max_hold_lifetime", policy.max_hold_lifetime_ms, Math.max(effectiveMax, policy.max_hold_ttl_ms ?? 0), MAX_HOLD_LIFETIME_MAX_MS);
  check("promotion_hold_ttl", policy.promotion_hold_ttl_ms, s.holdTtlMinMs, effectiveMax);
  if (found.length === 0 && changed.has("max_hold_ttl")) {
    const kept = (name: string, ms: number | null) => (changed.has(name) ? null : ms);
    const minMs = Math.max(
      s.holdTtlMinMs,
      kept("default_hold_ttl", policy.default_hold_ttl_ms) ?? 0,
      kept("promotion_hold_ttl", policy.promotion_hold_ttl_ms) ?? 0,
    );
    const maxMs = Math.min(s.holdTtlMaxMs, kept("max_hold_lifetime", policy.max_hold_lifetime_ms) ?? Infinity);
    if (effectiveMax < minMs || effectiveMax > maxMs) found.push({ field: `${prefix}.max_hold_ttl`, ms: effectiveMax, minMs, maxMs });
  }
  return found;
}

/**
 * Refuses a request with bad fields: BAD_REQUEST listing every bad field (hold
 * durations included) if any other field is bad, else TTL_OUT_OF_RANGE for the first
 * bad hold duration.
 */
function throwIfInvalid(v: Violations, ttl: readonly TtlViolation[], sku: string): void {
  if (v.list.length > 0) {
    for (const t of ttl) v.add(t.field, `must be between ${t.minMs / 1000}s and ${t.maxMs / 1000}s`);
    v.throwIfAny();
  }
  const [first] = ttl;
  if (first !== undefined) throw ttlOutOfRange(first.field, first.ms, first.minMs, first.maxMs, sku);
}

function skuName(v: Violations, field: string, name: string): void {
  if (name === "") v.add(field, "is required");
  else if (!isValidSkuName(name)) v.add(field, `must be 1-${SKU_NAME_MAX_LENGTH} characters, not blank, without NUL characters`);
}

// ---------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------

/** The SKUs of `rows` with their availability rows, in the order of `rows`. */
async function withAvailability(db: Db, rows: readonly SkuRow[]): Promise<Sku[]> {
  if (rows.length === 0) return [];
  const inventory = new Map((await readInventoryRows(db, rows.map((r) => r.code))).map((i) => [i.sku_code, i]));
  return rows.map((row) => {
    const availability = inventory.get(row.code);
    // CreateSku writes both rows in one transaction, and neither is ever deleted.
    if (availability === undefined) throw new Error(`SKU ${row.code} has no inventory row`);
    return toSku(row, availability);
  });
}

export async function getSku(deps: Deps, _call: Call, req: GetSkuRequest): Promise<GetSkuResponse> {
  const rows = await query<SkuRow>(deps.db, `SELECT * FROM skus WHERE code = ?`, [req.sku]);
  if (rows.length === 0) throw skuNotFound([req.sku]);
  const [sku] = await withAvailability(deps.db, rows);
  return create(GetSkuResponseSchema, { sku });
}

/**
 * Keyset pages on code (SKU order: the column is COLLATE "C", so comparisons with it
 * are byte-wise). The prefix filter is the range [prefix, prefix + U+007F): every
 * code character sorts below U+007F, and a range needs no LIKE escaping ('_' is a
 * code character). The page token binds the prefix only: AIP-158 lets a client change
 * page_size between pages.
 */
export async function listSkus(deps: Deps, _call: Call, req: ListSkusRequest): Promise<ListSkusResponse> {
  const filters = { codePrefix: req.codePrefix };
  const [after] = (decodePageToken(req.pageToken, filters, ["string"]) ?? [""]) as string[];
  // Tokens are not signed: a forged key must be refused, not passed to the database.
  if (req.pageToken !== "" && !isValidSkuCode(after!)) throw invalidPageToken("is not a token issued by this server");
  const pageSize = effectivePageSize(req.pageSize);
  const rows = await query<SkuRow>(
    deps.db,
    `SELECT * FROM skus WHERE code > ? AND code >= ? AND code < ? ORDER BY code LIMIT ?`,
    [after, req.codePrefix, `${req.codePrefix}\u007f`, pageSize + 1],
  );
  const page = rows.slice(0, pageSize);
  const nextPageToken = rows.length > pageSize ? encodePageToken(filters, [page[page.length - 1].code]) : "";
  return create(ListSkusResponseSchema, { skus: await withAvailability(deps.db, page), nextPageToken });
}

// ---------------------------------------------------------------------------------------
// CreateSku
// ---------------------------------------------------------------------------------------

const INSERT_SKU = `
INSERT INTO skus (code, name, ${POLICY_COLUMN_NAMES.join(", ")})
VALUES (?, ?, ${POLICY_COLUMN_NAMES.map(() => "?").join(", ")})
ON CONFLICT (code) DO NOTHING
RETURNING *`;

/*
 * The availability row starts at version 1 (the column default), and its SKU_CREATED
 * event is computed from the inserted row in the same statement (the ledger rule):
 * everything "before" is 0, version_after = 1.
 */
const INSERT_INVENTORY_WITH_EVENT = `
WITH i AS (
  INSERT INTO inventory (sku_code, on_hand) VALUES (?, ?)
  RETURNING *
), e AS (
  INSERT INTO audit_events (
    operation, sku_code, delta_on_hand, on_hand_before, reserved_before, allocated_before,
    on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
  SELECT 'SKU_CREATED', sku_code, on_hand, 0, 0, 0, on_hand, reserved, allocated, version, ?, ?
    FROM i
)
SELECT * FROM i`;

async function createSkuOnce(deps: Deps, call: Call, req: CreateSkuRequest): Promise<CreateSkuResponse> {
  const v = new Violations();
  const policy: PolicyColumns = { ...POLICY_DEFAULTS, ...readPolicy(v, "policy", req.policy, ALL_POLICY_FIELDS) };
  throwIfInvalid(v, holdTtlViolations(policy, ALL_POLICY_FIELDS, "policy", deps.settings), req.sku);
  refuseUnimplementedPolicy(req.policy, ALL_POLICY_FIELDS);

  const key = idempotencyKey(call.principal.id, method("CreateSku"), CreateSkuRequestSchema, req);
  let created: SkuRow | undefined;
  const response = await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call).run(key, CreateSkuResponseSchema, async (trx) => {
    // A concurrent creation of the same code waits here for the other's outcome.
    const [sku] = await query<SkuRow>(trx, INSERT_SKU, [req.sku, req.name, ...POLICY_COLUMN_NAMES.map((c) => policy[c])]);
    if (sku === undefined) throw skuAlreadyExists(req.sku);
    created = sku;
    const [inventory] = await query<InventoryRow>(trx, INSERT_INVENTORY_WITH_EVENT, [
      req.sku,
      Number(req.initialOnHand),
      call.principal.id,
      req.requestId,
    ]);
    return create(CreateSkuResponseSchema, { sku: toSku(sku, inventory) });
  });
  // This process's hot-SKU batcher follows the policy from now on (other replicas: from their next hold).
  if (created !== undefined) deps.hotSku.learn([created]);
  return response;
}

// ---------------------------------------------------------------------------------------
// UpdateSku
// ---------------------------------------------------------------------------------------

interface SkuMask {
  name: boolean;
  /** Proto names of the policy fields to update. */
  policy: Set<string>;
}

const OUTPUT_ONLY_SKU_FIELDS = new Set(["availability", "create_time", "update_time"]);

/** The update_mask's fields, or INVALID_UPDATE_MASK naming the first path that is not an updatable field. */
function parseMask(paths: readonly string[]): SkuMask {
  const mask: SkuMask = { name: false, policy: new Set() };
  paths.forEach((path, i) => {
    const policyField = path.startsWith("policy.") ? path.slice("policy.".length) : undefined;
    if (path === "name") mask.name = true;
    else if (path === "policy") ALL_POLICY_FIELDS.forEach((f) => mask.policy.add(f));
    else if (policyField !== undefined && ALL_POLICY_FIELDS.has(policyField)) mask.policy.add(policyField);
    else if (path === "*") throw invalidUpdateMask(i, path, `"*" is not accepted; name the fields to update`);
    else if (path === "code") throw invalidUpdateMask(i, path, "a SKU code is immutable");
    else if (OUTPUT_ONLY_SKU_FIELDS.has(path)) throw invalidUpdateMask(i, path, "is output only");
    else throw invalidUpdateMask(i, path, `is not an updatable field of Sku: "name", "policy" or "policy.<field>"`);
  });
  return mask;
}

const UPDATE_SKU = `
UPDATE skus
   SET name = ?, ${POLICY_COLUMN_NAMES.map((c) => `${c} = ?`).join(", ")}, updated_at = now()
 WHERE code = ?
RETURNING *`;

async function updateSkuOnce(deps: Deps, call: Call, req: UpdateSkuRequest): Promise<UpdateSkuResponse> {
  // sku and update_mask are present (contract); Sku's own fields are judged here.
  const v = new Violations().sku("sku.code", req.sku!.code);
  const paths = req.updateMask!.paths;
  if (paths.length === 0) v.add("update_mask", `must name the fields to update ("name", "policy", "policy.<field>")`);
  v.throwIfAny();
  const { code, name, policy } = req.sku!;
  const mask = parseMask(paths);
  if (mask.name) skuName(v, "sku.name", name);
  const changes = readPolicy(v, "sku.policy", policy, mask.policy);
  v.throwIfAny();
  refuseUnimplementedPolicy(policy, mask.policy);

  // Output-only fields are ignored (contract), so they are no part of the request's identity.
  const canonical = create(UpdateSkuRequestSchema, { requestId: req.requestId, sku: { code, name, policy }, updateMask: req.updateMask });
  const key = idempotencyKey(call.principal.id, method("UpdateSku"), UpdateSkuRequestSchema, canonical);
  let promoted: Promotion[] = [];
  let updated: SkuRow | undefined;
  const response = await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call).run(key, UpdateSkuResponseSchema, async (trx) => {
    promoted = [];
    // FOR NO KEY UPDATE: serialises policy updates without blocking the foreign-key
    // checks (FOR KEY SHARE) of holds and ledger events that reference the SKU.
    const [stored] = await query<SkuRow>(trx, `SELECT * FROM skus WHERE code = ? FOR NO KEY UPDATE`, [code]);
    if (stored === undefined) throw skuNotFound([code]);
    const merged: PolicyColumns = { ...pick(stored), ...changes };
    throwIfInvalid(new Violations(), holdTtlViolations(merged, mask.policy, "sku.policy", deps.settings), code);
    const newName = mask.name ? name : stored.name;
    // update_time is "when the name or the policy last changed": an update that
    // changes nothing leaves it alone.
    const unchanged = newName === stored.name && POLICY_COLUMN_NAMES.every((c) => merged[c] === stored[c]);
    const row = unchanged ? stored : (await query<SkuRow>(trx, UPDATE_SKU, [newName, ...POLICY_COLUMN_NAMES.map((c) => merged[c]), code]))[0];
    updated = row;
    // A switch to FIRST_FIT lets entries behind a blocked head take what is available
    // now, in this transaction: FIRST_FIT has no buyer guard, so otherwise a new buyer
    // could take units that fit someone waiting.
    if (merged.waitlist_promotion_policy !== stored.waitlist_promotion_policy) {
      promoted = await promoteWaiting(trx, [code], { actor: call.principal.id, requestId: req.requestId }, deps.settings);
    }
    const [sku] = await withAvailability(trx, [row]);
    return create(UpdateSkuResponseSchema, { sku });
  });
  deps.expiry.promoted(promoted);
  // This process's hot-SKU batcher follows the policy from now on (other replicas: from their next hold).
  if (updated !== undefined) deps.hotSku.learn([updated]);
  return response;
}

function pick(row: SkuRow): PolicyColumns {
  return Object.fromEntries(POLICY_COLUMN_NAMES.map((c) => [c, row[c]])) as unknown as PolicyColumns;
}

// ---------------------------------------------------------------------------------------
// AdjustStock
// ---------------------------------------------------------------------------------------

/**
 * Locks the row first (an absolute value needs the current on_hand, and the refusals
 * need the committed units), then decides on the locked values, so the guarded
 * counter statement cannot be refused afterwards.
 */
async function adjustStockOnce(deps: Deps, call: Call, req: AdjustStockRequest): Promise<AdjustStockResponse> {
  // Every field's limits are the contract's (checked before this runs): change is set.
  const { change } = req;
  const expected = req.expectedVersion;

  const key = idempotencyKey(call.principal.id, method("AdjustStock"), AdjustStockRequestSchema, req);
  let promoted: Promotion[] = [];
  const response = await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call).run(key, AdjustStockResponseSchema, async (trx) => {
    promoted = [];
    const [row] = await lockInventoryRows(trx, [req.sku]).catch((err: unknown) => {
      throw isLockTimeout(err) ? lockTimeout({ skus: [req.sku] }, err) : err;
    });
    if (row === undefined) throw skuNotFound([req.sku]);
    // Thrown: ABORTED rolls back and is not recorded (re-read, then decide).
    if (expected !== undefined && expected !== BigInt(row.version)) throw versionMismatch(req.sku, Number(expected), row.version);
    const target = change.case === "delta" ? row.on_hand + Number(change.value) : Number(change.value);
    if (target === row.on_hand) return create(AdjustStockResponseSchema, { availability: toAvailability(row) });
    const committed = row.reserved + row.allocated;
    if (target < committed) throw stockBelowCommitted(req.sku, target, committed);
    const { events, refused } = await applyCounterChanges(
      trx,
      [{ sku: req.sku, operation: "STOCK_ADJUSTED", onHand: target - row.on_hand, reason: req.reason }],
      { actor: call.principal.id, requestId: req.requestId },
    );
    if (refused.length > 0) throw new Error(`STOCK_ADJUSTED of ${req.sku} refused by the guard although checked under the row lock`);
    // Added stock goes to the SKU's waitlist first, in this transaction (contract).
    const promotions = target > row.on_hand ? await promoteWaiting(trx, [req.sku], { actor: call.principal.id, requestId: req.requestId }, deps.settings) : [];
    promoted = promotions;
    const [after] = await readInventoryRows(trx, [req.sku]);
    return create(AdjustStockResponseSchema, {
      availability: toAvailability(after),
      auditEvent: toAuditEvent(events[0]),
      promotedEntries: promotions.map((p) => toWaitlistEntry(p.entry)),
    });
  });
  // Committed: wake the worker for the promoted holds' expiry.
  deps.expiry.promoted(promoted);
  return response;
}

export function createSku(deps: Deps, call: Call, req: CreateSkuRequest): Promise<CreateSkuResponse> {
  return deps.inventory.around([req.sku], createSkuOnce(deps, call, req));
}

export function updateSku(deps: Deps, call: Call, req: UpdateSkuRequest): Promise<UpdateSkuResponse> {
  return deps.inventory.around([req.sku?.code ?? ""].filter((c) => c !== ""), updateSkuOnce(deps, call, req));
}

export function adjustStock(deps: Deps, call: Call, req: AdjustStockRequest): Promise<AdjustStockResponse> {
  return deps.inventory.around([req.sku], adjustStockOnce(deps, call, req));
}

