/**
 * The HTML report (charts: grants over time, latency distribution, share per
 * customer), rendered by @holdfast/dashboard's renderReportHtml.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { FlashSaleReport } from "@holdfast/contracts";
import { renderReportHtml } from "@holdfast/dashboard";

/** reports/flash-sale-report-<sku>.html under the working directory (reports/ is git-ignored). */
export function defaultReportPath(sku: string): string {
  return path.join("reports", `flash-sale-report-${sku}.html`);
}

/** Writes the report's HTML page to `file` (its folder created if need be); returns the file. */
export async function writeHtmlReport(report: FlashSaleReport, file: string, title: string): Promise<string> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFile(file, renderReportHtml(report, { title }));
  return file;
}
