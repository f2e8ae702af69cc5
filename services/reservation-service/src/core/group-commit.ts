/**
 * HOT_SKU_MODE_GROUP_COMMIT: the holds of one hot SKU that arrive together at this
 * process are made by ONE transaction (docs/concurrency.md, "A hot SKU beyond one
 * row"). One row commits only so fast; a batch of K holds costs that row one lock,
 * one counter UPDATE and one commit, instead of K of each.
 *
 * - Who joins: a CreateHold of one SKU whose last read policy (`learn`, fed by every
 *   hold's read) is GROUP_COMMIT, without max_units_per_customer or
 *   abandonment_aware_ttl, whose strategy resolves to PESSIMISTIC (the batch decides
 *   on one row, pessimistically by nature). Everything else takes the normal path
 *   (core/reserve.ts), correct, just not batched. The attempt rate limit was applied
 *   before (it is outside any transaction anyway), unless the SKU had none when last
 *   seen (RateLimitHints, as for every hold): then the hold skipped that statement, and
 *   goes back to the normal path, which admits it, if the batch's read finds a limit.
 * - Queue and leaders: per SKU, up to HOT_SKU_BATCHES_IN_FLIGHT (default 2) batches
 *   at a time in this process, each run by a leader that takes up to
 *   HOT_SKU_MAX_BATCH waiting holds in arrival order, commits them, and goes on while
 *   holds wait. No timer: a lone hold goes at once (after the event loop's current
 *   turn, so that the holds that came with it join it); batching comes from concurrency.
 *   Two batches in flight, because one batch keeps one PostgreSQL backend (one core)
 *   busy and leaves the hot row unlocked for most of its transaction (the claim and
 *   the inserts): the next batch does that part while this one holds the row for its
 *   counter update and commit (issue 8: 51 batches/s of 23 holds, 6.6 ms of
 *   PostgreSQL's time each, the rest of the 20 ms spent on round trips and the
 *   commit's flush). Batches serialise on the row lock as any two transactions do,
 *   and a batch decided on an unlocked read that the other's commit made short
 *   reruns on the locked row (below), so the second batch costs no correctness; it
 *   may commit before the first, so arrival order is kept within a batch, not
 *   across the two. A hold whose caller left before its batch starts is dropped; a
 *   second hold with the same (caller, request id) in one batch takes the normal
 *   path (it waits for the batch's claim and replays its outcome).
 * - The transaction: claim every member's request id (one statement, in key order),
 *   reading the SKU's policy and counters (no lock, like the normal path); grant in
 *   arrival order while stock lasts (first fit, as if the holds ran one after the
 *   other); then one statement: insert the granted reservations and their lines,
 *   record every member's outcome (grants and INSUFFICIENT_STOCK refusals), and ONE
 *   guarded counter UPDATE with one ledger event per hold (applyCounterChanges, each
 *   event with its own caller, request id and before/after), sent with the COMMIT
 *   (`finish`: it fails rather than commit what the guard refused). Two round trips
 *   (BEGIN goes with the claim). The hot row is locked for that last statement plus
 *   the commit's flush, as on the normal path.
 * - Short: if the read shows less than the batch wants and expired holds can be
 *   reclaimed, the row is locked, they are expired in line (as the normal path does)
 *   and the batch decides on the locked values. If the guard refuses what the read
 *   promised (another replica or path took stock meanwhile), the transaction rolls
 *   back and the batch runs again deciding on the locked row.
 * - Handed back to the normal path (their claim released in the same transaction, so
 *   the normal path claims them afresh): a request id that was already recorded or in
 *   flight (the normal path replays it), one that a reservation or waitlist entry
 *   holds forever, a TTL out of the SKU's bounds, a policy that no longer allows the
 *   batch, and a short member that asked to join the waitlist.
 * - Failure: if the batch transaction fails (lock timeout, a lost connection, a
 *   deadlock, a hold that would be born dead...), no member is answered from it: each
 *   takes the normal path, where idempotency makes that safe even if the COMMIT's
 *   fate is unknown (a committed batch is replayed).
 * Nothing here is needed for correctness across replicas: each replica batches its
 * own holds, and the batches serialise on the row lock like any other hold.
 */
import { create } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import type { ConnectError } from "@connectrpc/connect";
import { CreateHoldResponseSchema, LockingStrategy, type CreateHoldResponse } from "@holdfast/contracts";
import { claimKeys, insufficientStock, recordOutcomesInline, type IdempotencyKey, type KeyOutcome } from "@holdfast/core";
import {
  CounterChangeRefused,
  applyCounterChanges,
  claimReclaimableHolds,
  expireClaimedHolds,
  lockInventoryRows,
  readInventoryRows,
  transaction,
  type InventoryRow,
  type Promotion,
  type ReservationRow,
} from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { toReservation } from "./convert.js";
import {
  COMMIT_MARGIN_MS,
  RECLAIM_LIMIT,
  availableToBuyers,
  holdTerms,
  insertReservations,
  plannedReservation,
  readSkusWithCounters,
  reservationInserts,
  skusWithCountersRead,
  strategyFor,
  type HoldPolicy,
} from "./reserve.js";
import type { ReservationSettings } from "./settings.js";

/** A CreateHold for the batch, validated, admitted and keyed (core/reserve.ts placeHold). */
export interface HotHold {
  call: Call;
  key: IdempotencyKey;
  customerId: string;
  sku: string;
  quantity: number;
  /** Requested TTL, if any (bounds are checked against the SKU in the batch). */
  ttlMs: number | undefined;
  /** As requested (UNSPECIFIED: the SKU's default, else the server's). */
  strategy: LockingStrategy;
  joinWaitlistIfShort: boolean;
  /** Counted by the attempt rate limit already (else its SKU had no limit when last seen: RateLimitHints). */
  admitted: boolean;
}

/** A member's answer: its response, its recorded refusal (or, `dropped`, its caller's abort), or undefined = take the normal path. */
type Answer = { response: CreateHoldResponse } | { error: unknown; dropped?: boolean } | undefined;

interface Member extends HotHold {
  settle(answer: Answer): void;
}

/** The policy columns that decide whether a SKU's holds may be batched. */
type Policy = Pick<HoldPolicy, "code" | "hot_sku_mode" | "max_units_per_customer" | "abandonment_aware_ttl" | "default_locking_strategy">;

/** Whether a hold with this requested strategy on a SKU with this policy is made by the batch. */
function batchable(policy: Policy, strategy: LockingStrategy, settings: ReservationSettings): boolean {
  return (
    policy.hot_sku_mode === "GROUP_COMMIT" &&
    policy.max_units_per_customer === null &&
    !policy.abandonment_aware_ttl &&
    strategyFor(strategy, [policy], settings) === "PESSIMISTIC"
  );
}

/** The guard refused what the unlocked read promised: run the batch again on the locked row. */
class GuardLost extends Error {}

/** Tallies, exported on /metrics (holdfast_hot_sku_*). */
export interface GroupCommitStats {
  /** Batch transactions committed / failed (their members took the normal path). */
  batches: { committed: number; failed: number };
  /** Holds by how the batch answered them. */
  holds: { granted: number; refused: number; normal: number; dropped: number };
}

export class GroupCommit {
  /** The last policy read of each SKU (by any hold, or a batch). */
  private readonly policies = new Map<string, Policy>();
  /** Per SKU with a batch running: the holds waiting for a batch, and the leaders running batches. */
  private readonly queues = new Map<string, { waiting: Member[]; leaders: number }>();
  readonly stats: GroupCommitStats = { batches: { committed: 0, failed: 0 }, holds: { granted: 0, refused: 0, normal: 0, dropped: 0 } };

  constructor(private readonly deps: Pick<Deps, "db" | "settings" | "logger" | "expiry" | "rateLimits">) {}

  /**
   * Remembers the SKUs' policies as just read. Any hold's read (normal path or batch)
   * feeds it, so a mode switched by UpdateSku on any replica is followed from this
   * process's next hold of the SKU on: the first GROUP_COMMIT hold after a switch
   * takes the normal path and the next ones are batched; a batch that reads a
   * policy that no longer allows it hands its members to the normal path.
   */
  learn(rows: readonly Policy[]): void {
    for (const r of rows) {
      const { code, hot_sku_mode, max_units_per_customer, abandonment_aware_ttl, default_locking_strategy } = r;
      this.policies.set(code, { code, hot_sku_mode, max_units_per_customer, abandonment_aware_ttl, default_locking_strategy });
    }
  }

  /** Whether a single-SKU hold is for the batch, by the last policy read of its SKU. */
  takes(sku: string, strategy: LockingStrategy): boolean {
    const policy = this.policies.get(sku);
    return policy !== undefined && batchable(policy, strategy, this.deps.settings);
  }

  /**
   * Queues the hold for its SKU's next batch. Resolves to its response, or to
   * undefined: take the normal path. Rejects with its refusal (recorded) or, if
   * its caller left before the batch started, with the signal's reason.
   */
  submit(hold: HotHold): Promise<CreateHoldResponse | undefined> {
    return new Promise((resolve, reject) => {
      const member: Member = {
        ...hold,
        settle: (answer) => (answer === undefined ? resolve(undefined) : "response" in answer ? resolve(answer.response) : reject(answer.error)),
      };
      let queue = this.queues.get(hold.sku);
      if (queue === undefined) this.queues.set(hold.sku, (queue = { waiting: [], leaders: 0 }));
      queue.waiting.push(member);
      if (queue.leaders < this.deps.settings.hotSkuBatchesInFlight) {
        queue.leaders++;
        // After this turn of the event loop: the holds that arrived with this one (a
        // burst comes in a few reads of the connection) start in one batch with it.
        setImmediate(() => {
          this.lead(hold.sku, queue).catch((err: unknown) => this.deps.logger.error({ err, sku: hold.sku }, "hot-SKU batch leader failed"));
        });
      }
    });
  }

  /** Runs the SKU's batches one after the other until nobody waits (one of its leaders). */
  private async lead(sku: string, queue: { waiting: Member[]; leaders: number }): Promise<void> {
    try {
      while (queue.waiting.length > 0) await this.runBatch(sku, queue.waiting);
    } finally {
      // Even if a batch threw past its own handling: a leader counted forever would
      // leave the SKU's holds waiting for one that never comes.
      if (--queue.leaders === 0) this.queues.delete(sku);
    }
  }

  /** One batch from the head of `waiting`: committed, and every member answered. */
  private async runBatch(sku: string, waiting: Member[]): Promise<void> {
    const batch = this.take(waiting);
    if (batch.length === 0) return;
    let answers: Map<Member, Answer>;
    try {
      answers = await this.commit(sku, batch);
      this.stats.batches.committed++;
    } catch (err) {
      // Nothing was answered from the failed transaction: every member takes the
      // normal path (a COMMIT whose fate is unknown is replayed there).
      this.deps.logger.info({ err, sku, holds: batch.length }, "hot-SKU batch failed; its holds take the normal path");
      this.stats.batches.failed++;
      answers = new Map();
    }
    for (const member of batch) {
      const answer = answers.get(member);
      if (answer === undefined) this.stats.holds.normal++;
      else if ("response" in answer) this.stats.holds.granted++;
      else if (answer.dropped === true) this.stats.holds.dropped++;
      else this.stats.holds.refused++;
      member.settle(answer);
    }
  }

  /** Up to the maximum batch from the head of the queue, without callers that left and without a second hold of one request id. */
  private take(queue: Member[]): Member[] {
    const batch: Member[] = [];
    const ids = new Set<string>();
    while (queue.length > 0 && batch.length < this.deps.settings.hotSkuMaxBatch) {
      const member = queue.shift()!;
      if (member.call.signal.aborted) {
        this.stats.holds.dropped++;
        member.settle({ error: member.call.signal.reason, dropped: true });
        continue;
      }
      const id = `${member.key.caller}\0${member.key.requestId}`;
      if (ids.has(id)) {
        this.stats.holds.normal++;
        member.settle(undefined);
        continue;
      }
      ids.add(id);
      batch.push(member);
    }
    return batch;
  }

  /** The batch's transaction (again on the locked row if the guard lost); its answers once committed. */
  private async commit(sku: string, batch: Member[]): Promise<Map<Member, Answer>> {
    let decided: { answers: Map<Member, Answer>; promoted: Promotion[] };
    try {
      decided = await this.once(sku, batch, false);
    } catch (err) {
      if (!(err instanceof GuardLost)) throw err;
      decided = await this.once(sku, batch, true);
    }
    this.deps.expiry.promoted(decided.promoted);
    return decided.answers;
  }

  /** One attempt: one transaction. `lock`: decide on the row locked from the read on. */
  private async once(sku: string, batch: Member[], lock: boolean): Promise<{ answers: Map<Member, Answer>; promoted: Promotion[] }> {
    const { db, settings } = this.deps;
    const answers = new Map<Member, Answer>();
    const promoted: Promotion[] = [];
    await transaction(db, async (trx) => {
      // The SKU's policy and counters are read by the claim's statement (no lock, like the
      // normal path's), or, on the locked row, by a statement of their own after it.
      const claimed = await claimKeys(trx, batch.map((m) => m.key), settings.idempotencyWindowMs, null, null, lock ? undefined : skusWithCountersRead([sku]));
      const { now, claims } = claimed;
      /** Claims given up in this transaction: their holds take the normal path, which claims them again. */
      const released: IdempotencyKey[] = [];
      const handBack = (m: Member) => {
        released.push(m.key);
        answers.set(m, undefined);
      };
      let members: Member[] = [];
      for (const [i, m] of batch.entries()) {
        const claim = claims[i]!;
        if (!claim.claimed) answers.set(m, undefined); // recorded or in flight: the normal path replays it
        else if (claim.reservationId !== null || claim.waitlistEntryId !== null) handBack(m); // IDEMPOTENCY_KEY_REUSED there
        else members.push(m);
      }

      const [row] = lock ? await readSkusWithCounters(trx, [sku], true) : claimed.rows;
      if (row !== undefined) {
        this.learn([row]);
        this.deps.rateLimits.learn([row]);
      }
      const terms = new Map<Member, { ttlMs: number; lifetimeMs: number }>();
      for (const m of members) {
        // (Not admitted, and the SKU has a rate limit now: admitted there first.)
        if (row === undefined || !batchable(row, m.strategy, settings) || (!m.admitted && row.rate_limit_max_attempts !== null)) {
          handBack(m);
          continue;
        }
        try {
          terms.set(m, holdTerms([row], settings, m.ttlMs));
        } catch {
          handBack(m); // TTL_OUT_OF_RANGE, answered there
        }
      }
      members = members.filter((m) => terms.has(m));

      let available = row === undefined ? 0 : availableOf(row, row);
      const wanted = members.reduce((sum, m) => sum + m.quantity, 0);
      // Short on the read, with expired holds to reclaim in that same snapshot: on the
      // locked row, as the normal path does. Short with nothing to reclaim: the read is
      // the answer (it was true at that moment, reserve.ts RECLAIMABLE).
      if (row !== undefined && wanted > available && row.reclaimable) {
        const [locked] = lock ? [row] : await lockInventoryRows(trx, [sku]);
        lock = true;
        const expired = await claimReclaimableHolds(trx, [sku], RECLAIM_LIMIT);
        if (expired.length > 0) {
          // In the ledger as the batch's first hold's doing (wanted > 0: there is one).
          const first = members[0]!;
          const origin = { actor: first.call.principal.id, requestId: first.key.requestId };
          promoted.push(...(await expireClaimedHolds(trx, expired, origin, settings)).promotions);
        }
        const [after] = expired.length > 0 ? await readInventoryRows(trx, [sku]) : [locked!];
        available = availableOf(after!, row);
      }

      const granted: { member: Member; header: ReservationRow; response: CreateHoldResponse }[] = [];
      const refused: { member: Member; error: ConnectError }[] = [];
      for (const m of members) {
        if (m.call.signal.aborted) {
          // Its caller left before anything was decided for it: nobody takes stock for it.
          released.push(m.key);
          answers.set(m, { error: m.call.signal.reason, dropped: true });
        } else if (m.quantity <= available) {
          available -= m.quantity;
          const header = plannedReservation(randomUUID(), { type: "HOLD", customerId: m.customerId }, "PESSIMISTIC", terms.get(m), m.key, now);
          const reservation = toReservation(header, [{ sku_code: sku, quantity: m.quantity }], now);
          granted.push({ member: m, header, response: create(CreateHoldResponseSchema, { reservation }) });
        } else if (m.joinWaitlistIfShort) {
          handBack(m); // the normal path joins the waitlist
        } else {
          refused.push({ member: m, error: insufficientStock([{ sku, requested: m.quantity, available }]) });
        }
      }

      const outcomes: KeyOutcome<typeof CreateHoldResponseSchema>[] = [
        ...granted.map((g) => ({ key: g.member.key, schema: CreateHoldResponseSchema, response: g.response })),
        ...refused.map((r) => ({ key: r.member.key, refusal: r.error })),
      ];
      const planned = granted.map((g) => ({ header: g.header, lines: [{ sku, quantity: g.member.quantity }], terms: terms.get(g.member) }));
      const record = recordOutcomesInline(outcomes, released, settings.idempotencyWindowMs);
      if (granted.length === 0) {
        await insertReservations(trx, planned, record, { commit: true });
      } else {
        // The inserts, the records, the counter change and the COMMIT: one statement, one
        // round trip (ApplyOptions.finish). Rolled back if the guard refuses it, or if it
        // ends too late for the shortest TTL of the batch: a hold whose transaction
        // waited (nearly) its whole TTL would be born dead; the batch's holds then take
        // the normal path (ABORTED / LOCK_TIMEOUT there, if so).
        const aliveForMs = Math.min(...granted.map((g) => terms.get(g.member)!.ttlMs)) - COMMIT_MARGIN_MS;
        try {
          await applyCounterChanges(
            trx,
            granted.map((g) => ({
              sku,
              operation: "HOLD_CREATED" as const,
              reservationId: g.header.id,
              reserved: g.member.quantity,
              origin: { actor: g.member.call.principal.id, requestId: g.member.key.requestId },
            })),
            { actor: granted[0]!.member.call.principal.id, requestId: null },
            { yieldToWaitlist: true, alongside: reservationInserts(planned, record), finish: { aliveForMs } },
          );
        } catch (err) {
          if (!(err instanceof CounterChangeRefused && err.reason === "refused")) throw err;
          if (!lock) throw new GuardLost();
          throw new Error(`counter change refused on the locked row of ${sku}`);
        }
      }
      for (const g of granted) answers.set(g.member, { response: g.response });
      for (const r of refused) answers.set(r.member, { error: r.error });
    });
    return { answers, promoted };
  }
}

/** What a new buyer may take of the SKU's row (availableToBuyers). */
function availableOf(row: Pick<InventoryRow, "available" | "waitlist_count">, policy: Pick<HoldPolicy, "code" | "waitlist_promotion_policy">): number {
  return availableToBuyers([{ sku_code: policy.code, available: row.available, waitlist_count: row.waitlist_count }], [policy])[0]!.available;
}
