/**
 * The load generator: provisions the sale's SKUs and fires the burst. No
 * printing here: progress goes to a callback and the outcome is returned as a
 * tally, so the CLI and the tests drive the same code.
 *
 * Who calls as whom (docs/security.md): CreateSku is the admin's; CreateHold and
 * ConfirmHold are the checkout service's, acting for each buyer through
 * `customer_id` (a customer token may hold but not confirm, and admin may not
 * take stock). The client passed in must attach the right token per RPC
 * (@holdfast/dev-stack's grpcCaller does).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { InventoryReservationService, LockingStrategy, SkuPolicySchema, type Reservation } from "@holdfast/contracts";
import { ErrorInfoSchema, RetryInfoSchema } from "@holdfast/contracts/rpc";
import { distributionStats, prng, type DistributionStats } from "@holdfast/core";
import type { GrpcJsClient } from "@holdfast/runtime";
import PQueue from "p-queue";
import type { FlashSalePlan, PolicyFlags } from "./options.js";

export type ReservationClient = GrpcJsClient<typeof InventoryReservationService>;

/** Deadline of one call (a call in flight when --max-seconds passes still gets this long). */
export const CALL_TIMEOUT_MS = 10_000;
/** Queue priorities: confirmations first, then retries, then first attempts. */
const PRIORITY_CONFIRM = 2;
const PRIORITY_RETRY = 1;
const PRIORITY_ATTEMPT = 0;
/** Longest wait before a retry, whatever RetryInfo asks for. */
const MAX_RETRY_DELAY_MS = 1_000;

/** A failure the simulator cannot go on from (provisioning refused, service unreachable). */
export class SimulatorError extends Error {}

/** "ResourceExhausted" → "RESOURCE_EXHAUSTED": the gRPC status name. */
export function statusName(code: Code): string {
  return Code[code]!.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** "UNIMPLEMENTED / NOT_IMPLEMENTED (feature=...): message" for any error. */
export function describeError(err: unknown): string {
  if (!(err instanceof ConnectError)) return err instanceof Error ? err.message : String(err);
  const info = err.findDetails(ErrorInfoSchema)[0];
  const metadata = Object.entries(info?.metadata ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
  return `${statusName(err.code)}${info ? ` / ${info.reason}` : ""}${metadata ? ` (${metadata})` : ""}: ${err.rawMessage}`;
}


const seconds = (s: number) => ({ seconds: BigInt(s), nanos: 0 });

/** The SkuPolicy of the flags: only what was given is set (zero = the server default). */
export function skuPolicy(strategy: FlashSalePlan["strategy"], flags: PolicyFlags) {
  return create(SkuPolicySchema, {
    defaultLockingStrategy: lockingStrategy(strategy),
    maxUnitsPerCustomer: flags.maxUnitsPerCustomer ?? 0,
    customerAttemptRateLimit: flags.rateLimit ? { maxAttempts: flags.rateLimit.maxAttempts, window: seconds(flags.rateLimit.windowSeconds) } : undefined,
    abandonmentAwareTtl: flags.abandonmentAwareTtl ?? false,
  });
}

export function lockingStrategy(strategy: FlashSalePlan["strategy"]): LockingStrategy {
  return strategy === "optimistic" ? LockingStrategy.OPTIMISTIC : LockingStrategy.PESSIMISTIC;
}

/**
 * One millisecond after `t`: Sku.create_time is cut to the millisecond (the service
 * reads timestamps as JavaScript Dates) while the SKU_CREATED event keeps its
 * microseconds, so the event lies in [t, t + 1 ms).
 */
function justAfter(t: Timestamp): Timestamp {
  const nanos = t.nanos + 1_000_000;
  return create(TimestampSchema, { seconds: t.seconds + BigInt(Math.floor(nanos / 1e9)), nanos: nanos % 1e9 });
}

export interface ProvisionedSku {
  sku: string;
  /**
   * Start of the report window: just after the SKU's creation, on the server's
   * clock, so `units_at_start` is the stock (the ledger's SKU_CREATED event is
   * before it) and every attempt of the burst is inside, whatever the skew
   * between this machine's clock and the server's.
   */
  windowStart: Timestamp;
}

/** Creates the sale's SKU and the cart's extra SKUs, `stock` units each. */
export async function provisionSkus(client: ReservationClient, plan: FlashSalePlan, runId: string): Promise<ProvisionedSku[]> {
  const main = `${plan.skuPrefix}-${runId}`;
  const codes = [main, ...Array.from({ length: plan.cartSkus - 1 }, (_, i) => `${main}-X${i + 1}`)];
  const provisioned: ProvisionedSku[] = [];
  for (const sku of codes) {
    try {
      const { sku: created } = await client.createSku(
        { requestId: `${sku}-create`, sku, name: `Flash sale ${sku}`, initialOnHand: BigInt(plan.stock), policy: skuPolicy(plan.strategy, plan.policy) },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
      provisioned.push({ sku, windowStart: justAfter(created!.createTime!) });
    } catch (err) {
      throw new SimulatorError(`CreateSku ${sku} was refused: ${describeError(err)}`);
    }
  }
  return provisioned;
}

export interface Tally {
  buyers: number;
  bots: number;
  /**
   * CreateHold calls the service answered with a decision (granted, refused with a
   * reason, waitlisted), replays excluded: what the request log records, so
   * comparable with the report's `requests`.
   */
  attempts: number;
  /** Answers replayed from an earlier call with the same request id (not new attempts). */
  replayed: number;
  /** Attempts granted a hold. */
  granted: number;
  /** Units of the sale's SKU in those holds. */
  unitsGranted: number;
  waitlisted: number;
  /** Attempts refused, by ErrorInfo reason. */
  refused: Record<string, number>;
  /** Calls that failed without a reason (deadline, connection): the server may or may not have seen them. */
  unanswered: Record<string, number>;
  /** Calls repeated with the same request id. */
  retries: number;
  /** CreateHold calls not started because --max-seconds passed or the run was interrupted (confirmations still go). */
  notSent: number;
  /** Customers who got at least one hold. */
  customersGranted: number;
  confirmed: number;
  /** Holds a buyer chose not to confirm (left to expire). */
  abandoned: number;
  /** ConfirmHold failures by reason (e.g. HOLD_EXPIRED after a long think). */
  confirmFailed: Record<string, number>;
  /** Ids of every hold granted (replayed grants counted once). */
  holdIds: string[];
  /** Client-side latency of CreateHold calls with an answer, in ms. */
  latencyMs: DistributionStats | null;
  /** Attempts per second over the burst. */
  throughput: number;
}

export interface Progress {
  sessionsDone: number;
  sessionsTotal: number;
  attempts: number;
  granted: number;
  refused: number;
  waitlisted: number;
  inFlight: number;
}

export interface FlashSaleRun {
  runId: string;
  /** The sale's SKU, then the cart's extra SKUs. */
  skus: ProvisionedSku[];
  plan: FlashSalePlan;
  tally: Tally;
  /** Local clock, ms since the epoch. */
  startedAt: number;
  durationMs: number;
  /** True when --max-seconds or an interruption cut the burst short. */
  cutShort: boolean;
}

export interface RunHooks {
  onProgress?: (progress: Progress) => void;
  /** Aborting stops new calls; calls in flight finish. */
  signal?: AbortSignal;
}

type Settled<T> = { kind: "ok"; value: T; ms: number } | { kind: "error"; error: ConnectError; ms: number } | { kind: "skipped" };

interface Failure {
  reason: string | undefined;
  replayed: boolean;
  /** Whether calling again with the same request id may succeed, and after how long. */
  retryAfterMs: number | undefined;
}

function failureOf(error: ConnectError): Failure {
  const info = error.findDetails(ErrorInfoSchema)[0];
  const retry = error.findDetails(RetryInfoSchema)[0];
  let retryAfterMs: number | undefined;
  if (retry !== undefined) retryAfterMs = Number(retry.retryDelay?.seconds ?? 0n) * 1000 + (retry.retryDelay?.nanos ?? 0) / 1e6;
  // A transport failure without a reason (deadline, broken connection): the same request id is safe to send again.
  else if (info === undefined && (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded)) retryAfterMs = 0;
  return { reason: info?.reason, replayed: info?.metadata.replayed === "true", retryAfterMs };
}

const pad = (n: number, width: number) => String(n).padStart(width, "0");
const bump = (counts: Record<string, number>, key: string) => (counts[key] = (counts[key] ?? 0) + 1);

/** A run id: short, unique enough per machine, valid in SKU codes, customer ids and request ids. */
export function newRunId(): string {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36).padStart(3, "0")}`.toUpperCase();
}

/**
 * Provisions the SKUs and runs the burst. With several clients (connections), the
 * burst's calls take them in turn: one HTTP/2 connection carries at most the
 * server's GRPC_MAX_CONCURRENT_STREAMS calls at once (100 by default), and grpc-js
 * queues the rest, so a concurrency above that needs more connections.
 */
export async function runFlashSale(
  clients: ReservationClient | readonly ReservationClient[],
  plan: FlashSalePlan,
  hooks: RunHooks = {},
  runId = newRunId(),
): Promise<FlashSaleRun> {
  const pool: readonly ReservationClient[] = Array.isArray(clients) ? (clients as readonly ReservationClient[]) : [clients as ReservationClient];
  let turn = 0;
  const client = (): ReservationClient => pool[turn++ % pool.length]!;
  const skus = await provisionSkus(pool[0]!, plan, runId);
  const lines = skus.map(({ sku }) => ({ sku, quantity: plan.quantity }));
  const strategy = lockingStrategy(plan.strategy);
  const random = prng(plan.seed);

  const tally: Tally = {
    buyers: plan.buyers,
    bots: plan.bots,
    attempts: 0,
    replayed: 0,
    granted: 0,
    unitsGranted: 0,
    waitlisted: 0,
    refused: {},
    unanswered: {},
    retries: 0,
    notSent: 0,
    customersGranted: 0,
    confirmed: 0,
    abandoned: 0,
    confirmFailed: {},
    holdIds: [],
    latencyMs: null,
    throughput: 0,
  };
  const holdIds = new Set<string>();
  const customersGranted = new Set<string>();
  const latencies: number[] = [];
  let refusedTotal = 0;
  let inFlight = 0;
  let sessionsDone = 0;

  // Sessions in arrival order: buyers and bots shuffled together (Fisher-Yates), each
  // buyer's abandon decision drawn up front, so one seed gives one sale.
  type Session = { kind: "buyer"; index: number; abandons: boolean } | { kind: "bot"; index: number };
  const sessions: Session[] = [
    ...Array.from({ length: plan.buyers }, (_, index) => ({ kind: "buyer" as const, index, abandons: random() < plan.abandon })),
    ...Array.from({ length: plan.bots }, (_, index) => ({ kind: "bot" as const, index })),
  ];
  for (let i = sessions.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [sessions[i], sessions[j]] = [sessions[j]!, sessions[i]!];
  }
  const thinkTimes = sessions.map(() => random() * plan.thinkMs);

  const progress = () =>
    hooks.onProgress?.({ sessionsDone, sessionsTotal: sessions.length, attempts: tally.attempts, granted: tally.granted, refused: refusedTotal, waitlisted: tally.waitlisted, inFlight });

  // Calls in flight are bounded; a confirmation or a retry goes ahead of first
  // attempts still queued (a buyer at checkout is not sent to the back of the sale).
  const queue = new PQueue({ concurrency: plan.concurrency });
  // Each SKU's report window starts 1 ms after its creation (see justAfter): the first attempt comes later.
  await sleep(2);
  const startedAt = Date.now();
  const started = performance.now();
  const deadline = started + plan.maxSeconds * 1000;
  let cutShort = false;
  const stopped = () => {
    if (hooks.signal?.aborted || performance.now() >= deadline) cutShort = true;
    return cutShort;
  };

  /**
   * One call through the concurrency limit (higher priority first). Once the burst is
   * over, only confirmations are still sent (a buyer granted a hold still checks out).
   */
  const send = <T>(call: () => Promise<T>, priority: number): Promise<Settled<T>> =>
    queue.add(async (): Promise<Settled<T>> => {
      if (priority < PRIORITY_CONFIRM && stopped()) {
        tally.notSent++;
        return { kind: "skipped" };
      }
      inFlight++;
      const t = performance.now();
      try {
        const value = await call();
        return { kind: "ok", value, ms: performance.now() - t };
      } catch (err) {
        return { kind: "error", error: ConnectError.from(err), ms: performance.now() - t };
      } finally {
        inFlight--;
      }
    }, { priority }) as Promise<Settled<T>>;

  /** Sends `call` again with the same request id while the server says it may succeed. */
  async function withRetries<T>(retries: number, priority: number, call: () => Promise<T>, record: (settled: Settled<T>) => void): Promise<Settled<T>> {
    for (let attempt = 0; ; attempt++) {
      const settled = await send(call, attempt === 0 ? priority : Math.max(priority, PRIORITY_RETRY));
      record(settled);
      if (settled.kind !== "error" || attempt >= retries) return settled;
      const { retryAfterMs } = failureOf(settled.error);
      if (retryAfterMs === undefined) return settled;
      await sleep(Math.min(MAX_RETRY_DELAY_MS, retryAfterMs) + random() * 20);
      if (priority < PRIORITY_CONFIRM && stopped()) return settled;
      tally.retries++;
    }
  }

  /** Tallies one CreateHold answer; returns the hold when one was granted. */
  function recordHold(customerId: string, settled: Settled<{ reservation?: Reservation; waitlistEntries: unknown[]; replayed: boolean }>): void {
    if (settled.kind === "skipped") return;
    if (settled.kind === "error") {
      const failure = failureOf(settled.error);
      if (failure.reason === undefined) bump(tally.unanswered, statusName(settled.error.code));
      else if (failure.replayed) tally.replayed++;
      else {
        tally.attempts++;
        refusedTotal++;
        bump(tally.refused, failure.reason);
        latencies.push(settled.ms);
      }
    } else {
      const { reservation, waitlistEntries, replayed } = settled.value;
      if (replayed) tally.replayed++;
      else {
        tally.attempts++;
        latencies.push(settled.ms);
      }
      if (reservation !== undefined && !holdIds.has(reservation.id)) {
        holdIds.add(reservation.id);
        customersGranted.add(customerId);
        tally.granted++;
        tally.unitsGranted += reservation.lines.find((l) => l.sku === skus[0]!.sku)?.quantity ?? 0;
      } else if (waitlistEntries.length > 0 && !replayed) tally.waitlisted++;
    }
    progress();
  }

  const createHold = (customerId: string, requestId: string, retries: number, priority = PRIORITY_ATTEMPT) =>
    withRetries(
      retries,
      priority,
      () =>
        client().createHold(
          { requestId, customerId, lines, lockingStrategy: strategy, ttl: seconds(plan.holdTtlSeconds), joinWaitlistIfShort: plan.joinWaitlist },
          { timeoutMs: CALL_TIMEOUT_MS },
        ),
      (settled) => recordHold(customerId, settled),
    );

  const confirm = async (reservationId: string, requestId: string) => {
    const settled = await withRetries(plan.retries, PRIORITY_CONFIRM, () => client().confirmHold({ requestId, reservationId }, { timeoutMs: CALL_TIMEOUT_MS }), () => undefined);
    if (settled.kind === "ok") tally.confirmed++;
    else if (settled.kind === "error") bump(tally.confirmFailed, failureOf(settled.error).reason ?? statusName(settled.error.code));
    else bump(tally.confirmFailed, "NOT_SENT");
  };

  const granted = (settled: Settled<{ reservation?: Reservation }>) => (settled.kind === "ok" ? settled.value.reservation : undefined);

  async function buyer(index: number, abandons: boolean, thinkMs: number): Promise<void> {
    const customerId = `fs-${runId}-b${pad(index, 6)}`;
    const hold = granted(await createHold(customerId, `${customerId}-hold`, plan.retries));
    if (hold === undefined) return;
    if (abandons) {
      tally.abandoned++;
      return;
    }
    await sleep(thinkMs);
    await confirm(hold.id, `${customerId}-confirm`);
  }

  /**
   * A bot: attempts back to back with fresh request ids, holds or not (a scalper);
   * each attempt after its first goes ahead of the queued first attempts, as a
   * retry does (it fires again the moment it has an answer). Confirms what it gets
   * without waiting.
   */
  async function bot(index: number): Promise<void> {
    const customerId = `fs-${runId}-x${pad(index, 6)}`;
    const confirms: Promise<void>[] = [];
    for (let k = 0; k < plan.botAttempts && !stopped(); k++) {
      const hold = granted(await createHold(customerId, `${customerId}-a${k}`, 0, k === 0 ? PRIORITY_ATTEMPT : PRIORITY_RETRY));
      if (hold !== undefined) confirms.push(confirm(hold.id, `${customerId}-a${k}-confirm`));
    }
    await Promise.all(confirms);
  }

  await Promise.all(
    sessions.map(async (session, i) => {
      await (session.kind === "buyer" ? buyer(session.index, session.abandons, thinkTimes[i]!) : bot(session.index));
      sessionsDone++;
      progress();
    }),
  );

  const durationMs = performance.now() - started;
  tally.holdIds = [...holdIds];
  tally.customersGranted = customersGranted.size;
  tally.latencyMs = distributionStats(latencies);
  tally.throughput = durationMs > 0 ? tally.attempts / (durationMs / 1000) : 0;
  return { runId, skus, plan, tally, startedAt, durationMs, cutShort };
}
