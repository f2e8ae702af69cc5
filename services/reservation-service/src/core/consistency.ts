/**
 * CheckConsistency: the inventory invariants checked online, read-only.
 *
 * Everything is read in ONE REPEATABLE READ READ ONLY transaction: its three
 * statements see one snapshot, so a counter and the lines or ledger events it is
 * compared with are never from two different moments (under READ COMMITTED a hold
 * committed between two statements would show up as a mismatch that never existed).
 * now() is the transaction's start, so as_of and the overdue test share one clock.
 * Read-only, it takes no row lock and never blocks a writer.
 *
 * The checks are set-based: one statement computes every per-SKU aggregate with
 * GROUP BY, one lists the per-reservation findings; the cost does not grow with round
 * trips per SKU.
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
import { CHECK_CONSISTENCY_SKUS_MAX, query, skuOrder } from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { ts } from "@holdfast/core";
import { skuNotFound } from "@holdfast/core";
import { Violations } from "@holdfast/core";

/** The SKUs checked: the requested ones, or the whole catalog when none is named. */
const TARGET = `SELECT s.code AS sku_code, coalesce(s.waitlist_promotion_policy, 'STRICT_FIFO') AS policy
                  FROM skus s
                 WHERE cardinality($skus::text[]) = 0 OR s.code = ANY($skus::text[])`;

/**
 * The SKU filter of a per-line or per-event scan: the requested codes as an array
 * parameter the planner can see (an index range per SKU), or no condition at all for
 * the whole catalog. Not "IN (SELECT ... FROM target)": behind a CTE the planner
 * cannot tell how few SKUs were asked for, and walks every line of the table.
 */
const skuFilter = (column: string, filtered: boolean) => (filtered ? `AND ${column} = ANY($skus::text[])` : "");

/** Binds `$name` parameters (this file's SQL has no other "$") as positional `?`. */
function bind(sql: string, values: Record<string, unknown>): [string, unknown[]] {
  const params: unknown[] = [];
  const text = sql.replace(/\$(\w+)/g, (_, name: string) => {
    if (!(name in values)) throw new Error(`no value for $${name}`);
    params.push(values[name]);
    return "?";
  });
  return [text, params];
}

/**
 * Per SKU: its counters, what its reservation lines and its ledger say they should
 * be, and the waitlist entry that should already have been promoted, if any.
 *
 * - line_sums: Σ quantities of the HELD / ALLOCATED lines (including holds past
 *   expire_time not swept yet), by the line's copy of its header's status, so that
 *   the partial indexes of live lines serve it (reservation_items_held_sku_expires_idx,
 *   reservation_items_allocated_sku_idx) and a SKU's closed history is never read. A
 *   line whose copy disagrees with its header is found by the per-reservation
 *   statement below and moved to its header's column (byHeaderStatus), so the counters
 *   are compared with the contract's "lines of HELD reservations" exactly.
 * - ledger: SUM of the deltas per SKU (audit_events_sku_id_idx); every event is
 *   internally consistent (CHECKs), so this is the replay of the ledger.
 * - the waitlist LATERAL reads waitlist_entries_waiting_sku_seq_idx (partial on
 *   WAITING, quantity INCLUDEd) in queue order: under STRICT_FIFO the head, under
 *   FIRST_FIT the first entry that fits; the join keeps it only if it fits in
 *   available, i.e. only if a promotion was missed.
 */
const perSku = (filtered: boolean) => `
WITH target AS (${TARGET}),
line_sums AS (
  SELECT i.sku_code,
         sum(i.quantity) FILTER (WHERE i.status = 'HELD') AS held,
         sum(i.quantity) FILTER (WHERE i.status = 'ALLOCATED') AS allocated
    FROM reservation_items i
   WHERE i.status IN ('HELD', 'ALLOCATED') ${skuFilter("i.sku_code", filtered)}
   GROUP BY i.sku_code
),
ledger AS (
  SELECT a.sku_code, sum(a.delta_on_hand) AS on_hand, sum(a.delta_reserved) AS reserved, sum(a.delta_allocated) AS allocated
    FROM audit_events a
   WHERE true ${skuFilter("a.sku_code", filtered)}
   GROUP BY a.sku_code
)
SELECT t.sku_code, t.policy,
       inv.on_hand, inv.reserved, inv.allocated, inv.available,
       coalesce(ls.held, 0) AS lines_held, coalesce(ls.allocated, 0) AS lines_allocated,
       coalesce(l.on_hand, 0) AS ledger_on_hand, coalesce(l.reserved, 0) AS ledger_reserved,
       coalesce(l.allocated, 0) AS ledger_allocated,
       w.id AS waitlist_entry_id, w.quantity AS waitlist_quantity, w.position AS waitlist_position
  FROM target t
  JOIN inventory inv ON inv.sku_code = t.sku_code
  LEFT JOIN line_sums ls ON ls.sku_code = t.sku_code
  LEFT JOIN ledger l ON l.sku_code = t.sku_code
  LEFT JOIN LATERAL (
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
 * Per reservation line of a checked SKU:
 * - OVERDUE: HELD headers past expires_at by more than the grace, a range of the
 *   partial reservations_held_expires_at_idx;
 * - the line's status (or, for a HELD hold, expires_at) copy differs from its
 *   header's (the copies reservation_items keeps so per-SKU questions need no join):
 *   from the active headers' side, and from the active lines' side (a line left HELD
 *   or ALLOCATED under a closed header). A disagreement between two final statuses
 *   (e.g. RELEASED vs EXPIRED) moves no counter and would need a scan of the SKU's
 *   whole history; it is not looked for.
 */
const perReservation = (filtered: boolean) => `
SELECT 'OVERDUE' AS finding, i.sku_code, r.id AS reservation_id, r.status AS header_status, i.status AS line_status,
       i.quantity, r.expires_at, i.expires_at AS line_expires_at,
       (extract(epoch from now() - r.expires_at) * 1000)::bigint AS overdue_ms
  FROM reservations r
  JOIN reservation_items i ON i.reservation_id = r.id
 WHERE r.status = 'HELD' AND r.expires_at < now() - $grace::bigint * interval '1 millisecond'
   ${skuFilter("i.sku_code", filtered)}
UNION ALL
SELECT 'LINE', i.sku_code, r.id, r.status, i.status, i.quantity, r.expires_at, i.expires_at, NULL
  FROM reservations r
  JOIN reservation_items i ON i.reservation_id = r.id
 WHERE r.status IN ('HELD', 'ALLOCATED')
   AND (i.status <> r.status OR (r.status = 'HELD' AND i.expires_at IS DISTINCT FROM r.expires_at))
   ${skuFilter("i.sku_code", filtered)}
UNION ALL
SELECT 'LINE', i.sku_code, r.id, r.status, i.status, i.quantity, r.expires_at, i.expires_at, NULL
  FROM reservation_items i
  JOIN reservations r ON r.id = i.reservation_id
 WHERE i.status IN ('HELD', 'ALLOCATED') AND r.status NOT IN ('HELD', 'ALLOCATED')
   ${skuFilter("i.sku_code", filtered)}`;

interface SkuFacts {
  sku_code: string;
  policy: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  lines_held: number;
  lines_allocated: number;
  ledger_on_hand: number;
  ledger_reserved: number;
  ledger_allocated: number;
  waitlist_entry_id: string | null;
  waitlist_quantity: number | null;
  waitlist_position: number | null;
}

interface ReservationFinding {
  finding: "OVERDUE" | "LINE";
  sku_code: string;
  reservation_id: string;
  header_status: string;
  line_status: string;
  quantity: number;
  expires_at: Date | null;
  line_expires_at: Date | null;
  overdue_ms: number | null;
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

/**
 * The line sums by the HEADER's status, which is what the contract compares the
 * counters with ("lines of HELD reservations"): the sums were read by the lines' own
 * status copies (so partial indexes serve them), and every line whose copy disagrees
 * with its header is among the LINE findings, so moving those lines to their header's
 * column gives the exact figure. The disagreement itself is reported once, per line.
 */
function byHeaderStatus(facts: readonly SkuFacts[], findings: readonly ReservationFinding[]): SkuFacts[] {
  const adjusted = new Map(facts.map((f) => [f.sku_code, { ...f }]));
  for (const line of findings) {
    const f = adjusted.get(line.sku_code);
    if (line.finding !== "LINE" || f === undefined || line.line_status === line.header_status) continue;
    if (line.line_status === "HELD") f.lines_held -= line.quantity;
    if (line.line_status === "ALLOCATED") f.lines_allocated -= line.quantity;
    if (line.header_status === "HELD") f.lines_held += line.quantity;
    if (line.header_status === "ALLOCATED") f.lines_allocated += line.quantity;
  }
  return [...adjusted.values()];
}

/** The violations of one SKU's counters (everything but the per-reservation findings). */
function skuViolations(f: SkuFacts): ConsistencyViolation[] {
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
  if (f.reserved !== f.lines_held) {
    out.push(
      violation(sku, Kind.RESERVED_MISMATCH, {
        counter: Counter.RESERVED,
        expected: f.lines_held,
        actual: f.reserved,
        detail: `reserved is ${f.reserved}, the lines of HELD reservations sum to ${f.lines_held}`,
      }),
    );
  }
  if (f.allocated !== f.lines_allocated) {
    out.push(
      violation(sku, Kind.ALLOCATED_MISMATCH, {
        counter: Counter.ALLOCATED,
        expected: f.lines_allocated,
        actual: f.allocated,
        detail: `allocated is ${f.allocated}, the lines of ALLOCATED reservations sum to ${f.lines_allocated}`,
      }),
    );
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
  if (f.waitlist_entry_id !== null) {
    const which = f.policy === "FIRST_FIT" ? `the first WAITING entry that fits (position ${f.waitlist_position})` : "the head of the waitlist (STRICT_FIFO)";
    out.push(
      violation(sku, Kind.WAITLIST_NOT_PROMOTED, {
        detail: `${which} wants ${f.waitlist_quantity} units and ${f.available} are available, but it was not promoted`,
        waitlistEntryId: f.waitlist_entry_id,
      }),
    );
  }
  return out;
}

/**
 * A per-reservation finding as violations. A line/header disagreement is reported
 * against each counter it distorts (RESERVED for HELD on either side, ALLOCATED for
 * ALLOCATED on either side): expected is what the line contributes to that counter
 * by its header's status, actual what its own status copy says. A HELD line whose
 * expires_at copy differs is a RESERVED_MISMATCH whose expected / actual are the
 * header's and the line's expire times (ms since the epoch; 0 = none).
 */
function reservationViolations(f: ReservationFinding): ConsistencyViolation[] {
  const { sku_code: sku, reservation_id: reservationId } = f;
  if (f.finding === "OVERDUE") {
    return [
      violation(sku, Kind.OVERDUE_HOLD, {
        reservationId,
        detail: `hold ${reservationId} expired at ${f.expires_at!.toISOString()}, ${f.overdue_ms} ms ago: past the grace, the expiry worker is behind or down`,
      }),
    ];
  }
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
  new Violations().skuList("skus", req.skus, 0, CHECK_CONSISTENCY_SKUS_MAX).throwIfAny();
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
      const facts = await query<SkuFacts>(trx, ...bind(perSku(filtered), { skus }));
      const findings = await query<ReservationFinding>(trx, ...bind(perReservation(filtered), { skus, grace: deps.settings.overdueHoldGraceMs }));

      const violations = [...byHeaderStatus(facts, findings).flatMap(skuViolations), ...findings.flatMap(reservationViolations)].sort(compareViolations);
      return create(CheckConsistencyResponseSchema, {
        consistent: violations.length === 0,
        violations,
        skusChecked: BigInt(facts.length),
        asOf: ts(head.as_of),
      });
    },
    { isolationLevel: "repeatable read", readOnly: true },
  );
}
