/**
 * CheckConsistency: the inventory invariants checked online, read-only.
 *
 * Everything is read in ONE REPEATABLE READ READ ONLY transaction: its statements
 * see one snapshot, so a counter and the lines or ledger events it is
 * compared with are never from two different moments (under READ COMMITTED a hold
 * committed between two statements would show up as a mismatch that never existed).
 * now() is the transaction's start, so as_of and the overdue test share one clock.
 * Read-only, it takes no row lock and never blocks a writer.
 *
 * The checks are set-based, one statement each, whatever the number of SKUs: the
 * recount of the counters from the lines and the ledger (@holdfast/schema recount.ts,
 * shared with the expiry-worker's reconciliation, which repairs what this reports),
 * the lines that disagree with their header (same module), the overdue holds and
 * the missed waitlist promotions.
 */
import { create } from "@bufbuild/protobuf";
import {
  CheckConsistencyResponseSchema,
  ConsistencyViolationKind as Kind,
  ConsistencyViolationSchema,
  InventoryCounter as Counter,
  type CheckConsistencyRequest,
  type CheckConsistencyResponse,
  type ConsistencyViolation,
} from "@holdfast/contracts";
import { named, query, recountSkus, skuFilter, skuOrder, type LineDisagreement, type SkuRecount } from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { ts } from "@holdfast/core";
import { skuNotFound } from "@holdfast/core";

/**
 * The waitlist entry of a checked SKU that should already have been promoted, if
 * any. The LATERAL reads waitlist_entries_waiting_sku_seq_idx (partial on WAITING,
 * quantity INCLUDEd) in queue order: under STRICT_FIFO the head, under FIRST_FIT the
 * first entry that fits; the join keeps it only if it fits in available, i.e. only
 * if a promotion was missed.
 */
const missedPromotions = `
SELECT t.sku_code, t.policy, inv.available,
       w.id AS waitlist_entry_id, w.quantity AS waitlist_quantity, w.position AS waitlist_position
  FROM (SELECT s.code AS sku_code, coalesce(s.waitlist_promotion_policy, 'STRICT_FIFO') AS policy
          FROM skus s
         WHERE cardinality($skus::text[]) = 0 OR s.code = ANY($skus::text[])) t
  JOIN inventory inv ON inv.sku_code = t.sku_code
  JOIN LATERAL (
         SELECT w.id, w.quantity,
                1 + (SELECT count(*) FROM waitlist_entries x
                      WHERE x.sku_code = w.sku_code AND x.status = 'WAITING' AND x.seq < w.seq) AS position
           FROM waitlist_entries w
          WHERE w.sku_code = t.sku_code AND w.status = 'WAITING'
            -- An entry past its own deadline is dead (the worker just has not swept it).
            AND (w.expires_at IS NULL OR w.expires_at > now())
            AND (t.policy = 'STRICT_FIFO' OR w.quantity <= inv.available)
          ORDER BY w.seq
          LIMIT 1
       ) w ON w.quantity <= inv.available
 ORDER BY t.sku_code`;

/**
 * HELD holds past expires_at by more than the grace, per line of a checked SKU: a
 * range of the partial reservations_held_expires_at_idx.
 */
const overdueHolds = (filtered: boolean) => `
SELECT i.sku_code, r.id AS reservation_id, r.expires_at,
       (extract(epoch from now() - r.expires_at) * 1000)::bigint AS overdue_ms
  FROM reservations r
  JOIN reservation_items i ON i.reservation_id = r.id
 WHERE r.status = 'HELD' AND r.expires_at < now() - $grace::bigint * interval '1 millisecond'
   ${skuFilter("i.sku_code", filtered)}`;

interface MissedPromotion {
  sku_code: string;
  policy: string;
  available: number;
  waitlist_entry_id: string;
  waitlist_quantity: number;
  waitlist_position: number;
}

interface OverdueHold {
  sku_code: string;
  reservation_id: string;
  expires_at: Date;
  overdue_ms: number;
}

type Fields = { counter?: Counter; expected?: number; actual?: number; detail: string; reservationId?: string; waitlistEntryId?: string };

const violation = (sku: string, kind: Kind, f: Fields): ConsistencyViolation =>
  create(ConsistencyViolationSchema, {
    sku,
    kind,
    counter: f.counter ?? Counter.UNSPECIFIED,
    expected: BigInt(f.expected ?? 0),
    actual: BigInt(f.actual ?? 0),
    detail: f.detail,
    reservationId: f.reservationId ?? "",
    waitlistEntryId: f.waitlistEntryId ?? "",
  });

const COUNTER_NAMES: Record<"on_hand" | "reserved" | "allocated" | "available", Counter> = {
  on_hand: Counter.ON_HAND,
  reserved: Counter.RESERVED,
  allocated: Counter.ALLOCATED,
  available: Counter.AVAILABLE,
};

/** The violations of one SKU's counters (line sums by the header's status, see recount.ts). */
function skuViolations(f: SkuRecount): ConsistencyViolation[] {
  const out: ConsistencyViolation[] = [];
  const sku = f.sku_code;
  for (const name of ["on_hand", "reserved", "allocated", "available"] as const) {
    if (f[name] < 0) out.push(violation(sku, Kind.NEGATIVE_COUNTER, { counter: COUNTER_NAMES[name], expected: 0, actual: f[name], detail: `${name} is ${f[name]}, below 0` }));
  }
  const derived = f.on_hand - f.reserved - f.allocated;
  if (f.available !== derived) {
    out.push(
      violation(sku, Kind.AVAILABLE_MISMATCH, {
        counter: Counter.AVAILABLE,
        expected: derived,
        actual: f.available,
        detail: `available is ${f.available}, on_hand - reserved - allocated is ${derived}`,
      }),
    );
  }
  for (const [name, lines, status, kind] of [
    ["reserved", f.lines_held, "HELD", Kind.RESERVED_MISMATCH],
    ["allocated", f.lines_allocated, "ALLOCATED", Kind.ALLOCATED_MISMATCH],
  ] as const) {
    if (f[name] !== lines) {
      out.push(
        violation(sku, kind, {
          counter: COUNTER_NAMES[name],
          expected: lines,
          actual: f[name],
          detail: `${name} is ${f[name]}, the lines of ${status} reservations sum to ${lines}`,
        }),
      );
    }
  }
  for (const [name, ledger] of [
    ["on_hand", f.ledger_on_hand],
    ["reserved", f.ledger_reserved],
    ["allocated", f.ledger_allocated],
  ] as const) {
    if (f[name] !== ledger) {
      out.push(
        violation(sku, Kind.LEDGER_MISMATCH, {
          counter: COUNTER_NAMES[name],
          expected: ledger,
          actual: f[name],
          detail: `${name} is ${f[name]}, replaying the ledger gives ${ledger}`,
        }),
      );
    }
  }
  return out;
}

function missedPromotionViolation(f: MissedPromotion): ConsistencyViolation {
  const which = f.policy === "FIRST_FIT" ? `the first WAITING entry that fits (position ${f.waitlist_position})` : "the head of the waitlist (STRICT_FIFO)";
  return violation(f.sku_code, Kind.WAITLIST_NOT_PROMOTED, {
    detail: `${which} wants ${f.waitlist_quantity} units and ${f.available} are available, but it was not promoted`,
    waitlistEntryId: f.waitlist_entry_id,
  });
}

function overdueViolation(f: OverdueHold): ConsistencyViolation {
  return violation(f.sku_code, Kind.OVERDUE_HOLD, {
    reservationId: f.reservation_id,
    detail: `hold ${f.reservation_id} expired at ${f.expires_at.toISOString()}, ${f.overdue_ms} ms ago: past the grace, the expiry worker is behind or down`,
  });
}

/**
 * A line/header disagreement as violations, reported
 * against each counter it distorts (RESERVED for HELD on either side, ALLOCATED for
 * ALLOCATED on either side): expected is what the line contributes to that counter
 * by its header's status, actual what its own status copy says. A HELD line whose
 * expires_at copy differs is a RESERVED_MISMATCH whose expected / actual are the
 * header's and the line's expire times (ms since the epoch; 0 = none).
 */
function lineViolations(f: LineDisagreement): ConsistencyViolation[] {
  const { sku_code: sku, reservation_id: reservationId } = f;
  const out: ConsistencyViolation[] = [];
  if (f.line_status !== f.header_status) {
    const detail = `line of reservation ${reservationId} is ${f.line_status} but its reservation is ${f.header_status}`;
    for (const [status, kind, counter] of [
      ["HELD", Kind.RESERVED_MISMATCH, Counter.RESERVED],
      ["ALLOCATED", Kind.ALLOCATED_MISMATCH, Counter.ALLOCATED],
    ] as const) {
      if (f.header_status !== status && f.line_status !== status) continue;
      const expected = f.header_status === status ? f.quantity : 0;
      const actual = f.line_status === status ? f.quantity : 0;
      out.push(violation(sku, kind, { counter, expected, actual, detail, reservationId }));
    }
  } else {
    const header = f.expires_at?.getTime() ?? 0;
    const line = f.line_expires_at?.getTime() ?? 0;
    out.push(
      violation(sku, Kind.RESERVED_MISMATCH, {
        counter: Counter.RESERVED,
        expected: header,
        actual: line,
        detail: `line of HELD reservation ${reservationId} expires at ${f.line_expires_at?.toISOString() ?? "never"} but its reservation at ${f.expires_at?.toISOString() ?? "never"}`,
        reservationId,
      }),
    );
  }
  return out;
}

/** SKU order (byte-wise), then kind, then counter, then the resource concerned. */
function compareViolations(a: ConsistencyViolation, b: ConsistencyViolation): number {
  const text = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);
  return (
    text(a.sku, b.sku) ||
    a.kind - b.kind ||
    a.counter - b.counter ||
    text(a.reservationId, b.reservationId) ||
    text(a.waitlistEntryId, b.waitlistEntryId)
  );
}

export async function checkConsistency(deps: Deps, _call: Call, req: CheckConsistencyRequest): Promise<CheckConsistencyResponse> {
  const skus = skuOrder(req.skus);

  return deps.db.transaction(
    async (trx) => {
      // First statement: takes the snapshot, reads the clock and finds unknown codes.
      const [head] = await query<{ as_of: Date; unknown: string[] }>(
        trx,
        `SELECT now() AS as_of,
                ARRAY(SELECT q.code FROM unnest(?::text[]) AS q(code)
                       WHERE NOT EXISTS (SELECT 1 FROM skus s WHERE s.code = q.code)) AS unknown`,
        [skus],
      );
      if (head.unknown.length > 0) throw skuNotFound(head.unknown);

      const filtered = skus.length > 0;
      const recount = await recountSkus(trx, filtered ? skus : null);
      const overdue = await query<OverdueHold>(trx, ...named(overdueHolds(filtered), { skus, grace: deps.settings.overdueHoldGraceMs }));
      const missed = await query<MissedPromotion>(trx, ...named(missedPromotions, { skus }));

      const violations = [
        ...recount.skus.flatMap(skuViolations),
        ...recount.disagreements.flatMap(lineViolations),
        ...overdue.map(overdueViolation),
        ...missed.map(missedPromotionViolation),
      ].sort(compareViolations);
      return create(CheckConsistencyResponseSchema, {
        consistent: violations.length === 0,
        violations,
        skusChecked: BigInt(recount.skus.length),
        asOf: ts(head.as_of),
      });
    },
    { isolationLevel: "repeatable read", readOnly: true },
  );
}
