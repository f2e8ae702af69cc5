#!/usr/bin/env node
// `npm run flash-sale -- --buyers 5000 --stock 500 --strategy pessimistic --concurrency 200`
// against the running reservation-service (`npm start`). --help lists every option.
// Exit status: 0 done; 1 the sale could not run (unreachable, refused, bad token);
// 2 bad options; 3 the report shows oversold units.
import * as grpc from "@grpc/grpc-js";
import { SingleBar } from "cli-progress";
import { InventoryReservationService, type FlashSaleReport } from "@holdfast/contracts";
import { DEFAULT_MAX_CONCURRENT_STREAMS, createGrpcJsClient } from "@holdfast/runtime";
import { simulatorCaller } from "./auth.js";
import { comparisonTable, reportTable, tallyTable } from "./format.js";
import { defaultReportPath, writeHtmlReport } from "./html.js";
import { parseCli, USAGE, UsageError, type CliOptions } from "./options.js";
import { fetchFlashSaleReport, ReportUnavailable } from "./report.js";
import { runFlashSale, SimulatorError, type Progress } from "./simulate.js";

const out = (text: string) => process.stdout.write(`${text}\n`);
const err = (text: string) => process.stderr.write(`${text}\n`);

/** A progress bar on a terminal; on anything else, one line per second (cli-progress's noTTYOutput). */
function progressBar(): { update(p: Progress): void; stop(): void } {
  const tty = process.stderr.isTTY === true;
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${tty ? "{bar} {percentage}% | " : "progress: "}{value}/{total} customers done | attempts {attempts} | granted {granted} | refused {refused} | waitlisted {waitlisted} | in flight {inFlight} | {duration}s`,
    hideCursor: tty,
    noTTYOutput: true,
    notTTYSchedule: 1000,
    etaBuffer: 100,
  });
  let started = false;
  return {
    update(p) {
      const payload = { attempts: p.attempts, granted: p.granted, refused: p.refused, waitlisted: p.waitlisted, inFlight: p.inFlight };
      if (!started) {
        started = true;
        bar.start(p.sessionsTotal, p.sessionsDone, payload);
      } else bar.update(p.sessionsDone, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

function waitForReady(client: grpc.Client, target: string): Promise<void> {
  return new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + 5_000, (error) =>
      error ? reject(new SimulatorError(`cannot reach the reservation-service at ${target} (${error.message}): is \`npm start\` running? (--target host:port)`)) : resolve(),
    ),
  );
}

async function main(options: CliOptions): Promise<number> {
  const caller = await simulatorCaller(options, options.maxSeconds + 600);
  // One connection per 100 calls in flight; a local subchannel pool keeps grpc-js from sharing one.
  const clients = Array.from({ length: Math.ceil(options.concurrency / DEFAULT_MAX_CONCURRENT_STREAMS) }, () =>
    createGrpcJsClient(InventoryReservationService, options.target, grpc.credentials.createInsecure(), { ...caller, "grpc.use_local_subchannel_pool": 1 }),
  );
  const client = clients[0]!;
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(130);
    err("\ninterrupted: no new calls; waiting for the calls in flight (Ctrl-C again to quit now)");
    abort.abort();
  };
  process.on("SIGINT", onSigint);
  try {
    await Promise.all(clients.map((c) => waitForReady(c.raw, options.target)));
    const bots = options.bots > 0 ? `, ${options.bots} bots × ${options.botAttempts}` : "";
    out(
      `Flash sale on ${options.target}: ${options.buyers} buyers${bots}, ${options.stock} units × ${options.cartSkus} SKU(s), ${options.strategy}, concurrency ${options.concurrency}, seed ${options.seed}`,
    );
    const bar = progressBar();
    let run;
    try {
      run = await runFlashSale(clients, options, { onProgress: (p) => bar.update(p), signal: abort.signal });
    } finally {
      bar.stop();
    }
    out(`SKU ${run.skus[0]!.sku}${run.skus.length > 1 ? ` (cart: ${run.skus.map((s) => s.sku).join(", ")})` : ""}`);

    let report: FlashSaleReport | undefined;
    try {
      const fetched = await fetchFlashSaleReport(client, run);
      report = fetched.report;
      if (!fetched.caughtUp) err(`note: the request log had ${report.requests} attempts, the client counted ${run.tally.attempts} (rows still being written, or lost)`);
    } catch (error) {
      if (!(error instanceof ReportUnavailable)) throw error;
      err(error.message);
    }
    if (report !== undefined) {
      out(reportTable(report));
      out(comparisonTable(run, report));
    }
    out(tallyTable(run));
    if (report !== undefined && options.html) {
      const file = await writeHtmlReport(report, options.out ?? defaultReportPath(report.sku), `Flash sale ${report.sku}`);
      out(`HTML report: ${file}`);
    }
    if (report !== undefined && report.oversellUnits > 0n) {
      err(`OVERSOLD: ${report.oversellUnits} units`);
      return 3;
    }
    return 0;
  } finally {
    process.off("SIGINT", onSigint);
    for (const c of clients) c.close();
  }
}

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  out(USAGE);
} else {
  let options: CliOptions | undefined;
  try {
    options = parseCli(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    err(`flash-sale: ${error.message}\n(npm run flash-sale -- --help lists the options)`);
    process.exitCode = 2;
  }
  if (options !== undefined) {
    process.exitCode = await main(options).catch((error: unknown) => {
      err(`flash-sale: ${error instanceof SimulatorError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      return 1;
    });
  }
}
