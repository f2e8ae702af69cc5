/**
 * The HTML report (charts: grants over time, latency distribution, share per
 * customer), rendered by @holdfast/dashboard's renderReportHtml.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { FlashSaleReport } from "@holdfast/contracts";

/** reports/flash-sale-report-<sku>.html under the working directory (reports/ is git-ignored). */
export function defaultReportPath(sku: string): string {
  return path.join("reports", `flash-sale-report-${sku}.html`);
}

/** Writes the report's HTML page to `file` (its folder created); returns the file, or undefined when no renderer is available yet. */
export async function writeHtmlReport(report: FlashSaleReport, file: string, title: string): Promise<string | undefined> {
  // TODO(dashboard): const html = renderReportHtml(report, { title }); once @holdfast/dashboard is merged.
  const html: string | undefined = undefined;
  void report;
  void title;
  if (html === undefined) return undefined;
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFile(file, html);
  return file;
}
