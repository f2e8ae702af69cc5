export { parseCli, isLoopback, USAGE, UsageError, DEFAULT_GRPC_PORT, type CliOptions, type FlashSalePlan, type PolicyFlags, type Strategy } from "./options.js";
export {
  runFlashSale,
  provisionSkus,
  skuPolicy,
  describeError,
  statusName,
  newRunId,
  SimulatorError,
  CALL_TIMEOUT_MS,
  type FlashSaleRun,
  type ProvisionedSku,
  type Progress,
  type ReservationClient,
  type RunHooks,
  type Tally,
} from "./simulate.js";
export { fetchFlashSaleReport, ReportUnavailable, type FetchedReport } from "./report.js";
export { reportTable, comparisonTable, tallyTable, percentiles } from "./format.js";
export { simulatorCaller, SIMULATOR_SUBJECT } from "./auth.js";
export { defaultReportPath, writeHtmlReport } from "./html.js";
