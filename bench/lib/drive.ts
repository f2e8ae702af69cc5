// A closed-loop driver: `concurrency` workers, each making one call after another.
import { ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";

export interface Driven {
  /** Successful calls per second of the measured window. */
  perSecond: number;
  /** Calls that ended in the window, by outcome ("OK" or the refusal's reason). */
  outcomes: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
  /** The measured window, in seconds. */
  seconds: number;
}

/**
 * Runs `one` from `concurrency` workers for `warmupSeconds` (not counted: JIT,
 * connections, pools), then counts the calls that end within the next `seconds`.
 * `onWindow` is called as the window opens and as it closes (e.g. to read CPU
 * counters). `one` returns its outcome: "OK", or the reason it was refused.
 */
export async function drive(
  options: { concurrency: number; seconds: number; warmupSeconds?: number; onWindow?: (edge: "start" | "end") => void },
  one: (worker: number, i: number) => Promise<string>,
): Promise<Driven> {
  const opens = performance.now() + (options.warmupSeconds ?? 0) * 1000;
  const closes = opens + options.seconds * 1000;
  const outcomes: Record<string, number> = {};
  const latencies: number[] = [];
  const edges = [
    setTimeout(() => options.onWindow?.("start"), opens - performance.now()),
    setTimeout(() => options.onWindow?.("end"), closes - performance.now()),
  ];
  await Promise.all(
    Array.from({ length: options.concurrency }, async (_, worker) => {
      for (let i = 0; performance.now() < closes; i++) {
        const t = performance.now();
        const outcome = await one(worker, i);
        const ended = performance.now();
        if (ended < opens || ended > closes) continue;
        latencies.push(ended - t);
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
    }),
  );
  // Calls in flight as the window closed finish after it; its end has fired by then.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, closes - performance.now())));
  for (const edge of edges) clearTimeout(edge);
  latencies.sort((a, b) => a - b);
  const q = (p: number) => (latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! * 10) / 10);
  return { perSecond: Math.round((outcomes.OK ?? 0) / options.seconds), outcomes, p50Ms: q(0.5), p99Ms: q(0.99), seconds: options.seconds };
}

/** A refused call's outcome: its ErrorInfo reason, else its status code's name. */
export function refusalReason(err: unknown): string {
  const e = ConnectError.from(err);
  return e.findDetails(ErrorInfoSchema)[0]?.reason ?? `code ${e.code}`;
}
