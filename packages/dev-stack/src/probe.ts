// Looking at a running service process from outside, for tests and benchmarks: its
// Prometheus metrics and its resident memory.
import { readFile } from "node:fs/promises";

/**
 * The sum of the samples of `name` in a Prometheus text exposition whose labels
 * include `labels` (0 if there is none): e.g. a counter over all its label values,
 * or one histogram bucket with `{ le: "0.005" }`.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (match === null || match[1] !== name) continue;
    const given = new Map([...(match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => given.get(k) === v)) sum += Number(match[3]);
  }
  return sum;
}

/** The Prometheus text a service serves on `<httpUrl>/metrics`. */
export async function scrapeMetrics(httpUrl: string): Promise<string> {
  const response = await fetch(`${httpUrl}/metrics`);
  if (!response.ok) throw new Error(`GET ${httpUrl}/metrics: ${response.status}`);
  return response.text();
}

/** A process's resident set size in bytes (VmRSS in /proc/<pid>/status; Linux). */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kib === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kib) * 1024;
}
