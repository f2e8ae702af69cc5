// Catalog and stock RPCs (CreateSku, GetSku, ListSkus, UpdateSku, AdjustStock)
// against a real reservation-service process over gRPC, with the database read
// directly to check what was (and was not) written.
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AuditOperation,
  HotSkuMode,
  InventoryReservationService,
  LockingStrategy,
  SkuPolicySchema,
  WaitlistPromotionPolicy,
  type CreateSkuRequestSchema,
} from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema } from "@holdfast/contracts/rpc";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query, type AuditEventRow, type SkuRow } from "@holdfast/schema";
import type { Knex } from "knex";
import { rejectionOf } from "../support/assertions.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { testCaller } from "../support/auth.js";

type Client = GrpcJsClient<typeof InventoryReservationService>;

/** Everything a test checks about a refusal: status, reason, ErrorInfo metadata, BadRequest fields. */
async function failureOf(promise: PromiseLike<unknown>) {
  const err = await rejectionOf(promise);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  const info = err.findDetails(ErrorInfoSchema)[0];
  return {
    code: err.code,
    reason: info?.reason,
    metadata: info?.metadata ?? {},
    fields: err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((f) => f.field)),
  };
}

const secs = (seconds: number) => ({ seconds: BigInt(seconds), nanos: 0 });

let nextId = 0;
const rid = (label: string) => `${label}-${++nextId}`;

describe("reservation-service: catalog and stock", () => {
  let db: TestDatabase;
  let svc: ServiceProcess;
  let client: Client;
  let knex: Knex;

  const events = (sku: string) => query<AuditEventRow>(knex, `SELECT * FROM audit_events WHERE sku_code = ? ORDER BY id`, [sku]);
  const skuRow = async (code: string) => (await query<SkuRow>(knex, `SELECT * FROM skus WHERE code = ?`, [code]))[0];
  const createSku = (sku: string, extra: Partial<MessageInitShape<typeof CreateSkuRequestSchema>> = {}) =>
    client.createSku({ requestId: rid("create"), sku, name: `Item ${sku}`, initialOnHand: 10n, ...extra });

  before(async () => {
    db = await createTestDatabase("catalog");
    svc = await startService("reservation-service", db.url);
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    knex = createKnex({ url: db.url, poolMax: 2 });
  });
  after(async () => {
    client?.close();
    await knex?.destroy();
    await svc?.stop();
    await db?.drop();
  });

  describe("CreateSku and GetSku", () => {
    it("creates a SKU at version 1 with its policy as stored, and a SKU_CREATED event", async () => {
      const { sku, replayed } = await client.createSku({
        requestId: "create-widget",
        sku: "WIDGET-1",
        name: "Widget",
        initialOnHand: 25n,
        policy: { maxWaitlistLength: 2, defaultHoldTtl: secs(300), hotSkuMode: HotSkuMode.OFF },
      });
      expect(replayed).to.equal(false);
      expect(sku?.code).to.equal("WIDGET-1");
      expect(sku?.availability).to.include({ onHand: 25n, reserved: 0n, allocated: 0n, available: 25n, version: 1n });
      expect(sku?.policy?.maxWaitlistLength).to.equal(2);
      expect(sku?.policy?.defaultHoldTtl?.seconds).to.equal(300n);
      expect(sku?.policy?.maxHoldTtl).to.equal(undefined);
      expect(sku?.policy?.hotSkuMode).to.equal(HotSkuMode.OFF);

      const got = await client.getSku({ sku: "WIDGET-1" });
      expect(got.sku?.name).to.equal("Widget");
      expect(got.sku?.availability?.version).to.equal(1n);
      expect(got.sku?.createTime).to.deep.equal(sku?.createTime);

      const [event, ...more] = await events("WIDGET-1");
      expect(more).to.have.length(0);
      expect(event).to.include({
        operation: "SKU_CREATED",
        delta_on_hand: 25,
        on_hand_before: 0,
        on_hand_after: 25,
        reserved_after: 0,
        allocated_after: 0,
        version_after: 1,
        actor: "admin:test-admin",
        request_id: "create-widget",
      });
      // Zero values are stored as NULL ("server default").
      const row = await skuRow("WIDGET-1");
      expect(row).to.include({ max_hold_ttl_ms: null, rate_limit_max_attempts: null, default_locking_strategy: null, default_hold_ttl_ms: 300_000 });
    });

    it("writes SKU_CREATED even when the initial stock is 0", async () => {
      await createSku("EMPTY-1", { initialOnHand: 0n });
      const [event] = await events("EMPTY-1");
      expect(event).to.include({ operation: "SKU_CREATED", delta_on_hand: 0, on_hand_after: 0, version_after: 1 });
    });

    it("replays the same request, and refuses the request id for a different request", async () => {
      const request = { requestId: "create-replay", sku: "REPLAY-1", name: "Replay", initialOnHand: 3n };
      const first = await client.createSku(request);
      const second = await client.createSku(request);
      expect(second.replayed).to.equal(true);
      expect(second.sku).to.deep.equal(first.sku);
      const reused = await failureOf(client.createSku({ ...request, initialOnHand: 4n }));
      expect(reused).to.include({ code: Code.InvalidArgument, reason: "IDEMPOTENCY_KEY_REUSED" });
      expect(reused.fields).to.deep.equal(["request_id"]);
      expect(await events("REPLAY-1")).to.have.length(1);
    });

    it("refuses an existing code with ALREADY_EXISTS, recorded for replay", async () => {
      await createSku("DUP-1");
      const request = { requestId: "create-dup", sku: "DUP-1", name: "Again", initialOnHand: 1n };
      const failure = await failureOf(client.createSku(request));
      expect(failure).to.include({ code: Code.AlreadyExists, reason: "SKU_ALREADY_EXISTS" });
      expect(failure.metadata).to.include({ sku: "DUP-1" });
      const replay = await failureOf(client.createSku(request));
      expect(replay).to.include({ code: Code.AlreadyExists, reason: "SKU_ALREADY_EXISTS" });
      expect(replay.metadata).to.include({ replayed: "true" });
      expect((await skuRow("DUP-1"))?.name).to.equal("Item DUP-1");
    });

    it("refuses a hot-SKU mode this build does not implement (BUCKETED), storing nothing; serves GROUP_COMMIT", async () => {
      const failure = await failureOf(createSku("HOT-BUCKETED", { policy: { hotSkuMode: HotSkuMode.BUCKETED } }));
      expect(failure).to.include({ code: Code.Unimplemented, reason: "NOT_IMPLEMENTED" });
      expect(failure.metadata).to.include({ feature: "hot_sku_mode:BUCKETED" });
      expect(await skuRow("HOT-BUCKETED")).to.equal(undefined);
      const { sku } = await createSku("HOT-GROUP-COMMIT", { policy: { hotSkuMode: HotSkuMode.GROUP_COMMIT } });
      expect(sku?.policy?.hotSkuMode).to.equal(HotSkuMode.GROUP_COMMIT);
      expect((await skuRow("HOT-GROUP-COMMIT"))?.hot_sku_mode).to.equal("GROUP_COMMIT");
    });

    it("lists every bad field in one BadRequest, the contract's annotated limits first, and writes nothing", async () => {
      const policy = {
        maxUnitsPerCustomer: -1,
        defaultLockingStrategy: 7 as LockingStrategy,
        defaultHoldTtl: { seconds: 60n, nanos: 500_000_000 },
        customerAttemptRateLimit: { maxAttempts: 5 },
        stockBuckets: 257,
        maxWaitlistLength: 1_000_001,
        waitlistPromotionPolicy: 9 as WaitlistPromotionPolicy,
      };
      // The request fields' annotations are checked before the RPC runs: the policy
      // (a resource message, judged by the RPC) is not judged while they are broken.
      const failure = await failureOf(client.createSku({ requestId: "bad id with spaces", sku: "-starts-with-dash", name: "   ", initialOnHand: -1n, policy }));
      expect(failure).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(failure.fields).to.have.members(["request_id", "sku", "name", "initial_on_hand"]);
      const policyFailure = await failureOf(client.createSku({ requestId: "good-id-bad-policy", sku: "BAD-POLICY", name: "Bad policy", policy }));
      expect(policyFailure).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(policyFailure.fields).to.have.members([
        "policy.max_units_per_customer",
        "policy.default_locking_strategy",
        "policy.default_hold_ttl",
        "policy.customer_attempt_rate_limit.window",
        "policy.stock_buckets",
        "policy.max_waitlist_length",
        "policy.waitlist_promotion_policy",
      ]);
      expect((await query(knex, `SELECT 1 FROM idempotency_records WHERE request_id IN ('bad id with spaces', 'good-id-bad-policy')`)).length).to.equal(0);
      expect(await skuRow("BAD-POLICY")).to.equal(undefined);
    });

    it("refuses a rate limit with a window but no attempts, or out of range", async () => {
      const noAttempts = await failureOf(createSku("RL-1", { policy: { customerAttemptRateLimit: { maxAttempts: 0, window: secs(60) } } }));
      expect(noAttempts).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(noAttempts.fields).to.deep.equal(["policy.customer_attempt_rate_limit.max_attempts"]);
      const longWindow = await failureOf(createSku("RL-2", { policy: { customerAttemptRateLimit: { maxAttempts: 3, window: secs(7200) } } }));
      expect(longWindow.fields).to.deep.equal(["policy.customer_attempt_rate_limit.window"]);
      // A valid rate limit is stored and read back as given.
      const { sku: valid } = await createSku("RL-3", { policy: { customerAttemptRateLimit: { maxAttempts: 3, window: secs(60) } } });
      expect(valid?.policy?.customerAttemptRateLimit).to.deep.include({ maxAttempts: 3 });
      expect(valid?.policy?.customerAttemptRateLimit?.window?.seconds).to.equal(60n);
      expect(await skuRow("RL-3")).to.include({ rate_limit_max_attempts: 3, rate_limit_window_ms: 60_000 });
      // All zero = no limit.
      const { sku: none } = await createSku("RL-4", { policy: { customerAttemptRateLimit: { maxAttempts: 0 } } });
      expect(none?.policy?.customerAttemptRateLimit).to.equal(undefined);
    });

    it("refuses hold durations outside their bounds with TTL_OUT_OF_RANGE naming the policy field", async () => {
      const cases: [MessageInitShape<typeof SkuPolicySchema>, string][] = [
        [{ maxHoldTtl: secs(2 * 3600) }, "policy.max_hold_ttl"],
        [{ maxHoldTtl: secs(600), defaultHoldTtl: secs(900) }, "policy.default_hold_ttl"],
        [{ maxHoldTtl: secs(600), promotionHoldTtl: secs(601) }, "policy.promotion_hold_ttl"],
        [{ maxHoldTtl: secs(600), maxHoldLifetime: secs(300) }, "policy.max_hold_lifetime"],
        [{ maxHoldLifetime: secs(8 * 24 * 3600) }, "policy.max_hold_lifetime"],
        [{ defaultHoldTtl: secs(-5) }, "policy.default_hold_ttl"],
      ];
      for (const [policy, field] of cases) {
        const failure = await failureOf(createSku("TTL-1", { policy }));
        expect(failure, field).to.include({ code: Code.InvalidArgument, reason: "TTL_OUT_OF_RANGE" });
        expect(failure.fields, field).to.deep.equal([field]);
        expect(failure.metadata).to.include.keys("min_ttl_ms", "max_ttl_ms");
      }
      expect(await skuRow("TTL-1")).to.equal(undefined);
    });

    it("answers NOT_FOUND for an unknown code and INVALID_ARGUMENT for a malformed one", async () => {
      const missing = await failureOf(client.getSku({ sku: "NOPE" }));
      expect(missing).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
      expect(missing.metadata).to.include({ sku: "NOPE" });
      const bad = await failureOf(client.getSku({ sku: "a/b" }));
      expect(bad).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(bad.fields).to.deep.equal(["sku"]);
    });
  });

  describe("ListSkus", () => {
    // Byte-wise order: '-' < '.' < digits < upper case < '_' < lower case.
    const codes = ["LST-0", "LST-A1", "LST-B", "LST-Z-9", "LST-_x", "LST-a", "LST-b.2"];

    before(async () => {
      for (const code of [...codes].reverse()) await createSku(code);
      await createSku("LSTX");
      await createSku("LSU-1");
      await createSku("LST");
    });

    it("pages through a prefix in SKU order, with a page size that may change between pages", async () => {
      const first = await client.listSkus({ codePrefix: "LST-", pageSize: 3 });
      const second = await client.listSkus({ codePrefix: "LST-", pageSize: 3, pageToken: first.nextPageToken });
      const third = await client.listSkus({ codePrefix: "LST-", pageSize: 1000, pageToken: second.nextPageToken });
      expect(first.skus.map((s) => s.code)).to.deep.equal(codes.slice(0, 3));
      expect(second.skus.map((s) => s.code)).to.deep.equal(codes.slice(3, 6));
      expect(third.skus.map((s) => s.code)).to.deep.equal(codes.slice(6));
      expect(third.nextPageToken).to.equal("");
      expect(first.skus[0].availability?.version).to.equal(1n);
    });

    it("treats '_' in a prefix literally", async () => {
      const { skus } = await client.listSkus({ codePrefix: "LST-_" });
      expect(skus.map((s) => s.code)).to.deep.equal(["LST-_x"]);
    });

    it("lists the whole catalog in SKU order without a prefix", async () => {
      const all: string[] = [];
      let pageToken = "";
      do {
        const page = await client.listSkus({ pageSize: 4, pageToken });
        all.push(...page.skus.map((s) => s.code));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      const expected = (await query<{ code: string }>(knex, `SELECT code FROM skus`)).map((r) => r.code).sort();
      expect(all).to.deep.equal(expected);
    });

    it("refuses a token from other filters, a forged token, a negative page size and a bad prefix", async () => {
      const first = await client.listSkus({ codePrefix: "LST-", pageSize: 2 });
      const otherFilter = await failureOf(client.listSkus({ codePrefix: "LSU", pageToken: first.nextPageToken }));
      expect(otherFilter).to.include({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
      expect(otherFilter.fields).to.deep.equal(["page_token"]);
      const forged = await failureOf(client.listSkus({ pageToken: "not-a-token" }));
      expect(forged).to.include({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
      const negative = await failureOf(client.listSkus({ pageSize: -1, codePrefix: "a/b" }));
      expect(negative).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(negative.fields).to.have.members(["page_size", "code_prefix"]);
    });
  });

  describe("UpdateSku", () => {
    const update = (code: string, paths: string[], sku: Record<string, unknown> = {}, requestId = rid("update")) =>
      client.updateSku({ requestId, sku: { code, ...sku }, updateMask: { paths } });

    it("updates the name only, leaving policy and availability alone", async () => {
      const { sku: created } = await createSku("UPD-NAME", { policy: { maxWaitlistLength: 4 } });
      await new Promise((resolve) => setTimeout(resolve, 10));
      const { sku, replayed } = await update("UPD-NAME", ["name"], { name: "Renamed", policy: { maxWaitlistLength: 9 } });
      expect(replayed).to.equal(false);
      expect(sku?.name).to.equal("Renamed");
      expect(sku?.policy?.maxWaitlistLength).to.equal(4);
      expect(sku?.availability?.version).to.equal(1n);
      const updated = (await skuRow("UPD-NAME"))!;
      expect(updated.updated_at.getTime()).to.be.greaterThan(updated.created_at.getTime());
      expect(sku?.createTime).to.deep.equal(created?.createTime);
    });

    it("sets and resets single policy fields; a masked zero value goes back to the server default", async () => {
      await createSku("UPD-POL", { policy: { maxWaitlistLength: 4, waitlistDisabled: true, maxHoldTtl: secs(900) } });
      const { sku } = await update("UPD-POL", ["policy.max_waitlist_length", "policy.default_locking_strategy"], {
        policy: { maxWaitlistLength: 7, defaultLockingStrategy: LockingStrategy.OPTIMISTIC, waitlistDisabled: false },
      });
      expect(sku?.policy).to.include({ maxWaitlistLength: 7, defaultLockingStrategy: LockingStrategy.OPTIMISTIC, waitlistDisabled: true });
      const { sku: reset } = await update("UPD-POL", ["policy.max_waitlist_length", "policy.max_hold_ttl"], { policy: {} });
      expect(reset?.policy?.maxWaitlistLength).to.equal(0);
      expect(reset?.policy?.maxHoldTtl).to.equal(undefined);
      expect(await skuRow("UPD-POL")).to.include({ max_waitlist_length: null, max_hold_ttl_ms: null, waitlist_disabled: true });
      // The fairness controls are set, and reset, like any other field.
      const { sku: limited } = await update("UPD-POL", ["policy.max_units_per_customer", "policy.abandonment_aware_ttl"], { policy: { maxUnitsPerCustomer: 2, abandonmentAwareTtl: true } });
      expect(limited?.policy).to.include({ maxUnitsPerCustomer: 2, abandonmentAwareTtl: true });
      expect(await skuRow("UPD-POL")).to.include({ max_units_per_customer: 2, abandonment_aware_ttl: true });
      const { sku: unlimited } = await update("UPD-POL", ["policy.max_units_per_customer", "policy.abandonment_aware_ttl"], { policy: {} });
      expect(unlimited?.policy).to.include({ maxUnitsPerCustomer: 0, abandonmentAwareTtl: false });
      expect(await skuRow("UPD-POL")).to.include({ max_units_per_customer: null, abandonment_aware_ttl: false });
    });

    it("replaces the whole policy with the path \"policy\"", async () => {
      await createSku("UPD-ALL", { policy: { waitlistDisabled: true, stockBuckets: 8 } });
      const { sku } = await update("UPD-ALL", ["policy"], { policy: { maxWaitlistLength: 10 } });
      expect(sku?.policy).to.include({ waitlistDisabled: false, stockBuckets: 0, maxWaitlistLength: 10 });
    });

    it("accepts every field of SkuPolicy as a mask path", async () => {
      await createSku("UPD-EVERY");
      const paths = SkuPolicySchema.fields.map((f) => `policy.${f.name}`);
      const { sku } = await update("UPD-EVERY", paths, { policy: { waitlistDisabled: true } });
      expect(sku?.policy?.waitlistDisabled).to.equal(true);
    });

    it("replays the same update and refuses the id for another one", async () => {
      await createSku("UPD-REPLAY");
      const request = { requestId: "update-replay", sku: { code: "UPD-REPLAY", name: "One" }, updateMask: { paths: ["name"] } };
      await client.updateSku(request);
      await update("UPD-REPLAY", ["name"], { name: "Two" });
      const replay = await client.updateSku(request);
      expect(replay.replayed).to.equal(true);
      expect(replay.sku?.name).to.equal("One");
      expect((await skuRow("UPD-REPLAY"))?.name).to.equal("Two");
      const reused = await failureOf(client.updateSku({ ...request, sku: { code: "UPD-REPLAY", name: "Three" } }));
      expect(reused).to.include({ code: Code.InvalidArgument, reason: "IDEMPOTENCY_KEY_REUSED" });
    });

    it("refuses bad masks: wildcard, unknown or immutable paths, and an empty mask", async () => {
      await createSku("UPD-MASK");
      const wildcard = await failureOf(update("UPD-MASK", ["*"], { name: "X" }));
      expect(wildcard).to.include({ code: Code.InvalidArgument, reason: "INVALID_UPDATE_MASK" });
      expect(wildcard.fields).to.deep.equal(["update_mask.paths[0]"]);
      for (const path of ["policy.nope", "code", "availability", "policy.customer_attempt_rate_limit.window", "Name"]) {
        const failure = await failureOf(update("UPD-MASK", ["name", path], { name: "X" }));
        expect(failure, path).to.include({ code: Code.InvalidArgument, reason: "INVALID_UPDATE_MASK" });
        expect(failure.fields, path).to.deep.equal(["update_mask.paths[1]"]);
      }
      const empty = await failureOf(update("UPD-MASK", [], { name: "X" }));
      expect(empty).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(empty.fields).to.deep.equal(["update_mask"]);
      expect((await skuRow("UPD-MASK"))?.name).to.equal("Item UPD-MASK");
    });

    it("validates the masked fields and the resulting policy", async () => {
      await createSku("UPD-VAL", { policy: { maxHoldTtl: secs(600), defaultHoldTtl: secs(300) } });
      const bad = await failureOf(update("UPD-VAL", ["name", "policy.stock_buckets"], { name: "", policy: { stockBuckets: -1 } }));
      expect(bad).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(bad.fields).to.have.members(["sku.name", "sku.policy.stock_buckets"]);
      // Against the stored max_hold_ttl (600 s).
      const tooLong = await failureOf(update("UPD-VAL", ["policy.default_hold_ttl"], { policy: { defaultHoldTtl: secs(900) } }));
      expect(tooLong).to.include({ code: Code.InvalidArgument, reason: "TTL_OUT_OF_RANGE" });
      expect(tooLong.fields).to.deep.equal(["sku.policy.default_hold_ttl"]);
      // A new max_hold_ttl below the stored default_hold_ttl (300 s).
      const tooShort = await failureOf(update("UPD-VAL", ["policy.max_hold_ttl"], { policy: { maxHoldTtl: secs(120) } }));
      expect(tooShort).to.include({ code: Code.InvalidArgument, reason: "TTL_OUT_OF_RANGE" });
      expect(tooShort.fields).to.deep.equal(["sku.policy.max_hold_ttl"]);
      expect(await skuRow("UPD-VAL")).to.include({ name: "Item UPD-VAL", max_hold_ttl_ms: 600_000, default_hold_ttl_ms: 300_000, stock_buckets: null });
      // Both together are fine.
      const { sku } = await update("UPD-VAL", ["policy.max_hold_ttl", "policy.default_hold_ttl"], {
        policy: { maxHoldTtl: secs(120), defaultHoldTtl: secs(60) },
      });
      expect(sku?.policy?.maxHoldTtl?.seconds).to.equal(120n);
    });

    it("refuses an unimplemented hot-SKU mode and an unknown SKU", async () => {
      await createSku("UPD-HOT");
      const hot = await failureOf(update("UPD-HOT", ["policy.hot_sku_mode"], { policy: { hotSkuMode: HotSkuMode.BUCKETED } }));
      expect(hot).to.include({ code: Code.Unimplemented, reason: "NOT_IMPLEMENTED" });
      expect(hot.metadata).to.include({ feature: "hot_sku_mode:BUCKETED" });
      expect((await skuRow("UPD-HOT"))?.hot_sku_mode).to.equal(null);
      const { sku } = await update("UPD-HOT", ["policy.hot_sku_mode"], { policy: { hotSkuMode: HotSkuMode.OFF } });
      expect(sku?.policy?.hotSkuMode).to.equal(HotSkuMode.OFF);
      const switched = await update("UPD-HOT", ["policy.hot_sku_mode"], { policy: { hotSkuMode: HotSkuMode.GROUP_COMMIT } });
      expect(switched.sku?.policy?.hotSkuMode).to.equal(HotSkuMode.GROUP_COMMIT);
      const missing = await failureOf(update("UPD-NOPE", ["name"], { name: "X" }));
      expect(missing).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
    });
  });

  describe("AdjustStock", () => {
    const adjust = (sku: string, change: { case: "delta" | "onHand"; value: bigint }, extra: { requestId?: string; expectedVersion?: bigint } = {}) =>
      client.adjustStock({ requestId: extra.requestId ?? rid("adjust"), sku, change, reason: "cycle count", expectedVersion: extra.expectedVersion });

    it("adds and removes stock by a delta, with a STOCK_ADJUSTED event", async () => {
      await createSku("ADJ-DELTA", { initialOnHand: 10n });
      const added = await adjust("ADJ-DELTA", { case: "delta", value: 5n }, { requestId: "adjust-delta" });
      expect(added.availability).to.include({ onHand: 15n, available: 15n, version: 2n });
      expect(added.auditEvent).to.include({
        operation: AuditOperation.STOCK_ADJUSTED,
        sku: "ADJ-DELTA",
        onHandDelta: 5n,
        onHandBefore: 10n,
        onHandAfter: 15n,
        versionAfter: 2n,
        reason: "cycle count",
        requestId: "adjust-delta",
        actor: "admin:test-admin",
      });
      const removed = await adjust("ADJ-DELTA", { case: "delta", value: -15n });
      expect(removed.availability).to.include({ onHand: 0n, version: 3n });
      const ledger = await events("ADJ-DELTA");
      expect(ledger.map((e) => [e.operation, e.on_hand_before, e.on_hand_after, e.version_after])).to.deep.equal([
        ["SKU_CREATED", 0, 10, 1],
        ["STOCK_ADJUSTED", 10, 15, 2],
        ["STOCK_ADJUSTED", 15, 0, 3],
      ]);
      expect(Number(added.auditEvent?.id)).to.equal(ledger[1].id);
    });

    it("sets an absolute value; the current value again changes nothing", async () => {
      await createSku("ADJ-ABS", { initialOnHand: 10n });
      const set = await adjust("ADJ-ABS", { case: "onHand", value: 4n });
      expect(set.availability).to.include({ onHand: 4n, version: 2n });
      expect(set.auditEvent).to.include({ onHandDelta: -6n, onHandBefore: 10n, onHandAfter: 4n });
      const same = await adjust("ADJ-ABS", { case: "onHand", value: 4n });
      expect(same.availability).to.include({ onHand: 4n, version: 2n });
      expect(same.auditEvent).to.equal(undefined);
      expect(await events("ADJ-ABS")).to.have.length(2);
    });

    it("replays a success without applying it twice", async () => {
      await createSku("ADJ-REPLAY", { initialOnHand: 1n });
      const first = await adjust("ADJ-REPLAY", { case: "delta", value: 2n }, { requestId: "adjust-replay" });
      const again = await adjust("ADJ-REPLAY", { case: "delta", value: 2n }, { requestId: "adjust-replay" });
      expect(again.replayed).to.equal(true);
      expect(again.availability).to.deep.equal(first.availability);
      expect(again.auditEvent).to.deep.equal(first.auditEvent);
      expect((await client.getSku({ sku: "ADJ-REPLAY" })).sku?.availability?.onHand).to.equal(3n);
      const reused = await failureOf(adjust("ADJ-REPLAY", { case: "delta", value: 3n }, { requestId: "adjust-replay" }));
      expect(reused).to.include({ code: Code.InvalidArgument, reason: "IDEMPOTENCY_KEY_REUSED" });
    });

    it("refuses to go below reserved + allocated (recorded) or below 0", async () => {
      await createSku("ADJ-COMMIT", { initialOnHand: 10n });
      // Commitments made behind the service's back, so this test needs no hold RPC.
      await query(knex, `UPDATE inventory SET reserved = 3, allocated = 2 WHERE sku_code = 'ADJ-COMMIT'`);
      const failure = await failureOf(adjust("ADJ-COMMIT", { case: "onHand", value: 4n }, { requestId: "adjust-commit" }));
      expect(failure).to.include({ code: Code.FailedPrecondition, reason: "STOCK_BELOW_COMMITTED" });
      expect(failure.metadata).to.include({ sku: "ADJ-COMMIT", on_hand: "4", committed: "5" });
      const replay = await failureOf(adjust("ADJ-COMMIT", { case: "onHand", value: 4n }, { requestId: "adjust-commit" }));
      expect(replay.metadata).to.include({ replayed: "true" });
      expect((await adjust("ADJ-COMMIT", { case: "onHand", value: 5n })).availability).to.include({ onHand: 5n, available: 0n });

      await createSku("ADJ-NEG", { initialOnHand: 2n });
      const negative = await failureOf(adjust("ADJ-NEG", { case: "delta", value: -3n }));
      expect(negative).to.include({ code: Code.FailedPrecondition, reason: "STOCK_BELOW_COMMITTED" });
      expect(await events("ADJ-NEG")).to.have.length(1);
    });

    it("compare-and-sets on expected_version; a mismatch is ABORTED and not recorded", async () => {
      await createSku("ADJ-CAS", { initialOnHand: 10n });
      const stale = await failureOf(adjust("ADJ-CAS", { case: "delta", value: 1n }, { requestId: "adjust-cas", expectedVersion: 7n }));
      expect(stale).to.include({ code: Code.Aborted, reason: "VERSION_MISMATCH" });
      expect(stale.metadata).to.include({ sku: "ADJ-CAS", expected_version: "7", current_version: "1" });
      // Not recorded: the same request id may carry the corrected request.
      const ok = await adjust("ADJ-CAS", { case: "delta", value: 1n }, { requestId: "adjust-cas", expectedVersion: 1n });
      expect(ok.replayed).to.equal(false);
      expect(ok.availability).to.include({ onHand: 11n, version: 2n });
    });

    it("answers NOT_FOUND for an unknown SKU", async () => {
      const failure = await failureOf(adjust("ADJ-NOPE", { case: "delta", value: 1n }));
      expect(failure).to.include({ code: Code.NotFound, reason: "SKU_NOT_FOUND" });
    });

    it("refuses bad input field by field and changes nothing", async () => {
      await createSku("ADJ-BAD", { initialOnHand: 10n });
      const zero = await failureOf(client.adjustStock({ requestId: rid("bad"), sku: "ADJ-BAD", change: { case: "delta", value: 0n }, reason: "" }));
      expect(zero).to.include({ code: Code.InvalidArgument, reason: "BAD_REQUEST" });
      expect(zero.fields).to.have.members(["delta", "reason"]);
      const negative = await failureOf(
        client.adjustStock({ requestId: rid("bad"), sku: "ADJ-BAD", change: { case: "onHand", value: -1n }, reason: "x", expectedVersion: 0n }),
      );
      expect(negative.fields).to.have.members(["on_hand", "expected_version"]);
      const none = await failureOf(client.adjustStock({ requestId: rid("bad"), sku: "ADJ-BAD", reason: "x" }));
      expect(none.fields).to.deep.equal(["change"]); // the oneof
      const huge = await failureOf(adjust("ADJ-BAD", { case: "delta", value: 1_000_000_001n }));
      expect(huge.fields).to.deep.equal(["delta"]);
      const version = (await client.getSku({ sku: "ADJ-BAD" })).sku?.availability;
      expect(version).to.include({ onHand: 10n, version: 1n });
      expect(await events("ADJ-BAD")).to.have.length(1);
    });
  });

  // Last (mocha runs a describe's own tests before its nested describes).
  describe("afterwards", () => {
    it("leaves the books consistent (counters = ledger) for every SKU it did not tamper with", async () => {
      const skus = (await query<{ code: string }>(knex, `SELECT code FROM skus WHERE code <> 'ADJ-COMMIT'`)).map((r) => r.code);
      expect(skus.length).to.be.greaterThan(20);
      await assertInvariants(knex, skus);
    });
  });
});
