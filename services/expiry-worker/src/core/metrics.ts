import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * The worker's Prometheus metrics (on WORKER_HTTP_PORT /metrics), the same figures
 * as GetWorkerStatus. Per replica: sum over replicas in queries.
 */
export function createWorkerMetrics(registry: Registry) {
  const registers = [registry];
  return {
    expiryLag: new Histogram({
      name: "holdfast_expiry_lag_seconds",
      help: "Time from a hold's expire_time to the commit that returned its stock, for holds this replica expired.",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30, 60],
      registers,
    }),
    holdsExpired: new Counter({ name: "holdfast_holds_expired_total", help: "Holds this replica moved to EXPIRED.", registers }),
    unitsReturned: new Counter({ name: "holdfast_expiry_units_returned_total", help: "Units returned to available by holds this replica expired.", registers }),
    waitlistEntriesExpired: new Counter({
      name: "holdfast_waitlist_entries_expired_total",
      help: "WAITING waitlist entries past their max_wait that this replica's sweeps expired.",
      registers,
    }),
    sweeps: new Counter({
      name: "holdfast_expiry_sweeps_total",
      help: "Expiry sweeps run by this replica, by trigger (background or RunExpirySweep).",
      labelNames: ["trigger"] as const,
      registers,
    }),
    sweepErrors: new Counter({ name: "holdfast_expiry_sweep_errors_total", help: "Expiry batches that failed and were rolled back (retried by the next sweep).", registers }),
    overdueHolds: new Gauge({ name: "holdfast_overdue_holds", help: "Database-wide HELD holds past their expire_time, as of this replica's last look.", registers }),
    listening: new Gauge({ name: "holdfast_expiry_listening", help: "1 while this replica's LISTEN connection is up, else 0.", registers }),
    reconciliationRuns: new Counter({
      name: "holdfast_reconciliation_runs_total",
      help: "Reconciliation runs this replica finished, by mode and final status.",
      labelNames: ["mode", "status"] as const,
      registers,
    }),
    reconciliationFindings: new Counter({
      name: "holdfast_reconciliation_findings_total",
      help: "Counter drifts found by this replica's reconciliation runs, and how many were repaired.",
      labelNames: ["repaired"] as const,
      registers,
    }),
    snapshotPasses: new Counter({
      name: "holdfast_snapshot_passes_total",
      help: "Availability snapshot passes this replica took, by trigger.",
      labelNames: ["trigger"] as const,
      registers,
    }),
    retentionPruned: new Counter({
      name: "holdfast_retention_pruned_total",
      help: "Rows pruned by this replica's retention, by table.",
      labelNames: ["table"] as const,
      registers,
    }),
  };
}

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
