// @holdfast/dashboard: the flash-sale report view (charts and figures of a
// FlashSaleReport, and the report as a static HTML file).
export { renderReportHtml, type RenderReportHtmlOptions } from "./render-html.js";
export { CHART_KEYS, reportCharts, reportFigures, type Figure, type FigureGroup, type ReportCharts } from "./report-charts.js";
