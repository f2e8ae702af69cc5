/**
 * The reservation lifecycle after creation (contract, ReservationStatus):
 *   HELD -> ALLOCATED (ConfirmHold) | RELEASED (ReleaseHold) | EXPIRED (expiry);
 *   ALLOCATED -> FULFILLED (FulfillAllocation) | CANCELLED (CancelAllocation).
 *
 * Every transition locks the reservation's header first (SELECT ... FOR UPDATE), then
 * changes the lines and, last, the counters with their ledger events (one statement,
 * SKUs locked in SKU order): the lock order of ledger.ts. The header lock serialises
 * every transition of one reservation, including the worker's sweep (which claims
 * headers with SKIP LOCKED), so a hold racing its expiry ends confirmed or expired,
 * never both.
 *
 * Expiry is a rule, judged by the database clock at the moment the header is locked
 * (clock_timestamp() in the guarded UPDATE, not the transaction's start, which may be
 * a lock wait earlier): a HELD hold past expires_at is dead. Confirming or extending
 * it is FAILED_PRECONDITION / HOLD_EXPIRED, and the same transaction records it as
 * EXPIRED and returns its units, so nobody has to wait for the sweeper.
 *
 * Counter changes here cannot oversell (they move units out of reserved/allocated, or
 * from reserved to allocated), so both locking strategies use the same guarded
 * statement; a compare-and-set would add aborts without protecting anything, since the
 * header lock already serialises the reservation's transitions. The strategy a caller
 * names on ConfirmHold is validated and otherwise has no effect.
 */
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  CancelAllocationRequestSchema,
  CancelAllocationResponseSchema,
  ConfirmHoldRequestSchema,
  ConfirmHoldResponseSchema,
  ExtendHoldRequestSchema,
  ExtendHoldResponseSchema,
  FulfillAllocationRequestSchema,
  FulfillAllocationResponseSchema,
  InventoryReservationService,
  ReleaseHoldRequestSchema,
  ReleaseHoldResponseSchema,
  type CancelAllocationRequest,
  type CancelAllocationResponse,
  type ConfirmHoldRequest,
  type ConfirmHoldResponse,
  type ExtendHoldRequest,
  type ExtendHoldResponse,
  type FulfillAllocationRequest,
  type FulfillAllocationResponse,
  type ReleaseHoldRequest,
  type ReleaseHoldResponse,
  type Reservation,
} from "@holdfast/contracts";
import {
  applyCounterChanges,
  expireClaimedHolds,
  promoteWaiting,
  query,
  settlePromotedEntries,
  type AuditOperation,
  type HoldTermSettings,
  type Promotion,
  type ReservationRow,
  type ReservationStatus,
  type SkuRow,
  type Db,
} from "@holdfast/schema";
import { isLockTimeout } from "@holdfast/runtime";
import type { Call, Deps } from "./context.js";
import { toReservation, type LineRow } from "./convert.js";
import { holdExpired, holdLifetimeExceeded, invalidTransition, lockTimeout, reservationNotFound, ttlOutOfRange } from "@holdfast/core";
import { Idempotency, Refusal, idempotencyKey } from "@holdfast/core";
import { ttlBounds } from "./reserve.js";
import { Violations, assertOwnResource } from "@holdfast/core";

/** A reservation locked by this transaction, with its lines and the database clock at the lock. */
interface Locked {
  row: ReservationRow;
  lines: LineRow[];
  /** clock_timestamp() after the header lock was granted. */
  now: Date;
  /** HELD but past expires_at. */
  lapsed: boolean;
}

/**
 * What a step needs besides the locked reservation: the server's hold terms (for the
 * holds of waitlist promotions) and where to put the promotions it made, so that the
 * worker can be told of their expiry after commit.
 */
interface StepContext {
  settings: HoldTermSettings;
  promotions: Promotion[];
}

type Step = (trx: Db, locked: Locked, call: Call, ctx: StepContext) => Promise<Reservation | Refusal>;

const method = (name: string) => `${InventoryReservationService.typeName}/${name}`;

/**
 * Runs one transition idempotently: validate, claim the request id, lock the header,
 * then `step`. An unknown reservation is NOT_FOUND (recorded, like every refusal).
 */
async function transition<D extends DescMessage, Req extends { requestId: string; reservationId: string }>(
  deps: Deps,
  call: Call,
  name: string,
  requestSchema: DescMessage,
  responseSchema: D,
  req: Req,
  validate: (v: Violations) => void,
  step: Step,
): Promise<MessageShape<D>> {
  // request_id and reservation_id follow the contract's rules (checked before this runs).
  const v = new Violations();
  validate(v);
  v.throwIfAny();
  const key = idempotencyKey(call.principal.id, method(name), requestSchema, req as never);
  const idempotency = new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call);
  let touched: string[] = [];
  let ctx: StepContext = { settings: deps.settings, promotions: [] };
  try {
    const response = await idempotency.run(key, responseSchema, async (trx) => {
      ctx = { settings: deps.settings, promotions: [] }; // per attempt
      const locked = await lockReservation(trx, req.reservationId, call);
      touched = locked.lines.map((l) => l.sku_code);
      const outcome = await step(trx, locked, call, ctx);
      if (outcome instanceof Refusal) return outcome;
      return create(responseSchema, { reservation: outcome } as never) as MessageShape<D>;
    });
    // Committed: promoted holds expire on their own schedule; wake the worker for them.
    deps.expiry.promoted(ctx.promotions);
    return response;
  } catch (err) {
    if (!isLockTimeout(err)) throw err;
    // Waited too long for the header or the SKUs' rows: name them (errors.proto, LOCK_TIMEOUT).
    const lines = await query<LineRow>(deps.db, `SELECT sku_code FROM reservation_items WHERE reservation_id = ? ORDER BY sku_code`, [req.reservationId]);
    throw lockTimeout({ skus: lines.map((l) => l.sku_code), reservationId: req.reservationId }, err);
  } finally {
    // Committed or not (watchers re-read and drop what did not change).
    deps.inventory.changed(touched);
  }
}

async function lockReservation(trx: Db, id: string, call: Call): Promise<Locked> {
  if (call.principal.role === "customer") {
    // A customer may touch only its own holds, and an unknown id looks the same to it
    // (NOT_RESOURCE_OWNER). Checked before the lock (customer_id never changes): someone
    // else's reservation is never locked, waited for, or named in a LOCK_TIMEOUT.
    const [owner] = await query<{ customer_id: string }>(trx, `SELECT customer_id FROM reservations WHERE id = ?`, [id]);
    assertOwnResource(call.principal, owner?.customer_id);
  }
  const [row] = await query<ReservationRow>(trx, `SELECT * FROM reservations WHERE id = ? FOR UPDATE`, [id]);
  if (row === undefined) throw reservationNotFound(id);
  // Read after the lock is granted, so a long lock wait cannot make a dead hold look alive.
  const lines = await query<LineRow & { now: Date }>(
    trx,
    `SELECT sku_code, quantity, clock_timestamp() AS now FROM reservation_items WHERE reservation_id = ? ORDER BY sku_code`,
    [id],
  );
  const now = lines[0]?.now ?? new Date();
  const lapsed = row.status === "HELD" && row.expires_at !== null && row.expires_at.getTime() <= now.getTime();
  return { row, lines: lines.map(({ sku_code, quantity }) => ({ sku_code, quantity })), now, lapsed };
}

/**
 * Moves the header and its lines to `status` and applies one counter change per line,
 * with its ledger events. Returns the reservation as it now is.
 */
async function moveTo(
  trx: Db,
  locked: Locked,
  call: Call,
  requestId: string,
  status: ReservationStatus,
  change: { operation: AuditOperation; onHand?: 1 | -1 | 0; reserved?: 1 | -1 | 0; allocated?: 1 | -1 | 0 },
  closeReason: string | null,
  ctx: StepContext,
): Promise<Reservation> {
  const final = status !== "ALLOCATED";
  const [row] = await query<ReservationRow>(
    trx,
    `WITH h AS (
       UPDATE reservations
          SET status = ?, updated_at = now(),
              confirmed_at = CASE WHEN ? = 'ALLOCATED' THEN now() ELSE confirmed_at END,
              closed_at = CASE WHEN ? THEN now() END,
              close_reason = ?
        WHERE id = ?
        RETURNING *
     ), lines AS (
       UPDATE reservation_items i SET status = h.status FROM h WHERE i.reservation_id = h.id
     )
     SELECT * FROM h`,
    [status, status, final, closeReason, locked.row.id],
  );
  const applied = await applyCounterChanges(
    trx,
    locked.lines.map((l) => ({
      sku: l.sku_code,
      operation: change.operation,
      reservationId: locked.row.id,
      onHand: (change.onHand ?? 0) * l.quantity,
      reserved: (change.reserved ?? 0) * l.quantity,
      allocated: (change.allocated ?? 0) * l.quantity,
      reason: closeReason,
    })),
    { actor: call.principal.id, requestId },
  );
  // Only a ledger that already disagrees with the lines can refuse these moves.
  if (applied.refused.length > 0) throw new Error(`${change.operation} of ${locked.row.id} refused on ${applied.refused.join(", ")}: counters disagree with the lines`);
  // A hold born of a waitlist promotion takes its entry along (confirmed: CONFIRMED;
  // released: CANCELLED, the turn is given up).
  if (locked.row.waitlist_entry_id !== null && (status === "ALLOCATED" || status === "RELEASED")) {
    await settlePromotedEntries(trx, [locked.row.id], status === "ALLOCATED" ? "CONFIRMED" : "CANCELLED");
  }
  // Units back to available go to the SKUs' waitlists first, in this transaction.
  if (status === "RELEASED" || status === "CANCELLED") {
    ctx.promotions.push(...(await promoteWaiting(trx, locked.lines.map((l) => l.sku_code), { actor: call.principal.id, requestId }, ctx.settings)));
  }
  return toReservation(row!, locked.lines, locked.now);
}

/** Records a lapsed (unswept) hold as EXPIRED and returns its units, in this transaction. */
async function expireNow(trx: Db, locked: Locked, call: Call, requestId: string, ctx: StepContext): Promise<Reservation> {
  const { promotions } = await expireClaimedHolds(trx, [locked.row.id], { actor: call.principal.id, requestId }, ctx.settings);
  ctx.promotions.push(...promotions);
  const [row] = await query<ReservationRow>(trx, `SELECT * FROM reservations WHERE id = ?`, [locked.row.id]);
  return toReservation(row!, locked.lines, locked.now);
}

const unchanged = (locked: Locked) => toReservation(locked.row, locked.lines, locked.now);

export function confirmHold(deps: Deps, call: Call, req: ConfirmHoldRequest): Promise<ConfirmHoldResponse> {
  return transition(deps, call, "ConfirmHold", ConfirmHoldRequestSchema, ConfirmHoldResponseSchema, req, () => undefined, async (trx, locked, _call, ctx) => {
    const { row } = locked;
    if (row.type !== "HOLD") throw invalidTransition(row, "ConfirmHold", "a HELD hold");
    if (row.status === "ALLOCATED") return unchanged(locked); // already confirmed: succeeds, changes nothing
    if (locked.lapsed) {
      await expireNow(trx, locked, call, req.requestId, ctx);
      return new Refusal(holdExpired(row.id, row.expires_at!));
    }
    if (row.status === "EXPIRED") throw holdExpired(row.id, row.expires_at!);
    if (row.status !== "HELD") throw invalidTransition(row, "ConfirmHold", "HELD");
    return moveTo(trx, locked, call, req.requestId, "ALLOCATED", { operation: "HOLD_CONFIRMED", reserved: -1, allocated: 1 }, null, ctx);
  });
}

export function releaseHold(deps: Deps, call: Call, req: ReleaseHoldRequest): Promise<ReleaseHoldResponse> {
  return transition(deps, call, "ReleaseHold", ReleaseHoldRequestSchema, ReleaseHoldResponseSchema, req, () => undefined, async (trx, locked, _call, ctx) => {
    const { row } = locked;
    if (row.status === "RELEASED" || row.status === "EXPIRED") return unchanged(locked); // succeeds, changes nothing
    if (row.status !== "HELD") throw invalidTransition(row, "ReleaseHold", "HELD (use CancelAllocation for an allocation)");
    // Past its expiry the hold is already dead: recorded as EXPIRED, not RELEASED (contract).
    if (locked.lapsed) return expireNow(trx, locked, call, req.requestId, ctx);
    return moveTo(trx, locked, call, req.requestId, "RELEASED", { operation: "HOLD_RELEASED", reserved: -1 }, req.reason === "" ? null : req.reason, ctx);
  });
}

export function fulfillAllocation(deps: Deps, call: Call, req: FulfillAllocationRequest): Promise<FulfillAllocationResponse> {
  return transition(deps, call, "FulfillAllocation", FulfillAllocationRequestSchema, FulfillAllocationResponseSchema, req, () => undefined, async (trx, locked, _call, ctx) => {
    const { row } = locked;
    if (row.status === "FULFILLED") return unchanged(locked);
    if (row.status !== "ALLOCATED") throw invalidTransition({ ...row, status: locked.lapsed ? "EXPIRED" : row.status }, "FulfillAllocation", "ALLOCATED");
    return moveTo(trx, locked, call, req.requestId, "FULFILLED", { operation: "ALLOCATION_FULFILLED", onHand: -1, allocated: -1 }, null, ctx);
  });
}

export function cancelAllocation(deps: Deps, call: Call, req: CancelAllocationRequest): Promise<CancelAllocationResponse> {
  return transition(deps, call, "CancelAllocation", CancelAllocationRequestSchema, CancelAllocationResponseSchema, req, () => undefined, async (trx, locked, _call, ctx) => {
    const { row } = locked;
    if (row.status === "CANCELLED") return unchanged(locked);
    if (row.status !== "ALLOCATED") {
      throw invalidTransition({ ...row, status: locked.lapsed ? "EXPIRED" : row.status }, "CancelAllocation", "ALLOCATED (use ReleaseHold for a hold)");
    }
    return moveTo(trx, locked, call, req.requestId, "CANCELLED", { operation: "ALLOCATION_CANCELLED", allocated: -1 }, req.reason === "" ? null : req.reason, ctx);
  });
}

export function extendHold(deps: Deps, call: Call, req: ExtendHoldRequest): Promise<ExtendHoldResponse> {
  let ttlMs: number | undefined;
  return transition(
    deps,
    call,
    "ExtendHold",
    ExtendHoldRequestSchema,
    ExtendHoldResponseSchema,
    req,
    (v) => {
      // Present (contract); well-formed is checked here. Outside the server's bounds it is
      // wrong whatever the hold's state (INVALID_ARGUMENT before anything is read); the
      // SKUs' own, lower maximum is checked in the transaction.
      ttlMs = v.duration("ttl", req.ttl);
      const { holdTtlMinMs, holdTtlMaxMs } = deps.settings;
      if (v.list.length === 0 && ttlMs !== undefined && (ttlMs < holdTtlMinMs || ttlMs > holdTtlMaxMs)) {
        throw ttlOutOfRange("ttl", ttlMs, holdTtlMinMs, holdTtlMaxMs);
      }
    },
    async (trx, locked, _call, ctx) => {
      const { row } = locked;
      if (row.type !== "HOLD") throw invalidTransition(row, "ExtendHold", "a HELD hold");
      if (locked.lapsed) {
        await expireNow(trx, locked, call, req.requestId, ctx);
        return new Refusal(holdExpired(row.id, row.expires_at!));
      }
      if (row.status === "EXPIRED") throw holdExpired(row.id, row.expires_at!);
      if (row.status !== "HELD") throw invalidTransition(row, "ExtendHold", "HELD");
      // Bounded by the SKUs' max_hold_ttl in force now (not a refusal: INVALID_ARGUMENT, not recorded).
      const skus = await query<SkuRow>(trx, `SELECT * FROM skus WHERE code = ANY(?::text[])`, [locked.lines.map((l) => l.sku_code)]);
      const { minMs, maxMs, boundSku } = ttlBounds(skus, deps.settings);
      if (ttlMs! < minMs || ttlMs! > maxMs) throw ttlOutOfRange("ttl", ttlMs!, minMs, maxMs, boundSku);
      const wanted = Math.max(row.expires_at!.getTime(), locked.now.getTime() + ttlMs!);
      if (wanted > row.max_expires_at!.getTime()) throw holdLifetimeExceeded(row.id, row.max_expires_at!);
      // No counter changes and no ledger event (there is no "extended" operation).
      const [updated] = await query<ReservationRow>(
        trx,
        `WITH h AS (
           UPDATE reservations SET expires_at = GREATEST(expires_at, ?::timestamptz), updated_at = now() WHERE id = ? RETURNING *
         ), lines AS (
           UPDATE reservation_items i SET expires_at = h.expires_at FROM h WHERE i.reservation_id = h.id
         )
         SELECT * FROM h`,
        [new Date(wanted), row.id],
      );
      return toReservation(updated!, locked.lines, locked.now);
    },
  );
}
