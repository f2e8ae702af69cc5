// The flash-sale report as one self-contained static HTML file: inline CSS, the
// charts of report-charts.ts rendered to SVG by ECharts' server-side renderer,
// and the figures table. No scripts, no network fetches: it opens from disk,
// from a CI artifact or from an e-mail attachment alike.
import escapeHtml from "escape-html";
import * as echarts from "echarts/core";
import { SVGRenderer } from "echarts/renderers";
import type { FlashSaleReport } from "@holdfast/contracts";
import { REPORT_CHART_PARTS } from "./echarts-parts.js";
import { CHART_KEYS, reportCharts, reportFigures, type EChartsOption } from "./report-charts.js";

echarts.use([...REPORT_CHART_PARTS, SVGRenderer]);

export interface RenderReportHtmlOptions {
  /** The page's title and heading; default "Flash-sale report: <sku>". */
  title?: string;
}

const CHART_SIZE = { grantsOverTime: { width: 960, height: 380 }, latency: { width: 960, height: 340 }, customerShares: { width: 960, height: 380 } };

/** One chart as an SVG string (ECharts SSR: no DOM, no canvas). */
export function renderChartSvg(option: EChartsOption, width: number, height: number): string {
  const chart = echarts.init(null, null, { renderer: "svg", ssr: true, width, height });
  try {
    chart.setOption(option);
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

const STYLE = `
  body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; padding: 0 1em; }
  h1 { font-size: 1.5em; margin-bottom: 0.2em; }
  .sub { color: #666; margin-top: 0; }
  .groups { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
  table { border-collapse: collapse; min-width: 300px; flex: 1 1 300px; }
  caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
  th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; }
  th { text-align: left; font-weight: normal; color: #444; }
  td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  tr.alert td { color: #b00020; font-weight: 600; }
  figure { margin: 1.5em 0; }
  figure svg { max-width: 100%; height: auto; }
`;

/** The figures of reportFigures as tables (one per group), with `data-figure` keys. */
export function figuresHtml(report: FlashSaleReport): string {
  return reportFigures(report)
    .map(
      (group) =>
        `<table><caption>${escapeHtml(group.title)}</caption><tbody>${group.figures
          .map(
            (figure) =>
              `<tr data-figure="${escapeHtml(figure.key)}"${figure.alert === true ? ' class="alert"' : ""}><th>${escapeHtml(figure.label)}</th><td>${escapeHtml(figure.value)}</td></tr>`,
          )
          .join("")}</tbody></table>`,
    )
    .join("\n");
}

/** The report as one static HTML document (a string; write it as UTF-8). */
export function renderReportHtml(report: FlashSaleReport, options: RenderReportHtmlOptions = {}): string {
  const title = options.title ?? `Flash-sale report: ${report.sku}`;
  const charts = reportCharts(report);
  const figures = CHART_KEYS.map((key) => {
    const { width, height } = CHART_SIZE[key];
    return `<figure data-chart="${key}">${renderChartSvg(charts[key], width, height)}</figure>`;
  });
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="sub">Every figure is defined in Holdfast's docs/fairness.md.</p>
<div class="groups">
${figuresHtml(report)}
</div>
${figures.join("\n")}
</body>
</html>
`;
}
