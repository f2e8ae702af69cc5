// CPU time of processes, from /proc (Linux): where a measured window's cores went.
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";

const TICK_MICROS = 1e6 / Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

interface Stat {
  ppid: number;
  /** utime + stime, in clock ticks. */
  own: number;
  /** cutime + cstime: the children it has waited for. */
  reaped: number;
}

function stat(pid: number | string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined; // gone
  }
  // Fields after "(comm)", which may itself contain spaces and parentheses; f[0] is field 3 (state).
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(f[1]), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) };
}

/** CPU used so far by a process (all its threads), in µs. */
export function processCpuMicros(pid: number): number {
  return (stat(pid)?.own ?? 0) * TICK_MICROS;
}

/**
 * CPU used so far by a process and all its children, those still running and those
 * it has reaped, in µs: for the postmaster, the whole PostgreSQL server (backends
 * that ended count through the postmaster's cutime).
 */
export function processTreeCpuMicros(pid: number): number {
  const root = stat(pid);
  if (root === undefined) return 0;
  let ticks = root.own + root.reaped;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = stat(entry);
    if (s?.ppid === pid) ticks += s.own;
  }
  return ticks * TICK_MICROS;
}

/** CPU time the whole machine spent busy so far (every process, ours and others'), in µs. */
export function machineBusyMicros(): number {
  const [total] = readFileSync("/proc/stat", "utf8").split("\n");
  // cpu  user nice system idle iowait irq softirq steal ...
  const f = total!.trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3]! + f[4]!;
  return (f.slice(0, 8).reduce((a, b) => a + b, 0) - idle) * TICK_MICROS;
}

/** The machine: its CPU count and the 1-minute load average now. */
export function machine(): { nproc: number; loadAverage1m: number } {
  return { nproc: cpus().length, loadAverage1m: Math.round(loadavg()[0]! * 100) / 100 };
}

/** CPU used so far by the children a process has waited for (e.g. this process's finished pgbench runs), in µs. */
export function reapedCpuMicros(pid: number): number {
  return (stat(pid)?.reaped ?? 0) * TICK_MICROS;
}
