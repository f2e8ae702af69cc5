// "Each bad field of each RPC: INVALID_ARGUMENT and no row changed."
//
// For every unary RPC of InventoryReservationService (those not implemented yet
// too: the contract's annotations are checked before any RPC runs), one valid base
// request and a table of single-field corruptions, each sent over gRPC to a real
// reservation-service process. Every case must answer INVALID_ARGUMENT with one
// ErrorInfo (domain holdfast.inventory.v1, reason BAD_REQUEST, or the more precise
// INVALID_ARGUMENT reason the contract names: TTL_OUT_OF_RANGE, INVALID_PAGE_TOKEN,
// INVALID_UPDATE_MASK) and a BadRequest naming the corrupted field's path, and must
// change nothing: a fingerprint of every table (row count, max integer id, digest of
// the rows, inventory totals, idempotency records) is equal before and after. Then:
// an INVALID_ARGUMENT is never recorded for its request_id (errors.proto,
// IDEMPOTENCY), so the same request_id still runs a valid request; a few cases give
// the same answer over Connect; the largest valid values are accepted; the two
// server streams refuse bad requests the same way before their first message.
import { randomUUID } from "node:crypto";
import { AssertionError, expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema, TimestampSchema, timestampFromDate, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  AdjustStockRequestSchema,
  AuditOperation,
  CancelAllocationRequestSchema,
  CheckConsistencyRequestSchema,
  ConfirmHoldRequestSchema,
  CreateAllocationRequestSchema,
  CreateHoldRequestSchema,
  CreateSkuRequestSchema,
  ExtendHoldRequestSchema,
  FulfillAllocationRequestSchema,
  GetAvailabilityRequestSchema,
  GetFlashSaleReportRequestSchema,
  GetReservationRequestSchema,
  GetSkuRequestSchema,
  GetWaitlistEntryRequestSchema,
  HotSkuMode,
  InventoryReservationService,
  JoinWaitlistRequestSchema,
  LeaveWaitlistRequestSchema,
  ListAuditEventsRequestSchema,
  ListAvailabilitySnapshotsRequestSchema,
  ListReservationsRequestSchema,
  ListSkusRequestSchema,
  ListWaitlistEntriesRequestSchema,
  LockingStrategy,
  ReleaseHoldRequestSchema,
  ReservationLineSchema,
  ReservationStatus,
  ReservationType,
  SkuPolicySchema,
  UpdateSkuRequestSchema,
  WaitlistEntryStatus,
  WaitlistPromotionPolicy,
  WatchAvailabilityRequestSchema,
  WatchWaitlistRequestSchema,
  type AdjustStockRequest,
  type CreateSkuRequest,
  type GetFlashSaleReportRequest,
  type GetSkuRequest,
  type JoinWaitlistRequest,
  type ListAuditEventsRequest,
  type ListAvailabilitySnapshotsRequest,
  type ListReservationsRequest,
  type ListWaitlistEntriesRequest,
  type ReservationLine,
  type UpdateSkuRequest,
  type WatchAvailabilityRequest,
  type WatchWaitlistRequest,
} from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema, ResourceInfoSchema } from "@holdfast/contracts/rpc";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { testCaller, testCallerInterceptor } from "../support/auth.js";

const DOMAIN = "holdfast.inventory.v1";

type Grpc = GrpcJsClient<typeof InventoryReservationService>;
type Connect = Client<typeof InventoryReservationService>;
type Reason = "BAD_REQUEST" | "TTL_OUT_OF_RANGE" | "INVALID_PAGE_TOKEN" | "INVALID_UPDATE_MASK";
type UnaryName = Exclude<keyof Grpc, "raw" | "close" | "watchAvailability" | "watchWaitlist">;

interface Case<R> {
  name: string;
  corrupt: (request: R) => void;
  /** The path every BadRequest field violation must name. */
  field: string | RegExp;
  /** Expected ErrorInfo reason; several when the contract allows either. Default BAD_REQUEST. */
  reason?: Reason | readonly Reason[];
  /** Also sent over Connect, which must answer the same. */
  connect?: boolean;
}

interface RpcDef<R> {
  /** The RPC's name in the contract. */
  name: string;
  method: UnaryName;
  base: () => R;
  cases: Case<R>[];
  /** Runs before the RPC's cases (e.g. to obtain a real page token). */
  prepare?: () => Promise<void>;
  /**
   * "<CodeName>/<REASON>" answers the base request may get instead of succeeding in
   * "every base request is well-formed" (because an earlier base request there used
   * up a fixture). Anything else fails that test.
   */
  baseRefusals?: readonly string[];
}

// ---------------------------------------------------------------------------------------
// Request building blocks
// ---------------------------------------------------------------------------------------

const rid = (label = "req") => `${label}-${randomUUID()}`;
const dur = (seconds: number, nanos = 0): Duration => create(DurationSchema, { seconds: BigInt(seconds), nanos });
const line = (sku: string, quantity: number): ReservationLine => create(ReservationLineSchema, { sku, quantity });
const inHours = (h: number) => timestampFromDate(new Date(Date.now() + h * 3_600_000));
const fixtures = { hold: "", allocation: "", skuToken: "", reservationToken: "", auditToken: "" };

const requestIdCases = <R extends { requestId: string }>(): Case<R>[] => [
  { name: "missing request_id", corrupt: (r) => void (r.requestId = ""), field: "request_id" },
  { name: "request_id with a space and '!'", corrupt: (r) => void (r.requestId = "bad id!"), field: "request_id" },
  { name: "request_id with '/'", corrupt: (r) => void (r.requestId = "order/42"), field: "request_id" },
  { name: "request_id of 129 characters", corrupt: (r) => void (r.requestId = "r".repeat(129)), field: "request_id" },
  { name: "request_id with a non-ASCII letter", corrupt: (r) => void (r.requestId = "réquest-1"), field: "request_id" },
];

const reservationIdCases = <R extends { reservationId: string }>(required = true): Case<R>[] => [
  ...(required ? [{ name: "missing reservation_id", corrupt: (r: R) => void (r.reservationId = ""), field: "reservation_id" }] : []),
  { name: "reservation_id that is not a UUID", corrupt: (r) => void (r.reservationId = "not-a-uuid"), field: "reservation_id" },
  { name: "reservation_id in upper case (not canonical)", corrupt: (r) => void (r.reservationId = r.reservationId.toUpperCase()), field: "reservation_id" },
  { name: "reservation_id without dashes", corrupt: (r) => void (r.reservationId = r.reservationId.replaceAll("-", "")), field: "reservation_id" },
  { name: "reservation_id with a trailing character", corrupt: (r) => void (r.reservationId = `${r.reservationId}0`), field: "reservation_id" },
];

/** Another UUID field (waitlist_entry_id): `set` writes the bad value. */
const uuidCases = <R>(field: string, set: (r: R, v: string) => void): Case<R>[] => [
  { name: `missing ${field}`, corrupt: (r) => set(r, ""), field },
  { name: `${field} that is not a UUID`, corrupt: (r) => set(r, "not-a-uuid"), field },
  { name: `${field} in upper case (not canonical)`, corrupt: (r) => set(r, randomUUID().toUpperCase()), field },
];

/** A SKU code field: `set` writes the bad value. */
const skuCodeCases = <R>(field: string, set: (r: R, v: string) => void, required = true): Case<R>[] => [
  ...(required ? [{ name: `missing ${field}`, corrupt: (r: R) => set(r, ""), field }] : []),
  { name: `${field} with a '/'`, corrupt: (r) => set(r, "BI/A"), field },
  { name: `${field} with a space`, corrupt: (r) => set(r, "BI A"), field },
  { name: `${field} with a ','`, corrupt: (r) => set(r, "BI,A"), field },
  { name: `${field} starting with '-'`, corrupt: (r) => set(r, "-BI"), field },
  { name: `${field} of 65 characters`, corrupt: (r) => set(r, "A".repeat(65)), field },
];

const customerIdCases = <R extends { customerId: string }>(required: boolean): Case<R>[] => [
  ...(required ? [{ name: "missing customer_id", corrupt: (r: R) => void (r.customerId = ""), field: "customer_id" }] : []),
  { name: "customer_id with a space", corrupt: (r) => void (r.customerId = "cust 1"), field: "customer_id" },
  { name: "customer_id with '/'", corrupt: (r) => void (r.customerId = "cust/1"), field: "customer_id" },
  { name: "customer_id of 129 characters", corrupt: (r) => void (r.customerId = "c".repeat(129)), field: "customer_id" },
];

const lineCases = <R extends { lines: ReservationLine[] }>(): Case<R>[] => [
  { name: "no lines", corrupt: (r) => void (r.lines = []), field: "lines" },
  { name: "51 lines (server maximum 50)", corrupt: (r) => void (r.lines = Array.from({ length: 51 }, () => line("BI-A", 1))), field: "lines" },
  { name: "lines[2].quantity = 0", corrupt: (r) => void (r.lines[2]!.quantity = 0), field: "lines[2].quantity", connect: true },
  { name: "lines[2].quantity = -1", corrupt: (r) => void (r.lines[2]!.quantity = -1), field: "lines[2].quantity" },
  { name: "lines[2].quantity = 1,000,001", corrupt: (r) => void (r.lines[2]!.quantity = 1_000_001), field: "lines[2].quantity" },
  { name: "lines[0].quantity = -2147483648", corrupt: (r) => void (r.lines[0]!.quantity = -2_147_483_648), field: "lines[0].quantity" },
  { name: "lines[1].sku missing", corrupt: (r) => void (r.lines[1]!.sku = ""), field: "lines[1].sku" },
  { name: "lines[1].sku with a '/'", corrupt: (r) => void (r.lines[1]!.sku = "BI/B"), field: "lines[1].sku" },
  { name: "lines[1].sku of 65 characters", corrupt: (r) => void (r.lines[1]!.sku = "B".repeat(65)), field: "lines[1].sku" },
  {
    // Each line is within 1..1,000,000, but the lines of BI-A add up to 1,000,001.
    name: "duplicate lines of one SKU summing to 1,000,001",
    corrupt: (r) => void (r.lines = [line("BI-A", 600_000), line("BI-B", 1), line("BI-A", 400_001)]),
    field: /^lines(\[\d+\]\.quantity)?$/,
  },
];

const strategyCases = <R extends { lockingStrategy: LockingStrategy }>(): Case<R>[] => [
  { name: "locking_strategy = 7 (no such value)", corrupt: (r) => void (r.lockingStrategy = 7 as LockingStrategy), field: "locking_strategy" },
  { name: "locking_strategy = -1", corrupt: (r) => void (r.lockingStrategy = -1 as LockingStrategy), field: "locking_strategy" },
];

/**
 * A hold TTL (CreateHold.ttl, ExtendHold.ttl). Out of [server min 1 s, max 1 h] is
 * TTL_OUT_OF_RANGE (contract). A zero or negative TTL is outside those bounds too, yet
 * is also simply malformed: the contract can be read either way, so either reason is
 * accepted for it, on field "ttl".
 */
const ttlCases = <R extends { ttl?: Duration }>(): Case<R>[] => [
  { name: "ttl of 2 h (server maximum 1 h)", corrupt: (r) => void (r.ttl = dur(7200)), field: "ttl", reason: "TTL_OUT_OF_RANGE", connect: true },
  { name: "ttl of 0.5 s (server minimum 1 s)", corrupt: (r) => void (r.ttl = dur(0, 500_000_000)), field: "ttl", reason: "TTL_OUT_OF_RANGE" },
  { name: "negative ttl (-5 s)", corrupt: (r) => void (r.ttl = dur(-5)), field: "ttl", reason: ["BAD_REQUEST", "TTL_OUT_OF_RANGE"] },
  { name: "zero ttl (set, 0 s)", corrupt: (r) => void (r.ttl = dur(0)), field: "ttl", reason: ["BAD_REQUEST", "TTL_OUT_OF_RANGE"] },
  { name: "malformed ttl (seconds 1, nanos -1)", corrupt: (r) => void (r.ttl = dur(1, -1)), field: "ttl" },
];

const reasonTooLong = <R extends { reason: string }>(): Case<R>[] => [
  { name: "reason of 513 characters", corrupt: (r) => void (r.reason = "x".repeat(513)), field: "reason" },
  { name: "reason of 513 code points (multi-byte)", corrupt: (r) => void (r.reason = "é".repeat(513)), field: "reason" },
  { name: "reason of 513 code points outside the BMP (1026 UTF-16 units)", corrupt: (r) => void (r.reason = "📦".repeat(513)), field: "reason" },
  // PostgreSQL text cannot hold U+0000: the server must refuse it as bad input, never fail with INTERNAL.
  { name: "reason containing a NUL character", corrupt: (r) => void (r.reason = "lost\u0000parcel"), field: "reason" },
];

const pageSizeCases = <R extends { pageSize: number }>(): Case<R>[] => [
  { name: "page_size = -1", corrupt: (r) => void (r.pageSize = -1), field: "page_size" },
  { name: "page_size = -2147483648", corrupt: (r) => void (r.pageSize = -2_147_483_648), field: "page_size" },
];

const pageTokenCases = <R extends { pageToken: string }>(otherFilters?: () => string): Case<R>[] => [
  { name: "page_token that is not a token", corrupt: (r) => void (r.pageToken = "garbage!"), field: "page_token", reason: "INVALID_PAGE_TOKEN", connect: true },
  {
    name: "page_token of well-formed base64url that this server never issued",
    corrupt: (r) => void (r.pageToken = Buffer.from(JSON.stringify({ v: 1, f: "x", k: [1] })).toString("base64url")),
    field: "page_token",
    reason: "INVALID_PAGE_TOKEN",
  },
  ...(otherFilters === undefined
    ? []
    : [{ name: "page_token issued for other filters", corrupt: (r: R) => void (r.pageToken = otherFilters()), field: "page_token", reason: "INVALID_PAGE_TOKEN" as const }]),
];

const timeRangeCases = <R extends { startTime?: unknown; endTime?: unknown }>(): Case<R>[] => [
  {
    name: "end_time before start_time",
    corrupt: (r) => {
      r.startTime = inHours(0);
      r.endTime = inHours(-1);
    },
    field: /^(start_time|end_time)$/,
  },
  { name: "start_time with nanos out of range", corrupt: (r) => void (r.startTime = create(TimestampSchema, { seconds: 1_700_000_000n, nanos: 2_000_000_000 })), field: "start_time" },
  { name: "end_time after year 9999", corrupt: (r) => void (r.endTime = create(TimestampSchema, { seconds: 253_402_300_800n })), field: "end_time" },
];

const manySkus = (n: number) => Array.from({ length: n }, (_, i) => `S-${i}`);

// ---------------------------------------------------------------------------------------
// The table: one base request per RPC, then its corruptions
// ---------------------------------------------------------------------------------------

const define = <R>(def: RpcDef<R>) => def as unknown as RpcDef<Record<string, unknown>>;

function table(grpc: () => Grpc): RpcDef<Record<string, unknown>>[] {
  return [
    define({
      name: "CreateSku",
      method: "createSku",
      base: () => create(CreateSkuRequestSchema, { requestId: rid(), sku: "BI-NEW", name: "New SKU", initialOnHand: 5n, policy: {} }),
      cases: [
        ...requestIdCases(),
        ...skuCodeCases<CreateSkuRequest>("sku", (r, v) => void (r.sku = v)),
        { name: "missing name", corrupt: (r) => void (r.name = ""), field: "name" },
        { name: "blank name", corrupt: (r) => void (r.name = " \t "), field: "name", connect: true },
        { name: "name of Unicode spaces only (U+00A0, U+3000, U+FEFF)", corrupt: (r) => void (r.name = "\u00a0\u3000\ufeff"), field: "name" },
        { name: "name of 201 characters", corrupt: (r) => void (r.name = "n".repeat(201)), field: "name" },
        { name: "name of 201 code points outside the BMP", corrupt: (r) => void (r.name = "📦".repeat(201)), field: "name" },
        { name: "name containing a NUL character", corrupt: (r) => void (r.name = "New\u0000SKU"), field: "name" },
        { name: "initial_on_hand = -1", corrupt: (r) => void (r.initialOnHand = -1n), field: "initial_on_hand" },
        { name: "initial_on_hand = 1,000,000,001", corrupt: (r) => void (r.initialOnHand = 1_000_000_001n), field: "initial_on_hand" },
        {
          name: "policy.default_locking_strategy = 7",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { defaultLockingStrategy: 7 as LockingStrategy })),
          field: "policy.default_locking_strategy",
        },
        { name: "policy.max_units_per_customer = -1", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxUnitsPerCustomer: -1 })), field: "policy.max_units_per_customer" },
        {
          name: "policy.max_units_per_customer = 1,000,001",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxUnitsPerCustomer: 1_000_001 })),
          field: "policy.max_units_per_customer",
        },
        { name: "policy.default_hold_ttl of 1.5 s (not whole seconds)", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { defaultHoldTtl: dur(1, 500_000_000) })), field: "policy.default_hold_ttl" },
        {
          name: "policy.max_hold_ttl of 2 h (server maximum 1 h)",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxHoldTtl: dur(7200) })),
          field: "policy.max_hold_ttl",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "policy.default_hold_ttl of 2 h",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { defaultHoldTtl: dur(7200) })),
          field: "policy.default_hold_ttl",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "policy.max_hold_lifetime of 8 days (maximum 7 days)",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxHoldLifetime: dur(8 * 86_400) })),
          field: "policy.max_hold_lifetime",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "policy.max_hold_lifetime below the effective max_hold_ttl",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxHoldTtl: dur(600), maxHoldLifetime: dur(60) })),
          field: "policy.max_hold_lifetime",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "policy.promotion_hold_ttl of 2 h",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { promotionHoldTtl: dur(7200) })),
          field: "policy.promotion_hold_ttl",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "policy.customer_attempt_rate_limit with max_attempts 0 and a window",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 0, window: dur(10) } })),
          field: "policy.customer_attempt_rate_limit.max_attempts",
        },
        {
          name: "policy.customer_attempt_rate_limit with max_attempts 1,000,001",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 1_000_001, window: dur(10) } })),
          field: "policy.customer_attempt_rate_limit.max_attempts",
        },
        {
          name: "policy.customer_attempt_rate_limit with a 2 h window",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 5, window: dur(7200) } })),
          field: "policy.customer_attempt_rate_limit.window",
        },
        {
          name: "policy.customer_attempt_rate_limit with max_attempts and no window",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 5 } })),
          field: "policy.customer_attempt_rate_limit.window",
        },
        { name: "policy.hot_sku_mode = 9", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { hotSkuMode: 9 as HotSkuMode })), field: "policy.hot_sku_mode" },
        { name: "policy.stock_buckets = 257", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { stockBuckets: 257 })), field: "policy.stock_buckets" },
        { name: "policy.stock_buckets = -1", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { stockBuckets: -1 })), field: "policy.stock_buckets" },
        { name: "policy.max_waitlist_length = -1", corrupt: (r) => void (r.policy = create(SkuPolicySchema, { maxWaitlistLength: -1 })), field: "policy.max_waitlist_length" },
        {
          name: "policy.waitlist_promotion_policy = 5",
          corrupt: (r) => void (r.policy = create(SkuPolicySchema, { waitlistPromotionPolicy: 5 as WaitlistPromotionPolicy })),
          field: "policy.waitlist_promotion_policy",
        },
      ],
    }),
    define({
      name: "UpdateSku",
      method: "updateSku",
      base: () => create(UpdateSkuRequestSchema, { requestId: rid(), sku: { code: "BI-A", name: "Renamed" }, updateMask: { paths: ["name"] } }),
      cases: [
        ...requestIdCases(),
        { name: "missing sku", corrupt: (r) => void (r.sku = undefined), field: /^sku(\.code)?$/ },
        ...skuCodeCases<UpdateSkuRequest>("sku.code", (r, v) => void (r.sku!.code = v)),
        { name: "missing update_mask", corrupt: (r) => void (r.updateMask = undefined), field: "update_mask" },
        { name: "update_mask with no paths", corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: [] })), field: "update_mask" },
        { name: 'update_mask "*"', corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: ["*"] })), field: "update_mask.paths[0]", reason: "INVALID_UPDATE_MASK" },
        {
          name: 'update_mask ["name", "nope"]',
          corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: ["name", "nope"] })),
          field: "update_mask.paths[1]",
          reason: "INVALID_UPDATE_MASK",
        },
        { name: 'update_mask ["code"] (immutable)', corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: ["code"] })), field: "update_mask.paths[0]", reason: "INVALID_UPDATE_MASK" },
        {
          name: 'update_mask ["availability"] (output only)',
          corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: ["availability"] })),
          field: "update_mask.paths[0]",
          reason: "INVALID_UPDATE_MASK",
        },
        {
          name: 'update_mask ["policy.no_such_field"]',
          corrupt: (r) => void (r.updateMask = create(FieldMaskSchema, { paths: ["policy.no_such_field"] })),
          field: "update_mask.paths[0]",
          reason: "INVALID_UPDATE_MASK",
        },
        { name: "blank sku.name (masked)", corrupt: (r) => void (r.sku!.name = "   "), field: "sku.name" },
        { name: "empty sku.name (masked)", corrupt: (r) => void (r.sku!.name = ""), field: "sku.name" },
        { name: "sku.name of 201 characters (masked)", corrupt: (r) => void (r.sku!.name = "n".repeat(201)), field: "sku.name" },
        { name: "sku.name containing a NUL character (masked)", corrupt: (r) => void (r.sku!.name = "Re\u0000named"), field: "sku.name" },
        {
          name: "sku.policy.max_units_per_customer = -1 (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { maxUnitsPerCustomer: -1 });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.max_units_per_customer"] });
          },
          field: "sku.policy.max_units_per_customer",
        },
        {
          name: "sku.policy.max_units_per_customer = 1,000,001 (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { maxUnitsPerCustomer: 1_000_001 });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.max_units_per_customer"] });
          },
          field: "sku.policy.max_units_per_customer",
        },
        {
          name: "sku.policy.customer_attempt_rate_limit with a 0.5 s window (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 5, window: dur(0, 500_000_000) } });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.customer_attempt_rate_limit"] });
          },
          field: "sku.policy.customer_attempt_rate_limit.window",
        },
        {
          name: "sku.policy.customer_attempt_rate_limit with max_attempts 1,000,001 (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { customerAttemptRateLimit: { maxAttempts: 1_000_001, window: dur(60) } });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.customer_attempt_rate_limit"] });
          },
          field: "sku.policy.customer_attempt_rate_limit.max_attempts",
        },
        {
          name: "sku.policy.default_locking_strategy = 7 (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { defaultLockingStrategy: 7 as LockingStrategy });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.default_locking_strategy"] });
          },
          field: "sku.policy.default_locking_strategy",
        },
        {
          name: "sku.policy.max_hold_ttl of 2 h (masked)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { maxHoldTtl: dur(7200) });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy.max_hold_ttl"] });
          },
          field: "sku.policy.max_hold_ttl",
          reason: "TTL_OUT_OF_RANGE",
        },
        {
          name: "sku.policy with every field zero but a bad stock_buckets (mask policy)",
          corrupt: (r) => {
            r.sku!.policy = create(SkuPolicySchema, { stockBuckets: 300 });
            r.updateMask = create(FieldMaskSchema, { paths: ["policy"] });
          },
          field: "sku.policy.stock_buckets",
        },
      ],
    }),
    define({
      name: "AdjustStock",
      method: "adjustStock",
      base: () => create(AdjustStockRequestSchema, { requestId: rid(), sku: "BI-A", change: { case: "delta", value: 5n }, reason: "restock PO-1" }),
      cases: [
        ...requestIdCases(),
        ...skuCodeCases<AdjustStockRequest>("sku", (r, v) => void (r.sku = v)),
        { name: "neither delta nor on_hand", corrupt: (r) => void (r.change = { case: undefined }), field: /^(delta|on_hand|change)$/ },
        { name: "delta = 0", corrupt: (r) => void (r.change = { case: "delta", value: 0n }), field: "delta", connect: true },
        { name: "delta = 1,000,000,001", corrupt: (r) => void (r.change = { case: "delta", value: 1_000_000_001n }), field: "delta" },
        { name: "delta = -1,000,000,001", corrupt: (r) => void (r.change = { case: "delta", value: -1_000_000_001n }), field: "delta" },
        { name: "on_hand = -1", corrupt: (r) => void (r.change = { case: "onHand", value: -1n }), field: "on_hand" },
        { name: "on_hand = 1,000,000,001", corrupt: (r) => void (r.change = { case: "onHand", value: 1_000_000_001n }), field: "on_hand" },
        { name: "missing reason", corrupt: (r) => void (r.reason = ""), field: "reason" },
        { name: "blank reason", corrupt: (r) => void (r.reason = " \t\u00a0"), field: "reason" },
        ...reasonTooLong(),
        { name: "expected_version = 0", corrupt: (r) => void (r.expectedVersion = 0n), field: "expected_version" },
      ],
    }),
    define({
      name: "CreateHold",
      method: "createHold",
      base: () =>
        create(CreateHoldRequestSchema, {
          requestId: rid(),
          customerId: "cust-1",
          lines: [line("BI-A", 1), line("BI-B", 1), line("BI-A", 2)],
          ttl: dur(60),
          lockingStrategy: LockingStrategy.PESSIMISTIC,
        }),
      cases: [...requestIdCases(), ...customerIdCases(true), ...lineCases(), ...strategyCases(), ...ttlCases()],
    }),
    define({
      name: "ExtendHold",
      method: "extendHold",
      base: () => create(ExtendHoldRequestSchema, { requestId: rid(), reservationId: fixtures.hold, ttl: dur(120) }),
      cases: [...requestIdCases(), ...reservationIdCases(), { name: "missing ttl", corrupt: (r) => void (r.ttl = undefined), field: "ttl" }, ...ttlCases()],
    }),
    define({
      name: "ConfirmHold",
      method: "confirmHold",
      base: () => create(ConfirmHoldRequestSchema, { requestId: rid(), reservationId: fixtures.hold }),
      cases: [...requestIdCases(), ...reservationIdCases(), ...strategyCases()],
    }),
    define({
      name: "ReleaseHold",
      method: "releaseHold",
      base: () => create(ReleaseHoldRequestSchema, { requestId: rid(), reservationId: fixtures.hold, reason: "changed my mind" }),
      // ConfirmHold's base request has confirmed the fixture hold by then.
      baseRefusals: ["FailedPrecondition/INVALID_TRANSITION"],
      cases: [...requestIdCases(), ...reservationIdCases().map((c) => ({ ...c, connect: c.name.includes("not a UUID") })), ...reasonTooLong()],
    }),
    define({
      name: "CreateAllocation",
      method: "createAllocation",
      base: () =>
        create(CreateAllocationRequestSchema, { requestId: rid(), customerId: "cust-1", lines: [line("BI-A", 1), line("BI-B", 1), line("BI-A", 2)] }),
      cases: [...requestIdCases(), ...customerIdCases(true), ...lineCases().map((c) => ({ ...c, connect: false })), ...strategyCases()],
    }),
    define({
      name: "FulfillAllocation",
      method: "fulfillAllocation",
      base: () => create(FulfillAllocationRequestSchema, { requestId: rid(), reservationId: fixtures.allocation }),
      cases: [...requestIdCases(), ...reservationIdCases()],
    }),
    define({
      name: "CancelAllocation",
      method: "cancelAllocation",
      base: () => create(CancelAllocationRequestSchema, { requestId: rid(), reservationId: fixtures.allocation, reason: "order cancelled" }),
      // FulfillAllocation's base request has fulfilled the fixture allocation by then.
      baseRefusals: ["FailedPrecondition/INVALID_TRANSITION"],
      cases: [...requestIdCases(), ...reservationIdCases(), ...reasonTooLong()],
    }),
    define({
      name: "GetSku",
      method: "getSku",
      base: () => create(GetSkuRequestSchema, { sku: "BI-A" }),
      cases: skuCodeCases<GetSkuRequest>("sku", (r, v) => void (r.sku = v)),
    }),
    define({
      name: "ListSkus",
      method: "listSkus",
      base: () => create(ListSkusRequestSchema, { pageSize: 10, codePrefix: "BI" }),
      prepare: async () => {
        fixtures.skuToken = (await grpc().listSkus({ pageSize: 1, codePrefix: "BI-" })).nextPageToken;
        expect(fixtures.skuToken, "a ListSkus page token").to.not.equal("");
      },
      cases: [
        ...pageSizeCases(),
        { name: "code_prefix with a '/'", corrupt: (r) => void (r.codePrefix = "BI/"), field: "code_prefix" },
        { name: "code_prefix with a space", corrupt: (r) => void (r.codePrefix = "BI "), field: "code_prefix" },
        { name: "code_prefix of 65 characters", corrupt: (r) => void (r.codePrefix = "B".repeat(65)), field: "code_prefix" },
        ...pageTokenCases(() => fixtures.skuToken),
      ],
    }),
    define({
      name: "GetReservation",
      method: "getReservation",
      base: () => create(GetReservationRequestSchema, { reservationId: fixtures.hold }),
      cases: reservationIdCases(),
    }),
    define({
      name: "ListReservations",
      method: "listReservations",
      base: () =>
        create(ListReservationsRequestSchema, {
          pageSize: 10,
          customerId: "cust-1",
          statuses: [ReservationStatus.HELD, ReservationStatus.ALLOCATED],
          sku: "BI-A",
          type: ReservationType.HOLD,
        }),
      prepare: async () => {
        fixtures.reservationToken = (await grpc().listReservations({ pageSize: 1 })).nextPageToken;
        expect(fixtures.reservationToken, "a ListReservations page token").to.not.equal("");
      },
      cases: [
        ...pageSizeCases(),
        ...customerIdCases(false),
        { name: "statuses[1] = 42 (no such status)", corrupt: (r) => void (r.statuses = [ReservationStatus.HELD, 42 as ReservationStatus]), field: "statuses[1]" },
        { name: "statuses[0] = -1", corrupt: (r) => void (r.statuses = [-1 as ReservationStatus]), field: "statuses[0]" },
        { name: "statuses[1] = 0 (unspecified)", corrupt: (r) => void (r.statuses = [ReservationStatus.HELD, ReservationStatus.UNSPECIFIED]), field: "statuses[1]" },
        ...skuCodeCases<ListReservationsRequest>("sku", (r, v) => void (r.sku = v), false),
        { name: "type = 7 (no such type)", corrupt: (r) => void (r.type = 7 as ReservationType), field: "type" },
        ...pageTokenCases(() => fixtures.reservationToken),
      ],
    }),
    define({
      name: "GetAvailability",
      method: "getAvailability",
      base: () => create(GetAvailabilityRequestSchema, { skus: ["BI-A", "BI-B"] }),
      cases: [
        { name: "no skus", corrupt: (r) => void (r.skus = []), field: "skus", connect: true },
        { name: "1001 skus", corrupt: (r) => void (r.skus = manySkus(1001)), field: "skus" },
        { name: "skus[1] with a '/'", corrupt: (r) => void (r.skus = ["BI-A", "BI/B"]), field: "skus[1]" },
        { name: "skus[0] empty", corrupt: (r) => void (r.skus = ["", "BI-B"]), field: "skus[0]" },
      ],
    }),
    define({
      name: "CheckConsistency",
      method: "checkConsistency",
      base: () => create(CheckConsistencyRequestSchema, { skus: ["BI-A"] }),
      cases: [
        { name: "1001 skus", corrupt: (r) => void (r.skus = manySkus(1001)), field: "skus" },
        { name: "skus[0] with a space", corrupt: (r) => void (r.skus = ["BI A"]), field: "skus[0]" },
        { name: "skus[1] of 65 characters", corrupt: (r) => void (r.skus = ["BI-A", "C".repeat(65)]), field: "skus[1]" },
      ],
    }),
    define({
      name: "ListAuditEvents",
      method: "listAuditEvents",
      base: () =>
        create(ListAuditEventsRequestSchema, {
          pageSize: 10,
          sku: "BI-A",
          reservationId: fixtures.hold,
          operations: [AuditOperation.HOLD_CREATED],
          startTime: inHours(-1),
          endTime: inHours(1),
        }),
      prepare: async () => {
        fixtures.auditToken = (await grpc().listAuditEvents({ pageSize: 1 })).nextPageToken;
        expect(fixtures.auditToken, "a ListAuditEvents page token").to.not.equal("");
      },
      cases: [
        ...pageSizeCases(),
        ...skuCodeCases<ListAuditEventsRequest>("sku", (r, v) => void (r.sku = v), false),
        ...reservationIdCases(false),
        { name: "operations[0] = 99 (no such operation)", corrupt: (r) => void (r.operations = [99 as AuditOperation]), field: "operations[0]" },
        { name: "operations[0] = 0 (unspecified)", corrupt: (r) => void (r.operations = [AuditOperation.UNSPECIFIED]), field: "operations[0]" },
        ...timeRangeCases(),
        ...pageTokenCases(() => fixtures.auditToken),
      ],
    }),
    define({
      name: "ListAvailabilitySnapshots",
      method: "listAvailabilitySnapshots",
      base: () => create(ListAvailabilitySnapshotsRequestSchema, { pageSize: 10, sku: "BI-A", startTime: inHours(-1), endTime: inHours(1) }),
      cases: [...pageSizeCases(), ...skuCodeCases<ListAvailabilitySnapshotsRequest>("sku", (r, v) => void (r.sku = v), false), ...timeRangeCases(), ...pageTokenCases()],
    }),
    // The waitlist and GetFlashSaleReport.
    define({
      name: "JoinWaitlist",
      method: "joinWaitlist",
      base: () => create(JoinWaitlistRequestSchema, { requestId: rid(), customerId: "cust-1", sku: "BI-A", quantity: 2, maxWait: dur(3600) }),
      // cust-1 may already have an active entry on BI-A (one per customer and SKU).
      baseRefusals: ["AlreadyExists/WAITLIST_ENTRY_ALREADY_EXISTS"],
      cases: [
        ...requestIdCases(),
        ...customerIdCases(false),
        ...skuCodeCases<JoinWaitlistRequest>("sku", (r, v) => void (r.sku = v)),
        { name: "quantity = 0", corrupt: (r) => void (r.quantity = 0), field: "quantity" },
        { name: "quantity = 1,000,001", corrupt: (r) => void (r.quantity = 1_000_001), field: "quantity" },
        { name: "max_wait of 0.5 s (minimum 1 s)", corrupt: (r) => void (r.maxWait = dur(0, 500_000_000)), field: "max_wait" },
        { name: "max_wait of 7 days and 1 s", corrupt: (r) => void (r.maxWait = dur(7 * 86_400 + 1)), field: "max_wait" },
      ],
    }),
    define({
      name: "LeaveWaitlist",
      method: "leaveWaitlist",
      base: () => create(LeaveWaitlistRequestSchema, { requestId: rid(), waitlistEntryId: randomUUID() }),
      baseRefusals: ["NotFound/WAITLIST_ENTRY_NOT_FOUND"],
      cases: [...requestIdCases(), ...uuidCases<{ waitlistEntryId: string }>("waitlist_entry_id", (r, v) => void (r.waitlistEntryId = v))],
    }),
    define({
      name: "GetWaitlistEntry",
      method: "getWaitlistEntry",
      base: () => create(GetWaitlistEntryRequestSchema, { waitlistEntryId: randomUUID() }),
      baseRefusals: ["NotFound/WAITLIST_ENTRY_NOT_FOUND"],
      cases: uuidCases<{ waitlistEntryId: string }>("waitlist_entry_id", (r, v) => void (r.waitlistEntryId = v)),
    }),
    define({
      name: "ListWaitlistEntries",
      method: "listWaitlistEntries",
      base: () => create(ListWaitlistEntriesRequestSchema, { pageSize: 10, sku: "BI-A", customerId: "cust-1", statuses: [WaitlistEntryStatus.WAITING] }),
      cases: [
        ...pageSizeCases(),
        ...skuCodeCases<ListWaitlistEntriesRequest>("sku", (r, v) => void (r.sku = v), false),
        ...customerIdCases(false),
        { name: "statuses[0] = 0 (unspecified)", corrupt: (r) => void (r.statuses = [WaitlistEntryStatus.UNSPECIFIED]), field: "statuses[0]" },
        { name: "statuses[0] = 42", corrupt: (r) => void (r.statuses = [42 as WaitlistEntryStatus]), field: "statuses[0]" },
      ],
    }),
    define({
      name: "GetFlashSaleReport",
      method: "getFlashSaleReport",
      base: () => create(GetFlashSaleReportRequestSchema, { sku: "BI-A", startTime: inHours(-2), endTime: inHours(-1), timelineInterval: dur(60) }),
      cases: [
        ...skuCodeCases<GetFlashSaleReportRequest>("sku", (r, v) => void (r.sku = v)),
        { name: "missing start_time", corrupt: (r) => void (r.startTime = undefined), field: "start_time" },
        { name: "end_time before start_time", corrupt: (r) => void (r.endTime = inHours(-3)), field: "end_time" },
        { name: "a window of 31 days and 1 h", corrupt: (r) => void ((r.startTime = inHours(-31 * 24 - 1)), (r.endTime = inHours(0))), field: "end_time" },
        { name: "an open window that began 32 days ago", corrupt: (r) => void ((r.startTime = inHours(-32 * 24)), (r.endTime = undefined)), field: "start_time" },
        { name: "timeline_interval of 100 ms over 31 days (over 10,000 buckets)", corrupt: (r) => void ((r.startTime = inHours(-31 * 24)), (r.endTime = inHours(0)), (r.timelineInterval = dur(0, 100_000_000))), field: "timeline_interval" },
        { name: "top_customers_limit = -1", corrupt: (r) => void (r.topCustomersLimit = -1), field: "top_customers_limit" },
        { name: "timeline_interval of 99 ms (minimum 100 ms)", corrupt: (r) => void (r.timelineInterval = dur(0, 99_000_000)), field: "timeline_interval" },
        { name: "timeline_interval of 1 day and 1 s", corrupt: (r) => void (r.timelineInterval = dur(86_401)), field: "timeline_interval" },
      ],
    }),
  ];
}

/** The server streams' requests: bad ones are refused before the first message. */
interface StreamCase {
  name: string;
  call: (grpc: Grpc) => AsyncIterable<unknown>;
  field: string;
}

const watchAvailability = (corrupt: (r: WatchAvailabilityRequest) => void) => (grpc: Grpc) => {
  const request = create(WatchAvailabilityRequestSchema, { skus: ["BI-A"], heartbeatInterval: dur(15) });
  corrupt(request);
  return grpc.watchAvailability(request);
};
const watchWaitlist = (corrupt: (r: WatchWaitlistRequest) => void) => (grpc: Grpc) => {
  const request = create(WatchWaitlistRequestSchema, { customerId: "cust-1", skus: ["BI-A"], heartbeatInterval: dur(15) });
  corrupt(request);
  return grpc.watchWaitlist(request);
};

const streamCases: StreamCase[] = [
  { name: "WatchAvailability: skus[1] with a '/'", call: watchAvailability((r) => void (r.skus = ["BI-A", "BI/B"])), field: "skus[1]" },
  { name: "WatchAvailability: 1001 skus", call: watchAvailability((r) => void (r.skus = manySkus(1001))), field: "skus" },
  { name: "WatchAvailability: heartbeat_interval of 0.5 s", call: watchAvailability((r) => void (r.heartbeatInterval = dur(0, 500_000_000))), field: "heartbeat_interval" },
  { name: "WatchAvailability: heartbeat_interval of 5 min 1 s", call: watchAvailability((r) => void (r.heartbeatInterval = dur(301))), field: "heartbeat_interval" },
  { name: "WatchWaitlist: customer_id with a space", call: watchWaitlist((r) => void (r.customerId = "cust 1")), field: "customer_id" },
  { name: "WatchWaitlist: 101 skus", call: watchWaitlist((r) => void (r.skus = manySkus(101))), field: "skus" },
  { name: "WatchWaitlist: skus[0] empty", call: watchWaitlist((r) => void (r.skus = [""])), field: "skus[0]" },
  { name: "WatchWaitlist: heartbeat_interval of 10 min", call: watchWaitlist((r) => void (r.heartbeatInterval = dur(600))), field: "heartbeat_interval" },
];

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

describe("bad input: INVALID_ARGUMENT for each bad field of each RPC, and no row changed", function () {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let knex: Knex;
  let grpc: Grpc;
  let connect: Connect;
  let fingerprintSql = "";
  const rpcs = table(() => grpc);

  const invoke = (client: Grpc | Connect, method: UnaryName, request: unknown): Promise<unknown> =>
    (client as unknown as Record<string, (r: unknown) => Promise<unknown>>)[method]!(request);

  async function failure(promise: PromiseLike<unknown>): Promise<ConnectError> {
    const err = await rejectionOf(promise);
    if (!(err instanceof ConnectError)) throw new AssertionError(`expected a ConnectError, got ${String(err)}`);
    return err;
  }

  /**
   * Every table of the schema: row count, max integer id, and a digest of all rows;
   * plus inventory totals and the idempotency record count, spelled out. hold_attempts
   * is left out on purpose: it is the request log of CreateHold attempts, which its
   * migration (0002) says records refused attempts too, bad input included; it is a
   * log of what was asked, not state that a refused request may not change.
   */
  async function fingerprint(): Promise<unknown> {
    if (fingerprintSql === "") {
      const tables = await query<{ table_name: string; int_id: boolean }>(
        knex,
        `SELECT t.table_name,
                EXISTS (SELECT 1 FROM information_schema.columns c
                         WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
                           AND c.column_name = 'id' AND c.data_type IN ('bigint', 'integer')) AS int_id
           FROM information_schema.tables t
          WHERE t.table_schema = current_schema() AND t.table_type = 'BASE TABLE' AND t.table_name <> 'hold_attempts'
          ORDER BY t.table_name`,
      );
      expect(tables.map((t) => t.table_name)).to.include.members(["skus", "inventory", "reservations", "reservation_items", "audit_events", "idempotency_records", "waitlist_entries"]);
      fingerprintSql = tables
        .map(
          (t) =>
            `SELECT '${t.table_name}' AS name, count(*)::bigint AS rows, ${t.int_id ? "max(x.id)::bigint" : "NULL::bigint"} AS max_id,
                    md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS digest
               FROM "${t.table_name}" x`,
        )
        .join("\nUNION ALL\n");
    }
    const tables = await query<{ name: string; rows: number; max_id: number | null; digest: string }>(knex, fingerprintSql);
    const [inventory] = await query(
      knex,
      `SELECT coalesce(sum(on_hand), 0)::bigint AS on_hand, coalesce(sum(reserved), 0)::bigint AS reserved,
              coalesce(sum(allocated), 0)::bigint AS allocated, coalesce(sum(version), 0)::bigint AS versions,
              coalesce(sum(waitlist_count), 0)::bigint AS waitlist_count
         FROM inventory`,
    );
    const [idempotency] = await query(knex, `SELECT count(*)::bigint AS records FROM idempotency_records`);
    return { tables: Object.fromEntries(tables.map((t) => [t.name, { rows: t.rows, max_id: t.max_id, digest: t.digest }])), inventory, idempotency };
  }

  const fieldMatches = (field: string, expected: string | RegExp) => (typeof expected === "string" ? field === expected : expected.test(field));

  /** INVALID_ARGUMENT, one ErrorInfo with an allowed reason, and a BadRequest naming only the expected field. */
  function expectInvalid(err: ConnectError, c: Case<unknown>): void {
    const context = `${Code[err.code]}: ${err.rawMessage}`;
    expect(Code[err.code], context).to.equal(Code[Code.InvalidArgument]);
    const infos = err.findDetails(ErrorInfoSchema);
    expect(infos, `one ErrorInfo (${context})`).to.have.length(1);
    const info = infos[0]!;
    expect(info.domain).to.equal(DOMAIN);
    const reasons: readonly string[] = c.reason === undefined ? ["BAD_REQUEST"] : typeof c.reason === "string" ? [c.reason] : c.reason;
    expect(reasons, `reason ${info.reason} (${context})`).to.include(info.reason);
    expect(info.metadata.replayed, "an INVALID_ARGUMENT is never a replay").to.equal(undefined);
    if (info.reason === "TTL_OUT_OF_RANGE") expect(info.metadata, "TTL_OUT_OF_RANGE metadata").to.include.keys("min_ttl_ms", "max_ttl_ms");
    const requests = err.findDetails(BadRequestSchema);
    expect(requests, `one BadRequest (${context})`).to.have.length(1);
    const violations = requests[0]!.fieldViolations;
    expect(violations, `field violations (${context})`).to.not.be.empty;
    for (const v of violations) {
      expect(fieldMatches(v.field, c.field), `violation on "${v.field}" (${v.description}); expected only ${String(c.field)}`).to.equal(true);
      expect(v.description, `description of ${v.field}`).to.not.equal("");
    }
  }

  before(async () => {
    db = await createTestDatabase("bad_input");
    svc = await startService("reservation-service", db.url);
    knex = createKnex({ url: db.url, poolMax: 2 });
    grpc = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    connect = createClient(InventoryReservationService, createConnectTransport({ baseUrl: svc.httpUrl, httpVersion: "1.1", interceptors: [testCallerInterceptor] }));

    for (const [sku, onHand] of [
      ["BI-A", 1_000],
      ["BI-B", 1_000],
      ["BI-BIG", 2_000_000],
    ] as const) {
      await grpc.createSku({ requestId: rid("sku"), sku, name: `SKU ${sku}`, initialOnHand: BigInt(onHand) });
    }
    fixtures.hold = (await grpc.createHold({ requestId: rid("fixture"), customerId: "cust-1", lines: [line("BI-A", 1)], ttl: dur(3600) })).reservation!.id;
    fixtures.allocation = (await grpc.createAllocation({ requestId: rid("fixture"), customerId: "cust-1", lines: [line("BI-B", 1)] })).reservation!.id;
  });
  after(async () => {
    grpc?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  for (const def of rpcs) {
    describe(def.name, () => {
      if (def.prepare !== undefined) before(def.prepare);

      for (const c of def.cases) {
        it(`${c.name} → INVALID_ARGUMENT / ${[c.reason ?? "BAD_REQUEST"].flat().join(" or ")} on ${String(c.field)}`, async () => {
          const request = def.base();
          c.corrupt(request);
          const before = await fingerprint();
          const err = await failure(invoke(grpc, def.method, request));
          expect(await fingerprint(), `nothing changed (answer: ${Code[err.code]} ${err.rawMessage})`).to.deep.equal(before);
          expectInvalid(err, c as Case<unknown>);
        });
      }
    });
  }

  describe("server streams: INVALID_ARGUMENT before the first message", () => {
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) throw new AssertionError("a refused stream sent a message");
    };
    for (const c of streamCases) {
      it(`${c.name} → INVALID_ARGUMENT / BAD_REQUEST on ${c.field}`, async () => {
        expectInvalid(await failure(drain(c.call(grpc))), { name: c.name, corrupt: () => undefined, field: c.field });
      });
    }
    it("a well-formed request passes the checks: each stream sends its initial state", async () => {
      for (const open of [watchAvailability(() => undefined), watchWaitlist(() => undefined)]) {
        let first: { event: { case: string | undefined } } | undefined;
        for await (const message of open(grpc)) {
          first = message as typeof first;
          break;
        }
        expect(first?.event.case).to.equal("initialState");
      }
    });
  });

  describe("the same answers over Connect (HTTP/1.1)", () => {
    const flagged = rpcs.flatMap((def) => def.cases.filter((c) => c.connect).map((c) => ({ def, c })));
    for (const { def, c } of flagged) {
      it(`${def.name}: ${c.name}`, async () => {
        const request = def.base();
        c.corrupt(request);
        const before = await fingerprint();
        const viaGrpc = await failure(invoke(grpc, def.method, request));
        const viaConnect = await failure(invoke(connect, def.method, request));
        expectInvalid(viaConnect, c as Case<unknown>);
        const normalise = (err: ConnectError) => ({
          code: err.code,
          message: err.rawMessage,
          errorInfo: err.findDetails(ErrorInfoSchema).map((i) => ({ reason: i.reason, domain: i.domain, metadata: i.metadata })),
          violations: err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, description: v.description }))),
        });
        expect(normalise(viaConnect)).to.deep.equal(normalise(viaGrpc));
        expect(await fingerprint(), "nothing changed").to.deep.equal(before);
      });
    }
  });

  describe("an INVALID_ARGUMENT is not recorded: the same request_id then runs a valid request", () => {
    interface Reuse {
      name: string;
      method: UnaryName;
      /** Makes whatever the request needs (e.g. a fresh hold) and returns the good and bad requests for `requestId`. */
      setup: (requestId: string) => Promise<{ good: object; bad: object; reason?: Reason }>;
    }
    const freshHold = async () => (await grpc.createHold({ requestId: rid("fresh"), customerId: "cust-2", lines: [line("BI-A", 1)], ttl: dur(600) })).reservation!.id;
    const freshAllocation = async () => (await grpc.createAllocation({ requestId: rid("fresh"), customerId: "cust-2", lines: [line("BI-B", 1)] })).reservation!.id;
    let n = 0;
    const cases: Reuse[] = [
      {
        name: "CreateSku after a blank name",
        method: "createSku",
        setup: async (requestId) => {
          const sku = `BI-REUSE-${++n}`;
          return { bad: { requestId, sku, name: "  " }, good: { requestId, sku, name: "Reuse" } };
        },
      },
      {
        name: "CreateSku after TTL_OUT_OF_RANGE",
        method: "createSku",
        setup: async (requestId) => {
          const sku = `BI-REUSE-${++n}`;
          return { bad: { requestId, sku, name: "Reuse", policy: { maxHoldTtl: dur(7200) } }, good: { requestId, sku, name: "Reuse" }, reason: "TTL_OUT_OF_RANGE" };
        },
      },
      {
        name: "UpdateSku after INVALID_UPDATE_MASK",
        method: "updateSku",
        setup: async (requestId) => ({
          bad: { requestId, sku: { code: "BI-B", name: "B renamed" }, updateMask: { paths: ["*"] } },
          good: { requestId, sku: { code: "BI-B", name: "B renamed" }, updateMask: { paths: ["name"] } },
          reason: "INVALID_UPDATE_MASK",
        }),
      },
      {
        name: "UpdateSku after TTL_OUT_OF_RANGE (judged inside the transaction)",
        method: "updateSku",
        setup: async (requestId) => ({
          bad: { requestId, sku: { code: "BI-B", policy: { maxHoldTtl: dur(7200) } }, updateMask: { paths: ["policy.max_hold_ttl"] } },
          good: { requestId, sku: { code: "BI-B", policy: { maxHoldTtl: dur(1800) } }, updateMask: { paths: ["policy.max_hold_ttl"] } },
          reason: "TTL_OUT_OF_RANGE",
        }),
      },
      {
        name: "AdjustStock after delta 0",
        method: "adjustStock",
        setup: async (requestId) => ({
          bad: { requestId, sku: "BI-A", change: { case: "delta", value: 0n }, reason: "count" },
          good: { requestId, sku: "BI-A", change: { case: "delta", value: 3n }, reason: "count" },
        }),
      },
      {
        name: "CreateHold after lines[0].quantity 0",
        method: "createHold",
        setup: async (requestId) => ({
          bad: { requestId, customerId: "cust-3", lines: [line("BI-A", 0)], ttl: dur(60) },
          good: { requestId, customerId: "cust-3", lines: [line("BI-A", 1)], ttl: dur(60) },
        }),
      },
      {
        name: "CreateHold after TTL_OUT_OF_RANGE (judged inside the transaction)",
        method: "createHold",
        setup: async (requestId) => ({
          bad: { requestId, customerId: "cust-3", lines: [line("BI-A", 1)], ttl: dur(7200) },
          good: { requestId, customerId: "cust-3", lines: [line("BI-A", 1)], ttl: dur(60) },
          reason: "TTL_OUT_OF_RANGE",
        }),
      },
      {
        name: "ExtendHold after a missing ttl",
        method: "extendHold",
        setup: async (requestId) => {
          const id = await freshHold();
          return { bad: { requestId, reservationId: id }, good: { requestId, reservationId: id, ttl: dur(900) } };
        },
      },
      {
        name: "ExtendHold after TTL_OUT_OF_RANGE (judged inside the transaction)",
        method: "extendHold",
        setup: async (requestId) => {
          const id = await freshHold();
          return { bad: { requestId, reservationId: id, ttl: dur(7200) }, good: { requestId, reservationId: id, ttl: dur(900) }, reason: "TTL_OUT_OF_RANGE" };
        },
      },
      {
        name: "ConfirmHold after locking_strategy 7",
        method: "confirmHold",
        setup: async (requestId) => {
          const id = await freshHold();
          return { bad: { requestId, reservationId: id, lockingStrategy: 7 }, good: { requestId, reservationId: id } };
        },
      },
      {
        name: "ReleaseHold after a 513-character reason",
        method: "releaseHold",
        setup: async (requestId) => {
          const id = await freshHold();
          return { bad: { requestId, reservationId: id, reason: "x".repeat(513) }, good: { requestId, reservationId: id, reason: "x".repeat(512) } };
        },
      },
      {
        name: "CreateAllocation after a bad customer_id",
        method: "createAllocation",
        setup: async (requestId) => ({
          bad: { requestId, customerId: "cust 4", lines: [line("BI-B", 1)] },
          good: { requestId, customerId: "cust-4", lines: [line("BI-B", 1)] },
        }),
      },
      {
        name: "FulfillAllocation after a non-canonical reservation_id",
        method: "fulfillAllocation",
        setup: async (requestId) => {
          const id = await freshAllocation();
          return { bad: { requestId, reservationId: id.toUpperCase() }, good: { requestId, reservationId: id } };
        },
      },
      {
        name: "CancelAllocation after a 513-character reason",
        method: "cancelAllocation",
        setup: async (requestId) => {
          const id = await freshAllocation();
          return { bad: { requestId, reservationId: id, reason: "é".repeat(513) }, good: { requestId, reservationId: id, reason: "é".repeat(512) } };
        },
      },
    ];

    for (const r of cases) {
      it(r.name, async () => {
        const requestId = rid("reuse");
        const { good, bad, reason } = await r.setup(requestId);
        const before = await fingerprint();
        const err = await failure(invoke(grpc, r.method, bad));
        expect(Code[err.code], err.rawMessage).to.equal("InvalidArgument");
        expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal(reason ?? "BAD_REQUEST");
        expect(await fingerprint(), "nothing changed, nothing recorded").to.deep.equal(before);
        const [records] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM idempotency_records WHERE request_id = ?`, [requestId]);
        expect(records!.n, "idempotency records for the request_id").to.equal(0);

        const first = (await invoke(grpc, r.method, good)) as { replayed: boolean };
        expect(first.replayed, "the valid request executes (no IDEMPOTENCY_KEY_REUSED, no replay)").to.equal(false);
        const second = (await invoke(grpc, r.method, good)) as { replayed: boolean };
        expect(second.replayed, "and is now recorded").to.equal(true);
      });
    }
  });

  describe("every base request is well-formed (so each case above corrupts exactly one field)", () => {
    // Last, because the mutating ones change the fixtures the cases above rely on
    // (e.g. ExtendHold's TTL_OUT_OF_RANGE needs a HELD hold). Each base request must
    // succeed, or be refused only as its RpcDef.baseRefusals says (ReleaseHold after
    // ConfirmHold is INVALID_TRANSITION): INTERNAL, UNKNOWN, UNIMPLEMENTED or any other
    // answer fails.
    for (const def of rpcs) {
      it(def.name, async () => {
        try {
          await invoke(grpc, def.method, def.base());
        } catch (err) {
          if (!(err instanceof ConnectError)) throw err;
          const answer = `${Code[err.code]}/${err.findDetails(ErrorInfoSchema)[0]?.reason ?? "-"}`;
          expect(def.baseRefusals ?? [], `${def.name} base request answered ${answer}: ${err.rawMessage}`).to.include(answer);
        }
      });
    }
  });

  describe("the largest valid values are accepted", () => {
    it("CreateHold with 50 lines, a 128-character request_id and customer_id, a line of 1,000,000 and the maximum ttl", async () => {
      const requestId = "r".repeat(120) + randomUUID().slice(0, 8);
      const customerId = "c".repeat(127) + "@";
      const lines = [line("BI-BIG", 1_000_000), ...Array.from({ length: 49 }, () => line("BI-A", 1))];
      const { reservation } = await grpc.createHold({ requestId, customerId, lines, ttl: dur(3600) });
      expect(reservation!.requestId).to.equal(requestId);
      expect(reservation!.customerId).to.equal(customerId);
      expect(reservation!.lines.map((l) => [l.sku, l.quantity])).to.deep.equal([
        ["BI-A", 49],
        ["BI-BIG", 1_000_000],
      ]);
      // ReleaseHold with a reason of 512 code points (1024 bytes).
      const released = await grpc.releaseHold({ requestId: rid("release"), reservationId: reservation!.id, reason: "é".repeat(512) });
      expect(released.reservation!.closeReason).to.equal("é".repeat(512));
      await assertInvariants(knex);
    });

    it("a SKU name of 200 code points outside the BMP (400 UTF-16 units) and a reason of 512 such code points are accepted", async () => {
      const { sku } = await grpc.createSku({ requestId: rid("sku"), sku: "BI-EMOJI", name: "📦".repeat(200), initialOnHand: 10n });
      expect(sku!.name).to.equal("📦".repeat(200));
      const held = (await grpc.createHold({ requestId: rid("hold"), customerId: "cust-5", lines: [line("BI-EMOJI", 1)], ttl: dur(60) })).reservation!;
      const released = await grpc.releaseHold({ requestId: rid("release"), reservationId: held.id, reason: "📦".repeat(512) });
      expect(released.reservation!.closeReason).to.equal("📦".repeat(512));
      const adjusted = await grpc.adjustStock({ requestId: rid("adjust"), sku: "BI-EMOJI", change: { case: "delta", value: 1n }, reason: "📦".repeat(512) });
      expect(adjusted.auditEvent!.reason).to.equal("📦".repeat(512));
      await assertInvariants(knex);
    });

    it("page_size 0 and 1001 (treated as 1000) are accepted by ListSkus", async () => {
      await grpc.listSkus({ pageSize: 0 });
      await grpc.listSkus({ pageSize: 1001 });
    });

    it("GetAvailability with 1000 skus is not INVALID_ARGUMENT (unknown ones are NOT_FOUND)", async () => {
      const skus = ["BI-A", ...manySkus(999)];
      // Connect: NOT_FOUND listing the 999 unknown codes (one ResourceInfo each).
      const viaConnect = await failure(connect.getAvailability({ skus }));
      expect(Code[viaConnect.code], viaConnect.rawMessage.slice(0, 200)).to.equal("NotFound");
      expect(viaConnect.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("SKU_NOT_FOUND");
      // gRPC: the same answer (with a deadline, so that a lost answer fails fast instead of hanging).
      const err = await failure(grpc.getAvailability({ skus }, { timeoutMs: 10_000 }));
      expect(Code[err.code], err.rawMessage.slice(0, 200)).to.equal("NotFound");
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("SKU_NOT_FOUND");
      // The error names the first 20 unknown codes and says how many more there are
      // (errors.proto, LISTS IN ERRORS): trailers must stay small.
      expect(err.findDetails(ErrorInfoSchema)[0]?.metadata.omitted).to.equal("979");
      expect(err.findDetails(ResourceInfoSchema)).to.have.length(20);
      const ok = await grpc.getAvailability({ skus: ["BI-A", "BI-A", "BI-B"] });
      expect(ok.availabilities.map((a) => a.sku)).to.deep.equal(["BI-A", "BI-B"]);
    });
  });
});
