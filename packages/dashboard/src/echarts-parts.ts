// The ECharts chart types and components the report's options use, registered
// with `echarts/core` (plus a renderer) by the static report (SVG, server-side)
// and by the dashboard page (canvas, in the browser), so neither bundles all of ECharts.
import { BarChart, LineChart, PieChart } from "echarts/charts";
import { GridComponent, LegendComponent, TitleComponent, TooltipComponent } from "echarts/components";

export const REPORT_CHART_PARTS = [BarChart, LineChart, PieChart, GridComponent, LegendComponent, TitleComponent, TooltipComponent];
