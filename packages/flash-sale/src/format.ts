/**
 * The printed output: the server's report, the report next to the client's
 * tally, and what only the client saw. Pure functions of a run and a report.
 */
import { timestampDate, timestampMs, type Duration } from "@bufbuild/protobuf/wkt";
import { DemandStatus, ErrorReason, type DurationDistribution, type FlashSaleReport } from "@holdfast/contracts";
import Table from "cli-table3";
import type { FlashSaleRun } from "./simulate.js";

function table(head: string[]): Table.Table {
  // No colours: the output reads the same in a terminal, a pipe and a test.
  return new Table({ head, style: { head: [], border: [] }, chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" } });
}

const n = (x: bigint | number) => Number(x).toLocaleString("en-US");
const pct = (x: number) => `${(x * 100).toFixed(2)} %`;
const ms = (x: number) => `${x.toFixed(1)} ms`;
const durationMs = (d: Duration | undefined) => (d === undefined ? 0 : Number(d.seconds) * 1000 + d.nanos / 1e6);

/** "p50 1.2 ms · p95 3.4 ms · p99 5.6 ms" of a DurationDistribution; "no samples" when empty. */
export function percentiles(d: DurationDistribution | undefined): string {
  if (d === undefined || d.count === 0n) return "no samples";
  return `p50 ${ms(durationMs(d.p50))} · p95 ${ms(durationMs(d.p95))} · p99 ${ms(durationMs(d.p99))} (${n(d.count)} samples)`;
}

/** The report's figures, one per row. */
export function reportTable(report: FlashSaleReport): string {
  const t = table(["GetFlashSaleReport", report.sku]);
  const start = timestampDate(report.startTime!);
  const end = timestampDate(report.endTime!);
  t.push(
    ["window", `${start.toISOString()} → ${end.toISOString()} (${((timestampMs(report.endTime!) - timestampMs(report.startTime!)) / 1000).toFixed(2)} s)`],
    ["requests", n(report.requests)],
    ["unique customers", n(report.uniqueCustomers)],
    ["units requested", n(report.unitsRequested)],
    ["units at start", n(report.unitsAtStart)],
    ["units restocked", n(report.unitsRestocked)],
    ["units available at end", n(report.unitsAvailableAtEnd)],
    ["requests granted / refused / waitlisted", `${n(report.requestsGranted)} / ${n(report.requestsRefused)} / ${n(report.requestsWaitlisted)}`],
    ["units granted", n(report.unitsGranted)],
    ["units allocated", n(report.unitsAllocated)],
    ["oversell units", n(report.oversellUnits)],
    ["undersell units", n(report.undersellUnits)],
    ["FIFO inversions", `${n(report.fifoInversions)} (rate ${pct(report.fifoInversionRate)})`],
    ["Jain's fairness index", report.jainFairnessIndex.toFixed(4)],
    ["largest customer share", pct(report.largestCustomerShare)],
    ["time to grant", percentiles(report.timeToGrant)],
    ["server latency", percentiles(report.requestLatency)],
    ["units expired / re-sold", `${n(report.unitsExpired)} / ${n(report.unitsResold)}`],
    ["waitlist joins / promotions / allocated", `${n(report.waitlistJoins)} / ${n(report.waitlistPromotions)} / ${n(report.waitlistPromotionsAllocated)}`],
    ["demand status", DemandStatus[report.demandStatus] ?? String(report.demandStatus)],
  );
  for (const r of report.refusals) t.push([`refused: ${ErrorReason[r.reason] ?? r.reason}`, `${n(r.requests)} requests, ${n(r.units)} units`]);
  return t.toString();
}

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

/** The report's counts next to the client's, with whether they agree. */
export function comparisonTable(run: FlashSaleRun, report: FlashSaleReport): string {
  const { tally } = run;
  const t = table(["figure", "report", "client", ""]);
  const row = (figure: string, server: bigint | number, client: number, note = "") =>
    t.push([figure, n(server), n(client), Number(server) === client ? "=" : note || "≠"]);
  row("requests (attempts)", report.requests, tally.attempts);
  row("granted", report.requestsGranted, tally.granted);
  row("refused", report.requestsRefused, sum(tally.refused));
  row("waitlisted", report.requestsWaitlisted, tally.waitlisted);
  row("units granted", report.unitsGranted, tally.unitsGranted, report.waitlistPromotions > 0n ? "≠ (report counts promotions)" : "");
  row("units allocated", report.unitsAllocated, tally.confirmed * run.plan.quantity);
  const reasons = new Set([...report.refusals.map((r) => ErrorReason[r.reason] ?? String(r.reason)), ...Object.keys(tally.refused)]);
  for (const reason of [...reasons].sort()) {
    const server = report.refusals.find((r) => (ErrorReason[r.reason] ?? String(r.reason)) === reason)?.requests ?? 0n;
    row(`refused: ${reason}`, server, tally.refused[reason] ?? 0);
  }
  return t.toString();
}

/** What only the client saw: sessions, retries, confirmations, its own latency and throughput. */
export function tallyTable(run: FlashSaleRun): string {
  const { tally, plan } = run;
  const t = table(["client tally", `${plan.strategy}, concurrency ${plan.concurrency}, seed ${plan.seed}`]);
  const counts = (c: Record<string, number>) =>
    Object.keys(c).length === 0
      ? "none"
      : Object.entries(c)
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([k, v]) => `${k} ${n(v)}`)
          .join(", ");
  const l = tally.latencyMs;
  t.push(
    ["SKUs", run.skus.map((s) => s.sku).join(", ")],
    ["buyers / bots", `${n(tally.buyers)} / ${n(tally.bots)}${tally.bots > 0 ? ` (${n(plan.botAttempts)} attempts each)` : ""}`],
    ["attempts answered", n(tally.attempts)],
    ["granted / refused / waitlisted", `${n(tally.granted)} / ${n(sum(tally.refused))} / ${n(tally.waitlisted)}`],
    ["refused by reason", counts(tally.refused)],
    ["units granted", n(tally.unitsGranted)],
    ["customers granted", n(tally.customersGranted)],
    ["confirmed / abandoned", `${n(tally.confirmed)} / ${n(tally.abandoned)}`],
    ["confirm failures", counts(tally.confirmFailed)],
    ["retries (same request id)", n(tally.retries)],
    ["replayed answers", n(tally.replayed)],
    ["no answer (transport)", counts(tally.unanswered)],
    ["holds not sent (time limit, Ctrl-C)", n(tally.notSent)],
    ["client latency", l === null ? "no samples" : `p50 ${ms(l.p50)} · p95 ${ms(l.p95)} · p99 ${ms(l.p99)} · max ${ms(l.max)}`],
    ["throughput", `${tally.throughput.toFixed(0)} attempts/s over ${(run.durationMs / 1000).toFixed(2)} s${run.cutShort ? " (cut short)" : ""}`],
  );
  return t.toString();
}
