// The inventory invariants, checked from outside the services with plain SQL: the
// tests run them after every burst of concurrent calls (test/support/invariants.ts
// asserts them), and the soak benchmark every minute (bench/soak.ts). They trust
// no service code; CheckConsistency is the services' own view of the same rules.
import type { Knex } from "knex";
import { query } from "./query.js";
import { ALLOCATION_RESERVATION_STATUSES } from "./rows.js";

interface CounterRow {
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  held_lines: number;
  allocated_lines: number;
  ledger_on_hand: number | null;
  ledger_reserved: number | null;
  ledger_allocated: number | null;
  events: number;
  last_on_hand: number | null;
  last_reserved: number | null;
  last_allocated: number | null;
  waitlist_count: number;
  waitlist_units: number;
  waiting_entries: number;
  waiting_units: number;
  first_fit: boolean;
  /** Quantity of the first WAITING entry (by seq) not past its own expires_at. */
  live_head: number | null;
  /** Smallest quantity among the WAITING entries not past their own expires_at. */
  live_smallest: number | null;
}

/**
 * The violations found (none: an empty list). Checks, per SKU (all SKUs, or only `skus`: then exactly one inventory row per
 * requested SKU, and an empty `skus` is an error, as it would check nothing):
 * - reserved = Σ quantity of HELD lines, allocated = Σ quantity of ALLOCATED lines;
 * - every line's status (and expires_at) equals its header's;
 * - no counter negative; available = on_hand − reserved − allocated;
 * - counters = Σ of the SKU's ledger deltas (ledger replay), and the last event's
 *   "after" values are the counters;
 * - every event: before + delta = after; per SKU in id order, event k's before =
 *   event k−1's after (the first event starts from 0);
 * - waitlist: waitlist_count = the number of WAITING entries and waitlist_units = Σ
 *   their quantities; no missed promotion: under STRICT_FIFO (policy NULL or
 *   STRICT_FIFO) the head (lowest seq among the WAITING entries not past their own
 *   expires_at) does not fit `available`, under FIRST_FIT no such entry fits;
 * - waitlist entries and their holds: a WAITING entry has no reservation_id; a
 *   PROMOTED entry's reservation is a HOLD, HELD, whose waitlist_entry_id is the
 *   entry; a CONFIRMED entry's reservation was confirmed (ALLOCATED, FULFILLED or
 *   CANCELLED) and names the entry; an EXPIRED or CANCELLED entry holds nothing (its
 *   hold, if any, is not HELD); every reservation with a waitlist_entry_id is that
 *   entry's reservation_id (no entry promoted twice);
 * - max_units_per_customer: no customer's live units of the SKU (ALLOCATED lines,
 *   HELD lines not past their expiry, WAITING entries) exceed it;
 * and, globally, that no reservation has zero lines.
 */
export async function inventoryInvariantViolations(db: Knex, skus?: string[]): Promise<string[]> {
  // An explicit but empty filter would check nothing at all: almost certainly a
  // bug in the caller (e.g. a SKU list computed from an empty result).
  if (skus !== undefined && skus.length === 0) {
    throw new RangeError("the explicit SKU filter is empty, so nothing would be checked (omit it to check every SKU)");
  }
  const filter = skus === undefined ? null : [...new Set(skus)];
  const violations: string[] = [];

  const rows = await query<CounterRow>(
    db,
    `SELECT i.sku_code, i.on_hand, i.reserved, i.allocated, i.available,
            coalesce((SELECT sum(l.quantity) FROM reservation_items l WHERE l.sku_code = i.sku_code AND l.status = 'HELD'), 0) AS held_lines,
            coalesce((SELECT sum(l.quantity) FROM reservation_items l WHERE l.sku_code = i.sku_code AND l.status = 'ALLOCATED'), 0) AS allocated_lines,
            e.ledger_on_hand, e.ledger_reserved, e.ledger_allocated, coalesce(e.events, 0) AS events,
            last.on_hand_after AS last_on_hand, last.reserved_after AS last_reserved, last.allocated_after AS last_allocated,
            i.waitlist_count, i.waitlist_units, w.waiting_entries, w.waiting_units,
            coalesce(s.waitlist_promotion_policy = 'FIRST_FIT', false) AS first_fit,
            (SELECT h.quantity FROM waitlist_entries h
              WHERE h.sku_code = i.sku_code AND h.status = 'WAITING' AND (h.expires_at IS NULL OR h.expires_at > now())
              ORDER BY h.seq LIMIT 1) AS live_head,
            (SELECT min(h.quantity) FROM waitlist_entries h
              WHERE h.sku_code = i.sku_code AND h.status = 'WAITING' AND (h.expires_at IS NULL OR h.expires_at > now())) AS live_smallest
       FROM inventory i
       JOIN skus s ON s.code = i.sku_code
       LEFT JOIN LATERAL (
         SELECT count(*) AS waiting_entries, coalesce(sum(quantity), 0) AS waiting_units
           FROM waitlist_entries w WHERE w.sku_code = i.sku_code AND w.status = 'WAITING'
       ) w ON true
       LEFT JOIN LATERAL (
         SELECT sum(delta_on_hand) AS ledger_on_hand, sum(delta_reserved) AS ledger_reserved,
                sum(delta_allocated) AS ledger_allocated, count(*) AS events
           FROM audit_events a WHERE a.sku_code = i.sku_code
       ) e ON true
       LEFT JOIN LATERAL (
         SELECT on_hand_after, reserved_after, allocated_after
           FROM audit_events a WHERE a.sku_code = i.sku_code ORDER BY a.id DESC LIMIT 1
       ) last ON true
      WHERE ?::text[] IS NULL OR i.sku_code = ANY(?::text[])
      ORDER BY i.sku_code`,
    [filter, filter],
  );
  if (filter !== null) {
    // Exactly one inventory row per requested SKU (sku_code is the primary key,
    // so a shortfall means a SKU the caller expected does not exist).
    const found = new Map<string, number>();
    for (const r of rows) found.set(r.sku_code, (found.get(r.sku_code) ?? 0) + 1);
    for (const sku of filter) {
      const count = found.get(sku) ?? 0;
      if (count !== 1) violations.push(`${sku}: ${count} inventory row(s), expected exactly 1`);
    }
  }
  for (const r of rows) {
    const where = r.sku_code;
    if (r.on_hand < 0) violations.push(`${where}: on_hand is negative (${r.on_hand})`);
    if (r.reserved < 0) violations.push(`${where}: reserved is negative (${r.reserved})`);
    if (r.allocated < 0) violations.push(`${where}: allocated is negative (${r.allocated})`);
    if (r.available < 0) violations.push(`${where}: available is negative (${r.available}): oversold`);
    if (r.available !== r.on_hand - r.reserved - r.allocated) {
      violations.push(`${where}: available ${r.available} != on_hand ${r.on_hand} - reserved ${r.reserved} - allocated ${r.allocated}`);
    }
    if (r.reserved !== r.held_lines) violations.push(`${where}: reserved ${r.reserved} != Σ HELD lines ${r.held_lines}`);
    if (r.allocated !== r.allocated_lines) violations.push(`${where}: allocated ${r.allocated} != Σ ALLOCATED lines ${r.allocated_lines}`);
    if (r.waitlist_count !== r.waiting_entries) violations.push(`${where}: waitlist_count ${r.waitlist_count} != WAITING entries ${r.waiting_entries}`);
    if (r.waitlist_units !== r.waiting_units) violations.push(`${where}: waitlist_units ${r.waitlist_units} != Σ WAITING quantities ${r.waiting_units}`);
    if (r.first_fit) {
      if (r.live_smallest !== null && r.live_smallest <= r.available) {
        violations.push(`${where}: missed promotion (FIRST_FIT): a WAITING entry for ${r.live_smallest} fits available ${r.available}`);
      }
    } else if (r.live_head !== null && r.live_head <= r.available) {
      violations.push(`${where}: missed promotion (STRICT_FIFO): the head WAITING entry for ${r.live_head} fits available ${r.available}`);
    }
    if (r.events === 0) {
      violations.push(`${where}: no ledger event at all (a SKU starts with SKU_CREATED)`);
      continue;
    }
    for (const [counter, value, replay, last] of [
      ["on_hand", r.on_hand, r.ledger_on_hand, r.last_on_hand],
      ["reserved", r.reserved, r.ledger_reserved, r.last_reserved],
      ["allocated", r.allocated, r.ledger_allocated, r.last_allocated],
    ] as const) {
      if (value !== replay) violations.push(`${where}: ${counter} ${value} != ledger replay (Σ deltas) ${replay}`);
      if (value !== last) violations.push(`${where}: ${counter} ${value} != the last ledger event's ${counter}_after ${last}`);
    }
  }

  // Lines whose copies of the header's status / expires_at have drifted.
  const drifted = await query<{ reservation_id: string; sku_code: string; header_status: string; line_status: string; header_expires: Date | null; line_expires: Date | null }>(
    db,
    `SELECT l.reservation_id, l.sku_code, r.status AS header_status, l.status AS line_status,
            r.expires_at AS header_expires, l.expires_at AS line_expires
       FROM reservation_items l JOIN reservations r ON r.id = l.reservation_id
      WHERE (l.status <> r.status OR l.expires_at IS DISTINCT FROM r.expires_at)
        AND (?::text[] IS NULL OR l.sku_code = ANY(?::text[]))
      ORDER BY l.sku_code, l.reservation_id`,
    [filter, filter],
  );
  for (const d of drifted) {
    if (d.header_status !== d.line_status) {
      violations.push(`${d.sku_code}: line of reservation ${d.reservation_id} is ${d.line_status} but its header is ${d.header_status}`);
    } else {
      violations.push(
        `${d.sku_code}: line of reservation ${d.reservation_id} expires at ${d.line_expires?.toISOString()} but its header at ${d.header_expires?.toISOString()}`,
      );
    }
  }

  // Every event's arithmetic, and the per-SKU chain in id order.
  const broken = await query<{
    id: number;
    sku_code: string;
    operation: string;
    arithmetic_ok: boolean;
    on_hand_before: number;
    reserved_before: number;
    allocated_before: number;
    prev_on_hand: number | null;
    prev_reserved: number | null;
    prev_allocated: number | null;
  }>(
    db,
    `SELECT * FROM (
       SELECT id, sku_code, operation,
              (on_hand_before + delta_on_hand = on_hand_after
               AND reserved_before + delta_reserved = reserved_after
               AND allocated_before + delta_allocated = allocated_after) AS arithmetic_ok,
              on_hand_before, reserved_before, allocated_before,
              lag(on_hand_after) OVER w AS prev_on_hand,
              lag(reserved_after) OVER w AS prev_reserved,
              lag(allocated_after) OVER w AS prev_allocated
         FROM audit_events
        WHERE ?::text[] IS NULL OR sku_code = ANY(?::text[])
       WINDOW w AS (PARTITION BY sku_code ORDER BY id)
     ) e
     WHERE NOT arithmetic_ok
        OR on_hand_before IS DISTINCT FROM coalesce(prev_on_hand, 0)
        OR reserved_before IS DISTINCT FROM coalesce(prev_reserved, 0)
        OR allocated_before IS DISTINCT FROM coalesce(prev_allocated, 0)
     ORDER BY sku_code, id`,
    [filter, filter],
  );
  for (const e of broken) {
    const at = `${e.sku_code}: ledger event ${e.id} (${e.operation})`;
    if (!e.arithmetic_ok) violations.push(`${at}: before + delta != after`);
    const prev = e.prev_on_hand === null ? "0 (first event)" : `the previous event's after`;
    if (e.on_hand_before !== (e.prev_on_hand ?? 0)) violations.push(`${at}: on_hand_before ${e.on_hand_before} != ${prev} ${e.prev_on_hand ?? 0}`);
    if (e.reserved_before !== (e.prev_reserved ?? 0)) violations.push(`${at}: reserved_before ${e.reserved_before} != ${prev} ${e.prev_reserved ?? 0}`);
    if (e.allocated_before !== (e.prev_allocated ?? 0)) {
      violations.push(`${at}: allocated_before ${e.allocated_before} != ${prev} ${e.prev_allocated ?? 0}`);
    }
  }

  // Waitlist entries against their holds, both ways.
  const entries = await query<{ id: string; sku_code: string; status: string; reservation_id: string | null; hold_type: string | null; hold_status: string | null; hold_entry: string | null }>(
    db,
    `SELECT w.id, w.sku_code, w.status, w.reservation_id, r.type AS hold_type, r.status AS hold_status, r.waitlist_entry_id AS hold_entry
       FROM waitlist_entries w LEFT JOIN reservations r ON r.id = w.reservation_id
      WHERE (?::text[] IS NULL OR w.sku_code = ANY(?::text[]))
        AND CASE w.status
              WHEN 'WAITING' THEN w.reservation_id IS NOT NULL
              WHEN 'PROMOTED' THEN r.id IS NULL OR r.type <> 'HOLD' OR r.status <> 'HELD' OR r.waitlist_entry_id IS DISTINCT FROM w.id
              WHEN 'CONFIRMED' THEN r.id IS NULL OR r.status <> ALL(?::text[]) OR r.waitlist_entry_id IS DISTINCT FROM w.id
              ELSE r.status = 'HELD'
            END
      ORDER BY w.sku_code, w.seq`,
    [filter, filter, [...ALLOCATION_RESERVATION_STATUSES]],
  );
  for (const e of entries) {
    const hold = e.reservation_id === null ? "none" : e.hold_status === null ? `${e.reservation_id} (missing)` : `${e.reservation_id} (${e.hold_type} ${e.hold_status}, waitlist_entry_id ${e.hold_entry})`;
    violations.push(`${e.sku_code}: waitlist entry ${e.id} is ${e.status} but its reservation is ${hold}`);
  }
  const strays = await query<{ id: string; status: string; waitlist_entry_id: string; sku_code: string | null; entry_reservation: string | null }>(
    db,
    `SELECT r.id, r.status, r.waitlist_entry_id, w.sku_code, w.reservation_id AS entry_reservation
       FROM reservations r LEFT JOIN waitlist_entries w ON w.id = r.waitlist_entry_id
      WHERE r.waitlist_entry_id IS NOT NULL AND w.reservation_id IS DISTINCT FROM r.id
        AND (?::text[] IS NULL OR w.sku_code = ANY(?::text[]) OR w.id IS NULL)
      ORDER BY r.id`,
    [filter, filter],
  );
  for (const r of strays) {
    violations.push(`${r.sku_code ?? "?"}: reservation ${r.id} (${r.status}) names waitlist entry ${r.waitlist_entry_id}, whose reservation is ${r.entry_reservation ?? "none"}`);
  }

  // SkuPolicy.max_units_per_customer: no customer has more live units of a limited SKU
  // (ALLOCATED lines, HELD lines not past their expiry, WAITING entries) than its limit.
  const overLimit = await query<{ sku_code: string; customer_id: string; units: number; max_units_per_customer: number }>(
    db,
    `SELECT u.sku_code, u.customer_id, sum(u.quantity)::int AS units, s.max_units_per_customer
       FROM (SELECT l.sku_code, r.customer_id, l.quantity
               FROM reservation_items l JOIN reservations r ON r.id = l.reservation_id
              WHERE l.status = 'ALLOCATED' OR (l.status = 'HELD' AND l.expires_at > now())
             UNION ALL
             SELECT w.sku_code, w.customer_id, w.quantity FROM waitlist_entries w WHERE w.status = 'WAITING') u
       JOIN skus s ON s.code = u.sku_code
      WHERE s.max_units_per_customer IS NOT NULL AND (?::text[] IS NULL OR u.sku_code = ANY(?::text[]))
      GROUP BY u.sku_code, u.customer_id, s.max_units_per_customer
     HAVING sum(u.quantity) > s.max_units_per_customer
      ORDER BY u.sku_code, u.customer_id`,
    [filter, filter],
  );
  for (const o of overLimit) {
    violations.push(`${o.sku_code}: customer ${o.customer_id} has ${o.units} live units, more than max_units_per_customer ${o.max_units_per_customer}`);
  }

  const empty = await query<{ id: string; status: string }>(
    db,
    `SELECT r.id, r.status FROM reservations r WHERE NOT EXISTS (SELECT 1 FROM reservation_items l WHERE l.reservation_id = r.id) ORDER BY r.id`,
  );
  for (const r of empty) violations.push(`reservation ${r.id} (${r.status}) has no lines`);

  return violations;
}
