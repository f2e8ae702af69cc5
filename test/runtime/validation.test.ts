// validateService: the contract's protovalidate annotations, checked before an
// implementation runs, reported in the contract's BadRequest style. Called
// directly (no transport): the transports are covered by services/bad-input.
import { expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { CreateHoldRequestSchema, GetAvailabilityRequestSchema, InventoryReservationService, LockingStrategy, WatchAvailabilityRequestSchema } from "@holdfast/contracts";
import { BadRequestSchema, ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { unimplementedService, validateService } from "@holdfast/runtime";
import { rejectionOf } from "../support/assertions.js";

type Impl = ServiceImpl<typeof InventoryReservationService>;
const context = {} as HandlerContext;

describe("runtime: validateService", () => {
  const calls: string[] = [];
  const impl = validateService(InventoryReservationService, {
    ...unimplementedService(InventoryReservationService),
    createHold: async (req) => {
      calls.push(`createHold ${req.requestId}`);
      return {};
    },
    async *watchAvailability(req) {
      calls.push(`watchAvailability ${req.skus.join(",")}`);
      yield {};
    },
  } as Impl);

  const violationsOf = async (promise: Promise<unknown>) => {
    const err = await rejectionOf(promise);
    expect(err).to.be.instanceOf(ConnectError);
    const e = err as ConnectError;
    expect(e.code).to.equal(Code.InvalidArgument);
    expect(e.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("BAD_REQUEST");
    return e.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map(({ field, description, reason }) => ({ field, description, reason })));
  };

  it("refuses a bad request before the implementation runs, one violation per broken rule, with request paths", async () => {
    calls.length = 0;
    const request = create(CreateHoldRequestSchema, {
      requestId: "",
      customerId: "bad id",
      lines: [
        { sku: "A", quantity: 1 },
        { sku: "B/1", quantity: 0 },
      ],
      lockingStrategy: 9 as LockingStrategy,
    });
    const violations = await violationsOf(impl.createHold(request, context) as Promise<unknown>);
    expect(calls).to.deep.equal([]);
    expect(violations.map((v) => v.field)).to.have.members(["request_id", "customer_id", "lines[1].sku", "lines[1].quantity", "locking_strategy"]);
    const byField = new Map(violations.map((v) => [v.field, v]));
    // protovalidate's message without its leading "value ", and its rule id as the reason.
    expect(byField.get("request_id")).to.deep.equal({ field: "request_id", description: "is required", reason: "required" });
    expect(byField.get("lines[1].quantity")?.reason).to.equal("int32.gte_lte");
    expect(byField.get("lines[1].quantity")?.description).to.match(/^must be greater than or equal to 1 and less than or equal to 1000000$/);
    expect(byField.get("locking_strategy")?.reason).to.equal("enum.defined_only");
  });

  it("names list elements and list sizes as the contract does", async () => {
    const tooMany = await violationsOf(impl.getAvailability(create(GetAvailabilityRequestSchema, { skus: [] }), context) as Promise<unknown>);
    expect(tooMany).to.deep.equal([{ field: "skus", description: "must contain at least 1 item(s)", reason: "repeated.min_items" }]);
    const badItem = await violationsOf(impl.getAvailability(create(GetAvailabilityRequestSchema, { skus: ["OK", "not ok"] }), context) as Promise<unknown>);
    expect(badItem.map((v) => [v.field, v.reason])).to.deep.equal([["skus[1]", "string.pattern"]]);
  });

  it("refuses a list longer than its max_items on that alone, without looking at its elements", async () => {
    const lines = Array.from({ length: 1001 }, () => ({ sku: "", quantity: 0 }));
    const err = await rejectionOf(impl.createHold(create(CreateHoldRequestSchema, { requestId: "", lines }), context) as Promise<unknown>);
    const violations = (err as ConnectError).findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    expect(violations.map(({ field, description, reason }) => ({ field, description, reason }))).to.deep.equal([
      { field: "lines", description: "must contain no more than 1000 item(s)", reason: "repeated.max_items" },
    ]);
  });

  it("sends the first 20 violations and says how many more there were (errors.proto, LISTS IN ERRORS)", async () => {
    const skus = Array.from({ length: 30 }, (_, i) => `bad sku ${i}`);
    const err = (await rejectionOf(impl.getAvailability(create(GetAvailabilityRequestSchema, { skus }), context) as Promise<unknown>)) as ConnectError;
    const violations = err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    expect(violations.map((v) => v.field)).to.deep.equal(skus.slice(0, 20).map((_, i) => `skus[${i}]`));
    expect(err.findDetails(ErrorInfoSchema)[0]?.metadata).to.deep.equal({ omitted: "10" });
    expect(err.rawMessage).to.match(/; and 10 more$/);
  });

  it("passes a well-formed request through unchanged", async () => {
    calls.length = 0;
    await impl.createHold(create(CreateHoldRequestSchema, { requestId: "r-1", customerId: "", lines: [{ sku: "A", quantity: 1 }] }), context);
    expect(calls).to.deep.equal(["createHold r-1"]);
  });

  it("refuses a server stream's bad request before its first message, and streams a good one", async () => {
    calls.length = 0;
    const drain = async (stream: AsyncIterable<unknown>) => {
      const out: unknown[] = [];
      for await (const m of stream) out.push(m);
      return out;
    };
    const bad = create(WatchAvailabilityRequestSchema, { skus: ["A"], heartbeatInterval: { seconds: 0n, nanos: 1 } });
    const violations = await violationsOf(drain(impl.watchAvailability(bad, context) as AsyncIterable<unknown>));
    expect(violations.map((v) => [v.field, v.reason])).to.deep.equal([["heartbeat_interval", "duration.gte_lte"]]);
    expect(calls).to.deep.equal([]);
    expect(await drain(impl.watchAvailability(create(WatchAvailabilityRequestSchema, { skus: ["A"] }), context) as AsyncIterable<unknown>)).to.have.length(1);
    expect(calls).to.deep.equal(["watchAvailability A"]);
  });
});
