import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Per-process Prometheus registry with Node's default metrics and RPC timings. */
export function createMetrics(service: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  const rpcDuration = new Histogram({
    name: "holdfast_rpc_duration_seconds",
    help: "Time spent handling an RPC, by method, protocol and status code.",
    labelNames: ["method", "protocol", "code"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return { registry, rpcDuration };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Counts the application keeps itself (plain numbers that only grow), exported as a
 * counter `name` with one label, read whenever the registry is scraped.
 */
export function exportCounts(registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [value, count] of Object.entries(read())) this.labels(value).inc(count);
    },
  });
}
