// The flash-sale report view (packages/dashboard): the chart options and figures
// of a hand-made FlashSaleReport, and the static HTML report rendered from them
// (one file, inline CSS and SVG, no scripts or fetches).
import { create } from "@bufbuild/protobuf";
import { DurationSchema, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { DemandStatus, ErrorReason, FlashSaleReportSchema, type FlashSaleReport } from "@holdfast/contracts";
import { reportCharts, reportFigures, renderReportHtml } from "@holdfast/dashboard";

const T0 = Date.UTC(2026, 10, 21, 12, 0, 0);
const us = (micros: number) => create(DurationSchema, { seconds: BigInt(Math.floor(micros / 1e6)), nanos: (micros % 1e6) * 1000 });

/** A sale of 5 units over 3 one-second buckets: 8 requests by 6 customers, 5 granted (3 to alice), 3 refused. */
const TOP_CUSTOMERS = [
  { customerId: "alice", unitsGranted: 3n, share: 0.6 },
  { customerId: "bob", unitsGranted: 1n, share: 0.2 },
];

function sampleReport(topCustomers = TOP_CUSTOMERS): FlashSaleReport {
  return create(FlashSaleReportSchema, {
    sku: "SALE-<1>",
    startTime: timestampFromMs(T0),
    endTime: timestampFromMs(T0 + 3000),
    generateTime: timestampFromMs(T0 + 3500),
    requests: 8n,
    uniqueCustomers: 6n,
    unitsRequested: 9n,
    unitsAtStart: 5n,
    unitsAvailableAtEnd: 0n,
    requestsGranted: 5n,
    requestsRefused: 3n,
    unitsGranted: 5n,
    unitsAllocated: 2n,
    fifoInversions: 1n,
    fifoInversionRate: 0.125,
    jainFairnessIndex: 0.5,
    largestCustomerShare: 0.6,
    timeToGrant: { count: 3n, p50: us(1500), p95: us(2_500_000), p99: us(2_500_000), max: us(2_500_000), mean: us(800_000) },
    refusals: [{ reason: ErrorReason.INSUFFICIENT_STOCK, requests: 3n, units: 4n }],
    demandStatus: DemandStatus.OUT_OF_STOCK,
    timelineInterval: durationFromMs(1000),
    timeline: [
      { startTime: timestampFromMs(T0), requests: 5n, requestsGranted: 4n, requestsRefused: 1n, unitsGranted: 4n, availableAtEnd: 1n },
      { startTime: timestampFromMs(T0 + 1000), requests: 3n, requestsGranted: 1n, requestsRefused: 2n, unitsGranted: 1n, availableAtEnd: 0n },
      { startTime: timestampFromMs(T0 + 2000), availableAtEnd: 0n },
    ],
    requestLatency: { count: 8n, p50: us(400), p95: us(1200), p99: us(1200), max: us(1200), mean: us(600) },
    requestLatencyHistogram: [
      { upperBound: us(500), count: 5n },
      { upperBound: us(1000), count: 2n },
      { upperBound: us(2000), count: 1n },
      { count: 0n },
    ],
    topCustomers,
  });
}

const figure = (report: FlashSaleReport, key: string) =>
  reportFigures(report)
    .flatMap((group) => group.figures)
    .find((f) => f.key === key);

describe("dashboard: the flash-sale report view", () => {
  it("turns the report into the three charts' options", () => {
    const charts = reportCharts(sampleReport());
    const timeline = charts.grantsOverTime as { xAxis: { data: string[] }; series: { name: string; data: number[] }[] };
    expect(timeline.xAxis.data).to.deep.equal(["12:00:00", "12:00:01", "12:00:02"]);
    expect(Object.fromEntries(timeline.series.map((s) => [s.name, s.data]))).to.deep.equal({
      "requests granted": [4, 1, 0],
      "requests refused": [1, 2, 0],
      "units granted": [4, 1, 0],
      "available at end": [1, 0, 0],
    });
    const latency = charts.latency as { xAxis: { data: string[] }; series: { data: number[] }[] };
    expect(latency.xAxis.data).to.deep.equal(["≤ 500 µs", "≤ 1 ms", "≤ 2 ms", "> 2 ms"]);
    expect(latency.series[0].data).to.deep.equal([5, 2, 1, 0]);
    // The top customers, and the units granted to everybody else as one slice.
    const shares = charts.customerShares as { series: { data: { name: string; value: number }[] }[] };
    expect(shares.series[0].data).to.deep.equal([
      { name: "alice", value: 3 },
      { name: "bob", value: 1 },
      { name: "others", value: 1 },
    ]);
    // Redacted customer ids (a non-admin caller) still get a slice each.
    const redacted = reportCharts(sampleReport([{ customerId: "", unitsGranted: 5n, share: 1 }]));
    expect((redacted.customerShares as typeof shares).series[0].data).to.deep.equal([{ name: "customer #1", value: 5 }]);
  });

  it("lists the headline figures, flagging inversions, oversell and undersell", () => {
    const report = sampleReport();
    expect(figure(report, "requests")?.value).to.equal("8");
    expect(figure(report, "units-granted")?.value).to.equal("5");
    expect(figure(report, "demand-status")?.value).to.equal("OUT_OF_STOCK");
    expect(figure(report, "fifo-inversions")).to.include({ value: "1 (12.5 %)", alert: true });
    expect(figure(report, "jain-fairness-index")?.value).to.equal("0.500");
    expect(figure(report, "largest-customer-share")?.value).to.equal("60.0 %");
    expect(figure(report, "time-to-grant-p50")?.value).to.equal("1.5 ms");
    expect(figure(report, "time-to-grant-p99")?.value).to.equal("2.5 s");
    expect(figure(report, "oversell-units")).to.include({ value: "0", alert: false });
    expect(figure(report, "refusal-INSUFFICIENT_STOCK")?.value).to.equal("3 requests, 4 units");
    // An empty window: durations without samples show a dash, refusals say none.
    const empty = create(FlashSaleReportSchema, { sku: "EMPTY" });
    expect(figure(empty, "time-to-grant-p50")?.value).to.equal("–");
    expect(figure(empty, "refusals-none")?.value).to.equal("none");
    expect(figure(empty, "end-time")?.value).to.equal("open (now)");
  });

  it("renders one self-contained HTML file: figures, the three charts as inline SVG, no scripts or external resources", () => {
    const html = renderReportHtml(sampleReport(), { title: "Sale <b>&</b> report" });
    expect(html.startsWith("<!doctype html>")).to.equal(true);
    expect(html).to.include("<title>Sale &lt;b&gt;&amp;&lt;/b&gt; report</title>");
    expect(html).to.include('<tr data-figure="requests"><th>requests</th><td>8</td></tr>');
    expect(html).to.include('<tr data-figure="sku"><th>SKU</th><td>SALE-&lt;1&gt;</td></tr>');
    expect(html).to.include('<tr data-figure="fifo-inversions" class="alert">');
    for (const key of ["grantsOverTime", "latency", "customerShares"]) {
      expect(html, key).to.match(new RegExp(`<figure data-chart="${key}"><svg [^>]*xmlns="http://www.w3.org/2000/svg"`));
    }
    expect(html.match(/<svg /g)).to.have.length(3);
    // Chart texts come out of ECharts' SVG (escaped there).
    expect(html).to.include(">Grants over time<");
    expect(html).to.include(">alice: 3 (60%)<");
    expect(html).to.not.match(/<script|<link|<img|<iframe|@import|url\(\s*["']?(https?:)?\/\//i);
    expect(html).to.not.match(/(src|href)=/i);
  });

  it("renders the report of an empty window", () => {
    const html = renderReportHtml(create(FlashSaleReportSchema, { sku: "EMPTY" }));
    expect(html).to.include("<title>Flash-sale report: EMPTY</title>");
    expect(html.match(/<svg /g)).to.have.length(3);
    expect(html).to.include(">no units granted<");
  });
});
