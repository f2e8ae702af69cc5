/**
 * Admission control: how many unary calls one process serves at once.
 *
 * Without it, a burst at several times what the database can take is queued
 * without bound: every call waits for a pooled connection (knex's acquire timeout
 * is a minute), holds its request, its handler's state and a slot of its HTTP/2
 * connection meanwhile, and answers late, long after its caller has given up.
 * With it, at most `maxInFlight` calls are served at once, at most `maxWaiting`
 * more wait (first come, first served) for at most `maxWaitMs` each, and any
 * other is refused at once with UNAVAILABLE / OVERLOADED and RetryInfo
 * (errors.proto): it costs the server a decode and an encode, never a database
 * connection, and the caller can retry on another replica straight away.
 *
 * A call whose caller has gone (deadline passed, client cancelled) takes no slot,
 * and one that goes while it waits leaves the queue at once: its work never
 * starts.
 *
 * Shedding is counted (`holdfast_rpc_shed_total`) and logged once when it starts,
 * then summarised every 10 s while it lasts: never a log line per shed call.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { Logger } from "pino";
import { overloaded } from "./errors.js";

export interface AdmissionLimits {
  /** Unary calls served at once by this process. */
  maxInFlight: number;
  /** Calls that may wait for a slot; beyond, a call is refused at once. */
  maxWaiting: number;
  /** Longest wait for a slot; then the call is refused. */
  maxWaitMs: number;
}

/** Why a call was shed: nowhere to wait, or no slot free within maxWaitMs. */
export type ShedCause = "queue_full" | "wait_timeout";

/** Frees the call's slot (to the first waiting call, if any). Call it once. */
export type Release = () => void;

/** While calls are being shed, one summary line this often. */
const SUMMARY_INTERVAL_MS = 10_000;

export class Admission {
  private inFlight = 0;
  /** Waiting calls in arrival order (a Set: O(1) removal of one that gives up). */
  private readonly waiting = new Set<(release: Release) => void>();
  private readonly shedCounter: Counter<"method" | "cause">;
  /** Shed since the last log line, by cause; the episode's timer while shedding lasts. */
  private shedSinceLog: Record<ShedCause, number> = { queue_full: 0, wait_timeout: 0 };
  private summaryTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly limits: AdmissionLimits,
    private readonly logger: Logger,
    registry: Registry,
  ) {
    const read = (value: () => number) =>
      function (this: Gauge) {
        this.set(value());
      };
    new Gauge({ name: "holdfast_rpc_in_flight", help: "Unary calls being served now (admitted).", registers: [registry], collect: read(() => this.inFlight) });
    new Gauge({ name: "holdfast_rpc_waiting", help: "Unary calls waiting for a slot.", registers: [registry], collect: read(() => this.waiting.size) });
    new Gauge({ name: "holdfast_rpc_in_flight_limit", help: "Unary calls served at once at most (MAX_CALLS_IN_FLIGHT).", registers: [registry], collect: read(() => limits.maxInFlight) });
    this.shedCounter = new Counter({
      name: "holdfast_rpc_shed_total",
      help: "Calls refused UNAVAILABLE / OVERLOADED before any work, by method and cause (queue_full, wait_timeout).",
      labelNames: ["method", "cause"] as const,
      registers: [registry],
    });
  }

  /**
   * A slot for one call of `method`: at once if one is free, after a short wait
   * otherwise. Throws UNAVAILABLE / OVERLOADED when none can be had, and the
   * signal's reason if the caller goes (or has gone) first.
   */
  enter(method: string, signal: AbortSignal): Release | Promise<Release> {
    signal.throwIfAborted();
    if (this.inFlight < this.limits.maxInFlight) {
      this.inFlight++;
      return this.releaser();
    }
    if (this.waiting.size >= this.limits.maxWaiting) throw this.shed(method, "queue_full");
    return new Promise<Release>((resolve, reject) => {
      const settle = () => {
        this.waiting.delete(admit);
        clearTimeout(timer);
        signal.removeEventListener("abort", gone);
      };
      const admit = (release: Release) => {
        settle();
        resolve(release);
      };
      const gone = () => {
        settle();
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        settle();
        reject(this.shed(method, "wait_timeout"));
      }, this.limits.maxWaitMs);
      signal.addEventListener("abort", gone, { once: true });
      this.waiting.add(admit);
    });
  }

  /** Logs what was shed since the last line, if anything (at shutdown). */
  close(): void {
    clearTimeout(this.summaryTimer);
    this.summaryTimer = undefined;
    this.summarise(false);
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot passes straight to the first waiting call, so it cannot be overtaken.
      const [next] = this.waiting;
      if (next === undefined) this.inFlight--;
      else next(this.releaser());
    };
  }

  private shed(method: string, cause: ShedCause) {
    this.shedCounter.inc({ method, cause });
    this.shedSinceLog[cause]++;
    if (this.summaryTimer === undefined) {
      // The first of an episode: said at once, then summarised while it lasts.
      this.logger.warn({ ...this.state(), cause }, "shedding load: calls refused UNAVAILABLE / OVERLOADED (summarised every 10 s while it lasts)");
      this.shedSinceLog = { queue_full: 0, wait_timeout: 0 };
      this.summaryTimer = setTimeout(() => this.onSummaryTimer(), SUMMARY_INTERVAL_MS).unref();
    }
    const { maxInFlight, maxWaiting, maxWaitMs } = this.limits;
    return overloaded(cause === "queue_full" ? `${maxInFlight} calls in flight and ${maxWaiting} waiting` : `no call slot free within ${maxWaitMs} ms`);
  }

  private onSummaryTimer(): void {
    if (this.summarise(true)) this.summaryTimer = setTimeout(() => this.onSummaryTimer(), SUMMARY_INTERVAL_MS).unref();
    else {
      this.summaryTimer = undefined;
      this.logger.info(this.state(), "stopped shedding load");
    }
  }

  /** One line for the calls shed since the last; false if there were none. */
  private summarise(periodic: boolean): boolean {
    const shed = this.shedSinceLog.queue_full + this.shedSinceLog.wait_timeout;
    if (shed === 0) return false;
    this.logger.warn({ ...this.state(), shed, byCause: this.shedSinceLog, ...(periodic ? { intervalMs: SUMMARY_INTERVAL_MS } : {}) }, "shedding load");
    this.shedSinceLog = { queue_full: 0, wait_timeout: 0 };
    return true;
  }

  private state() {
    return { inFlight: this.inFlight, waiting: this.waiting.size, ...this.limits };
  }
}
