// The admission control's rules, in-process: slots, the bounded first-come-first-served
// wait, refusals (UNAVAILABLE / OVERLOADED with RetryInfo), callers that go while they
// wait, its metrics and its log lines.
import { Writable } from "node:stream";
import { expect } from "chai";
import { pino } from "pino";
import { Registry } from "prom-client";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { metricValue } from "@holdfast/dev-stack";
import { Admission, type AdmissionLimits } from "@holdfast/runtime";
import { rejectionOf } from "../support/assertions.js";

function admission(limits: AdmissionLimits) {
  const logs: { msg: string; shed?: number }[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs.push(JSON.parse(chunk.toString()) as { msg: string });
        done();
      },
    }),
  );
  const registry = new Registry();
  const gate = new Admission(limits, logger, registry);
  const metric = async (name: string, labels?: Record<string, string>) => metricValue(await registry.metrics(), name, labels);
  return { gate, logs, metric };
}

const live = () => new AbortController().signal;

describe("admission control", () => {
  it("admits up to maxInFlight at once, queues up to maxWaiting first come first served, refuses the rest at once", async () => {
    const { gate, metric } = admission({ maxInFlight: 2, maxWaiting: 2, maxWaitMs: 60_000 });
    const first = await gate.enter("M", live());
    const second = await gate.enter("M", live());
    const order: string[] = [];
    const third = Promise.resolve(gate.enter("M", live())).then((release) => (order.push("third"), release));
    const fourth = Promise.resolve(gate.enter("M", live())).then((release) => (order.push("fourth"), release));
    const refused = await rejectionOf(Promise.resolve().then(() => gate.enter("M", live())));
    expect(refused).to.be.instanceOf(ConnectError);
    const error = refused as ConnectError;
    expect(error.code).to.equal(Code.Unavailable);
    expect(error.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("OVERLOADED");
    expect(Number(error.findDetails(RetryInfoSchema)[0]?.retryDelay?.nanos)).to.be.greaterThan(0);
    expect(await metric("holdfast_rpc_in_flight")).to.equal(2);
    expect(await metric("holdfast_rpc_waiting")).to.equal(2);
    expect(await metric("holdfast_rpc_shed_total", { method: "M", cause: "queue_full" })).to.equal(1);

    // A freed slot goes to the first waiting call; releasing twice frees it once.
    first();
    first();
    (await third)();
    second();
    (await fourth)();
    expect(order).to.deep.equal(["third", "fourth"]);
    expect(await metric("holdfast_rpc_in_flight")).to.equal(0);
    expect(await metric("holdfast_rpc_waiting")).to.equal(0);
  });

  it("refuses a call that waited maxWaitMs for a slot", async () => {
    const { gate, metric } = admission({ maxInFlight: 1, maxWaiting: 1, maxWaitMs: 20 });
    const release = await gate.enter("M", live());
    const error = (await rejectionOf(Promise.resolve(gate.enter("M", live()))));
    expect((error as ConnectError).code).to.equal(Code.Unavailable);
    expect(await metric("holdfast_rpc_shed_total", { cause: "wait_timeout" })).to.equal(1);
    release();
    expect(await metric("holdfast_rpc_in_flight")).to.equal(0);
  });

  it("a caller already gone takes no slot; one that goes while it waits leaves the queue with its signal's reason", async () => {
    const { gate, metric } = admission({ maxInFlight: 1, maxWaiting: 4, maxWaitMs: 60_000 });
    const gone = new AbortController();
    gone.abort(new ConnectError("deadline", Code.DeadlineExceeded));
    expect(((await rejectionOf(Promise.resolve().then(() => gate.enter("M", gone.signal)))) as ConnectError).code).to.equal(Code.DeadlineExceeded);
    expect(await metric("holdfast_rpc_in_flight")).to.equal(0);

    const release = await gate.enter("M", live());
    const leaving = new AbortController();
    const waiting = Promise.resolve(gate.enter("M", leaving.signal));
    expect(await metric("holdfast_rpc_waiting")).to.equal(1);
    leaving.abort(new ConnectError("cancelled", Code.Canceled));
    expect(((await rejectionOf(waiting)) as ConnectError).code).to.equal(Code.Canceled);
    expect(await metric("holdfast_rpc_waiting")).to.equal(0);
    // Its slot was never taken: the next call gets the freed one at once.
    release();
    (await gate.enter("M", live()))();
    expect(await metric("holdfast_rpc_shed_total")).to.equal(0);
  });

  it("logs when shedding starts, and what was shed since, not a line per shed call", async () => {
    const { gate, logs } = admission({ maxInFlight: 1, maxWaiting: 0, maxWaitMs: 1_000 });
    const release = await gate.enter("M", live());
    for (let i = 0; i < 1_000; i++) await rejectionOf(Promise.resolve().then(() => gate.enter("M", live())));
    release();
    gate.close();
    expect(logs.map((l) => l.msg)).to.deep.equal(["shedding load: calls refused UNAVAILABLE / OVERLOADED (summarised every 10 s while it lasts)", "shedding load"]);
    expect(logs[1]!.shed).to.equal(999);
  });
});
