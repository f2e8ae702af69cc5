// The flash-sale report as charts and a table, shared by the static HTML report
// (rendered server-side, render-html.ts) and the dashboard page (rendered in the
// browser). Pure functions of a FlashSaleReport: no DOM, no Node, no ECharts
// runtime (only its option types), so both sides draw exactly the same options.
// Every field is defined in docs/fairness.md.
import { timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { DemandStatus, ErrorReason, type DurationDistribution, type FlashSaleReport } from "@holdfast/contracts";
import type { EChartsOption } from "echarts";

export type { EChartsOption };

/** The three charts of a report, each an ECharts option (animation off, so a server-side render is final). */
export interface ReportCharts {
  /** Per timeline bucket: requests granted and refused (stacked bars), units granted, available at the end. */
  grantsOverTime: EChartsOption;
  /** Request latency histogram (request_latency_histogram), one bar per bucket. */
  latency: EChartsOption;
  /** Share of the units granted per customer (top_customers, the rest as "others"). */
  customerShares: EChartsOption;
}

export const CHART_KEYS = ["grantsOverTime", "latency", "customerShares"] as const satisfies readonly (keyof ReportCharts)[];

/** One line of the figures table; `key` is stable (pages and tests select on it), `value` is display text. */
export interface Figure {
  key: string;
  label: string;
  value: string;
  /** Set when the figure says something went wrong (oversell, undersell, FIFO inversions). */
  alert?: boolean;
}

export interface FigureGroup {
  title: string;
  figures: Figure[];
}

const MICROS_PER_MS = 1000;

/** The enum value's name without its prefix ("HIGH_DEMAND"), or its number when unknown. */
export function demandStatusName(status: DemandStatus): string {
  return DemandStatus[status] ?? String(status);
}

export function errorReasonName(reason: ErrorReason): string {
  return ErrorReason[reason] ?? String(reason);
}

function ms(value: Timestamp | undefined): number | undefined {
  return value === undefined ? undefined : timestampMs(value);
}

/** A duration in µs for display, to 3 significant digits: "850 µs", "12.3 ms", "2.5 s". */
export function formatMicros(micros: number): string {
  const digits = (value: number) => String(Number(value.toPrecision(3)));
  if (micros < MICROS_PER_MS) return `${Math.round(micros)} µs`;
  if (micros < 1000 * MICROS_PER_MS) return `${digits(micros / MICROS_PER_MS)} ms`;
  return `${digits(micros / (1000 * MICROS_PER_MS))} s`;
}

/** A duration in µs (protobuf-es' durationMs rounds to the millisecond; latencies are sub-millisecond). */
function durationMicros(value: Duration | undefined): number | undefined {
  return value === undefined ? undefined : Number(value.seconds) * 1_000_000 + Math.round(value.nanos / 1000);
}

function formatDuration(value: Duration | undefined): string {
  const micros = durationMicros(value);
  return micros === undefined ? "–" : formatMicros(micros);
}

function percent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)} %`;
}

/** A UTC time to the millisecond ("2026-11-21 12:00:00.000 UTC"), or `missing`. */
export function formatTime(value: Timestamp | undefined, missing = "–"): string {
  const t = ms(value);
  return t === undefined ? missing : `${new Date(t).toISOString().replace("T", " ").replace("Z", "")} UTC`;
}

/** Bucket labels: the bucket's start as UTC HH:MM:SS, with milliseconds when the interval is under a second. */
function bucketLabel(startMs: number, intervalMs: number): string {
  const iso = new Date(startMs).toISOString();
  return intervalMs < 1000 ? iso.slice(11, 23) : iso.slice(11, 19);
}

function distributionFigures(prefix: string, label: string, distribution: DurationDistribution | undefined): Figure[] {
  const count = distribution?.count ?? 0n;
  return [
    { key: `${prefix}-count`, label: `${label}: samples`, value: String(count) },
    { key: `${prefix}-p50`, label: `${label} p50`, value: formatDuration(distribution?.p50) },
    { key: `${prefix}-p95`, label: `${label} p95`, value: formatDuration(distribution?.p95) },
    { key: `${prefix}-p99`, label: `${label} p99`, value: formatDuration(distribution?.p99) },
    { key: `${prefix}-max`, label: `${label} max`, value: formatDuration(distribution?.max) },
  ];
}

/** The report's headline figures, grouped, in display order. */
export function reportFigures(report: FlashSaleReport): FigureGroup[] {
  const n = (value: bigint | number) => String(value);
  return [
    {
      title: "Window",
      figures: [
        { key: "sku", label: "SKU", value: report.sku },
        { key: "start-time", label: "from", value: formatTime(report.startTime) },
        { key: "end-time", label: "to (exclusive)", value: formatTime(report.endTime, "open (now)") },
        { key: "generate-time", label: "generated", value: formatTime(report.generateTime) },
        { key: "demand-status", label: "demand status now", value: demandStatusName(report.demandStatus) },
      ],
    },
    {
      title: "Demand",
      figures: [
        { key: "requests", label: "requests", value: n(report.requests) },
        { key: "unique-customers", label: "unique customers", value: n(report.uniqueCustomers) },
        { key: "units-requested", label: "units requested", value: n(report.unitsRequested) },
        { key: "requests-granted", label: "requests granted", value: n(report.requestsGranted) },
        { key: "requests-refused", label: "requests refused", value: n(report.requestsRefused) },
        { key: "requests-waitlisted", label: "requests waitlisted", value: n(report.requestsWaitlisted) },
      ],
    },
    {
      title: "Stock",
      figures: [
        { key: "units-at-start", label: "units available at start", value: n(report.unitsAtStart) },
        { key: "units-restocked", label: "units restocked (net)", value: n(report.unitsRestocked) },
        { key: "units-granted", label: "units granted", value: n(report.unitsGranted) },
        { key: "units-allocated", label: "units allocated", value: n(report.unitsAllocated) },
        { key: "units-available-at-end", label: "units available at end", value: n(report.unitsAvailableAtEnd) },
        { key: "oversell-units", label: "oversell (must be 0)", value: n(report.oversellUnits), alert: report.oversellUnits > 0n },
        { key: "undersell-units", label: "undersell", value: n(report.undersellUnits), alert: report.undersellUnits > 0n },
        { key: "units-expired", label: "units expired", value: n(report.unitsExpired) },
        { key: "units-resold", label: "expired units re-sold", value: n(report.unitsResold) },
      ],
    },
    {
      title: "Fairness",
      figures: [
        {
          key: "fifo-inversions",
          label: "FIFO inversions (rate)",
          value: `${n(report.fifoInversions)} (${percent(report.fifoInversionRate)})`,
          alert: report.fifoInversions > 0n,
        },
        { key: "jain-fairness-index", label: "Jain's fairness index", value: report.jainFairnessIndex.toFixed(3) },
        { key: "largest-customer-share", label: "largest share of one customer", value: percent(report.largestCustomerShare) },
        ...distributionFigures("time-to-grant", "time to grant", report.timeToGrant),
        ...distributionFigures("request-latency", "request latency", report.requestLatency),
      ],
    },
    {
      title: "Waitlist",
      figures: [
        { key: "waitlist-joins", label: "joins", value: n(report.waitlistJoins) },
        { key: "waitlist-promotions", label: "promotions", value: n(report.waitlistPromotions) },
        { key: "waitlist-promotions-allocated", label: "promotions allocated", value: n(report.waitlistPromotionsAllocated) },
      ],
    },
    {
      title: "Refusals by reason",
      figures:
        report.refusals.length === 0
          ? [{ key: "refusals-none", label: "refusals", value: "none" }]
          : report.refusals.map((refusal) => ({
              key: `refusal-${errorReasonName(refusal.reason)}`,
              label: errorReasonName(refusal.reason),
              value: `${n(refusal.requests)} requests, ${n(refusal.units)} units`,
            })),
    },
  ];
}

// Tooltips drawn by the renderer, not as HTML: the dashboard's Content-Security-Policy
// refuses inline style attributes, which ECharts' HTML tooltips are made of.
const RICH_TEXT = { renderMode: "richText" } as const;

const COMMON: EChartsOption = {
  animation: false,
  textStyle: { fontFamily: "sans-serif" },
  grid: { left: 56, right: 56, top: 48, bottom: 72 },
};

function grantsOverTime(report: FlashSaleReport): EChartsOption {
  const intervalMs = (durationMicros(report.timelineInterval) ?? 1_000_000) / MICROS_PER_MS;
  const labels = report.timeline.map((bucket, i) => bucketLabel(ms(bucket.startTime) ?? i * intervalMs, intervalMs));
  const num = (pick: (b: FlashSaleReport["timeline"][number]) => bigint) => report.timeline.map((bucket) => Number(pick(bucket)));
  return {
    ...COMMON,
    title: { text: "Grants over time", subtext: `per ${formatMicros(intervalMs * MICROS_PER_MS)} (UTC)`, left: "center" },
    tooltip: { trigger: "axis", ...RICH_TEXT },
    legend: { bottom: 0 },
    xAxis: { type: "category", data: labels, name: "" },
    yAxis: [
      { type: "value", name: "requests / units", minInterval: 1 },
      { type: "value", name: "available", minInterval: 1, position: "right", splitLine: { show: false } },
    ],
    series: [
      { name: "requests granted", type: "bar", stack: "requests", data: num((b) => b.requestsGranted) },
      { name: "requests refused", type: "bar", stack: "requests", data: num((b) => b.requestsRefused) },
      { name: "units granted", type: "line", data: num((b) => b.unitsGranted) },
      { name: "available at end", type: "line", step: "end", yAxisIndex: 1, data: num((b) => b.availableAtEnd) },
    ],
  };
}

function latency(report: FlashSaleReport): EChartsOption {
  const buckets = report.requestLatencyHistogram;
  let previous: number | undefined;
  const labels = buckets.map((bucket) => {
    const bound = durationMicros(bucket.upperBound);
    const label = bound === undefined ? `> ${previous === undefined ? "0" : formatMicros(previous)}` : `≤ ${formatMicros(bound)}`;
    previous = bound ?? previous;
    return label;
  });
  return {
    ...COMMON,
    title: { text: "Request latency", subtext: `${report.requestLatency?.count ?? 0n} CreateHold attempts (server side)`, left: "center" },
    tooltip: { trigger: "axis", ...RICH_TEXT },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: 45 } },
    yAxis: { type: "value", name: "attempts", minInterval: 1 },
    series: [{ name: "attempts", type: "bar", data: buckets.map((bucket) => Number(bucket.count)) }],
  };
}

function customerShares(report: FlashSaleReport): EChartsOption {
  const data = report.topCustomers.map((customer, i) => ({
    name: customer.customerId === "" ? `customer #${i + 1}` : customer.customerId,
    value: Number(customer.unitsGranted),
  }));
  const others = Number(report.unitsGranted) - data.reduce((sum, d) => sum + d.value, 0);
  if (others > 0) data.push({ name: "others", value: others });
  return {
    ...COMMON,
    title: {
      text: "Share per customer",
      subtext: data.length === 0 ? "no units granted" : `${report.unitsGranted} units granted; largest share ${percent(report.largestCustomerShare)}`,
      left: "center",
    },
    tooltip: { trigger: "item", ...RICH_TEXT },
    series: [
      {
        name: "units granted",
        type: "pie",
        radius: ["30%", "62%"],
        center: ["50%", "56%"],
        label: { formatter: "{b}: {c} ({d}%)" },
        data,
      },
    ],
  };
}

/** The report's charts as ECharts options. */
export function reportCharts(report: FlashSaleReport): ReportCharts {
  return { grantsOverTime: grantsOverTime(report), latency: latency(report), customerShares: customerShares(report) };
}
