/**
 * The recount: what each SKU's counters should be, recomputed from its reservation
 * lines and from its ledger. CheckConsistency (reservation-service) reports the
 * differences as violations; reconciliation (expiry-worker) records them as findings
 * and repairs them. Both read the same statements, so they cannot disagree on what
 * drift is.
 *
 * The two statements must see ONE state of the books (a hold committed between them
 * would show as a mismatch that never existed). The caller provides that:
 * - a REPEATABLE READ transaction: one snapshot for both, read-only, no row lock, never
 *   blocks a writer (CheckConsistency, reconciliation's check pass); or
 * - READ COMMITTED after locking the SKUs' inventory rows (lockInventoryRows): every
 *   writer changes a SKU's lines and counters in one transaction that takes that row
 *   lock before committing, so nothing that moves these SKUs' counters can commit
 *   while the lock is held (reconciliation's repair).
 *
 * Set-based: one statement for every per-SKU aggregate (GROUP BY), one for the lines
 * that disagree with their header; the cost does not grow with round trips per SKU.
 */
import { named, query, type Db } from './query.js';

/** One SKU's stored counters, and what its lines (by their header's status) and its ledger say. */
export interface SkuRecount {
  sku_code: string;
  on_hand: number;
  reserved: number;
  allocated: number;
  available: number;
  /** Σ quantity of the lines of HELD reservations (by the header's status). */
  lines_held: number;
  /** Σ quantity of the lines of ALLOCATED reservations (by the header's status). */
  lines_allocated: number;
  /** Σ of the SKU's ledger deltas: the ledger replayed (every event is internally consistent, by CHECK). */
  ledger_on_hand: number;
  ledger_reserved: number;
  ledger_allocated: number;
}

/**
 * A line whose status copy (or, for a HELD hold, expires_at copy) differs from its
 * header's. reservation_items keeps those copies so that per-SKU sums need no join;
 * a disagreement is a bug to report, and it moves the line between the sums.
 */
export interface LineDisagreement {
  sku_code: string;
  reservation_id: string;
  header_status: string;
  line_status: string;
  quantity: number;
  expires_at: Date | null;
  line_expires_at: Date | null;
}

export interface Recount {
  /** One per SKU that exists, in SKU order; line sums already by the header's status. */
  skus: SkuRecount[];
  disagreements: LineDisagreement[];
}

/**
 * The SKU filter of a per-line or per-event scan: the requested codes as an array
 * parameter the planner can see (an index range per SKU), or no condition at all for
 * the whole catalog. Not "IN (SELECT ... FROM target)": behind a CTE the planner
 * cannot tell how few SKUs were asked for, and walks every line of the table.
 */
export const skuFilter = (column: string, filtered: boolean): string => (filtered ? `AND ${column} = ANY($skus::text[])` : '');

/**
 * Per SKU: its counters and what its lines and its ledger say they should be.
 *
 * - line_sums: Σ quantities of the HELD / ALLOCATED lines (including holds past
 *   expire_time not swept yet), by the line's copy of its header's status, so that
 *   the partial indexes of live lines serve it (reservation_items_held_sku_expires_idx,
 *   reservation_items_allocated_sku_idx) and a SKU's closed history is never read.
 *   byHeaderStatus then moves the lines whose copy disagrees with their header.
 * - ledger: SUM of the deltas per SKU (audit_events_sku_id_idx).
 */
const perSku = (filtered: boolean) => `
WITH target AS (
  SELECT s.code AS sku_code FROM skus s WHERE cardinality($skus::text[]) = 0 OR s.code = ANY($skus::text[])
),
line_sums AS (
  SELECT i.sku_code,
         sum(i.quantity) FILTER (WHERE i.status = 'HELD') AS held,
         sum(i.quantity) FILTER (WHERE i.status = 'ALLOCATED') AS allocated
    FROM reservation_items i
   WHERE i.status IN ('HELD', 'ALLOCATED') ${skuFilter('i.sku_code', filtered)}
   GROUP BY i.sku_code
),
ledger AS (
  SELECT a.sku_code, sum(a.delta_on_hand) AS on_hand, sum(a.delta_reserved) AS reserved, sum(a.delta_allocated) AS allocated
    FROM audit_events a
   WHERE true ${skuFilter('a.sku_code', filtered)}
   GROUP BY a.sku_code
)
SELECT t.sku_code, inv.on_hand, inv.reserved, inv.allocated, inv.available,
       coalesce(ls.held, 0) AS lines_held, coalesce(ls.allocated, 0) AS lines_allocated,
       coalesce(l.on_hand, 0) AS ledger_on_hand, coalesce(l.reserved, 0) AS ledger_reserved,
       coalesce(l.allocated, 0) AS ledger_allocated
  FROM target t
  JOIN inventory inv ON inv.sku_code = t.sku_code
  LEFT JOIN line_sums ls ON ls.sku_code = t.sku_code
  LEFT JOIN ledger l ON l.sku_code = t.sku_code
 ORDER BY t.sku_code`;

/**
 * Lines whose status (or, for a HELD hold, expires_at) copy differs from the
 * header's: from the active headers' side, and from the active lines' side (a line
 * left HELD or ALLOCATED under a closed header). A disagreement between two final
 * statuses (e.g. RELEASED vs EXPIRED) moves no counter and would need a scan of the
 * SKU's whole history; it is not looked for.
 */
const disagreements = (filtered: boolean) => `
SELECT i.sku_code, r.id AS reservation_id, r.status AS header_status, i.status AS line_status,
       i.quantity, r.expires_at, i.expires_at AS line_expires_at
  FROM reservations r
  JOIN reservation_items i ON i.reservation_id = r.id
 WHERE r.status IN ('HELD', 'ALLOCATED')
   AND (i.status <> r.status OR (r.status = 'HELD' AND i.expires_at IS DISTINCT FROM r.expires_at))
   ${skuFilter('i.sku_code', filtered)}
UNION ALL
SELECT i.sku_code, r.id, r.status, i.status, i.quantity, r.expires_at, i.expires_at
  FROM reservation_items i
  JOIN reservations r ON r.id = i.reservation_id
 WHERE i.status IN ('HELD', 'ALLOCATED') AND r.status NOT IN ('HELD', 'ALLOCATED')
   ${skuFilter('i.sku_code', filtered)}
 ORDER BY 1, 2`;

/**
 * The line sums by the HEADER's status, which is what the contract compares the
 * counters with ("lines of HELD reservations"): the sums were read by the lines' own
 * status copies (so partial indexes serve them), and every line whose copy disagrees
 * with its header is among the disagreements, so moving those lines to their
 * header's column gives the exact figure.
 */
function byHeaderStatus(skus: readonly SkuRecount[], lines: readonly LineDisagreement[]): SkuRecount[] {
  const adjusted = new Map(skus.map((f) => [f.sku_code, { ...f }]));
  for (const line of lines) {
    const f = adjusted.get(line.sku_code);
    if (f === undefined || line.line_status === line.header_status) continue;
    if (line.line_status === 'HELD') f.lines_held -= line.quantity;
    if (line.line_status === 'ALLOCATED') f.lines_allocated -= line.quantity;
    if (line.header_status === 'HELD') f.lines_held += line.quantity;
    if (line.header_status === 'ALLOCATED') f.lines_allocated += line.quantity;
  }
  return [...adjusted.values()];
}

/**
 * Recounts `skus` (null = every SKU; codes that do not exist are simply absent from
 * the result): two statements, to be run in a transaction that makes them see one
 * state of the books (see the top of this file).
 */
export async function recountSkus(db: Db, skus: readonly string[] | null): Promise<Recount> {
  // An empty list is no SKU (not "every SKU", which the target's cardinality test would read it as).
  if (skus !== null && skus.length === 0) return { skus: [], disagreements: [] };
  const filtered = skus !== null;
  const values = { skus: skus ?? [] };
  const counts = await query<SkuRecount>(db, ...named(perSku(filtered), values));
  const lines = await query<LineDisagreement>(db, ...named(disagreements(filtered), values));
  return { skus: byHeaderStatus(counts, lines), disagreements: lines };
}
