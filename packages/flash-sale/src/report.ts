/**
 * GetFlashSaleReport for the sale's SKU, once the request log has caught up
 * with the burst (the service writes it in batches after the answers).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FlashSaleReport } from "@holdfast/contracts";
import { CALL_TIMEOUT_MS, describeError, SimulatorError, type FlashSaleRun, type ReservationClient } from "./simulate.js";

/** The service answered UNIMPLEMENTED: a server without GetFlashSaleReport. */
export class ReportUnavailable extends SimulatorError {}

export interface FetchedReport {
  report: FlashSaleReport;
  /** False when the log still had fewer attempts than the client counted after `waitMs`. */
  caughtUp: boolean;
}

/** Most customers a report lists (the contract's cap), for the share-per-customer chart. */
const TOP_CUSTOMERS = 100;

/**
 * The report of the run's sale SKU over [its window start, now). Asked again every
 * 100 ms until it counts at least the attempts the client saw answered, for at most `waitMs`.
 */
export async function fetchFlashSaleReport(client: ReservationClient, run: FlashSaleRun, waitMs = 5_000): Promise<FetchedReport> {
  const { sku, windowStart } = run.skus[0]!;
  const until = performance.now() + waitMs;
  for (;;) {
    let report: FlashSaleReport;
    try {
      ({ report } = (await client.getFlashSaleReport({ sku, startTime: windowStart, topCustomersLimit: TOP_CUSTOMERS }, { timeoutMs: CALL_TIMEOUT_MS })) as { report: FlashSaleReport });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented) {
        throw new ReportUnavailable(`GetFlashSaleReport is not available on this server (${describeError(err)}); only the client tally is shown`);
      }
      throw new SimulatorError(`GetFlashSaleReport failed: ${describeError(err)}`);
    }
    const caughtUp = Number(report.requests) >= run.tally.attempts;
    if (caughtUp || performance.now() >= until) return { report, caughtUp };
    await sleep(100);
  }
}
