// Holds written straight into the database, consistently (headers, lines, counters
// and ledger through the same applyCounterChanges the services use), for tests and
// benchmarks that need thousands of them faster than the API can make them, or
// already overdue. Development tooling: never used by the services.
import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import { applyCounterChanges, query } from "@holdfast/schema";

export interface SeededHold {
  id: string;
  lines: { sku: string; quantity: number }[];
}

/**
 * Inserts `count` HELD holds. Hold i expires `expiresInMs(i)` from now (negative =
 * already overdue) and has one line on skus[i % k] or, for every `multiSkuEvery`-th
 * hold, two lines (skus[i % k] and skus[(i + 1) % k]); quantity 1 each. One
 * transaction; the SKUs must have the stock.
 */
export async function seedHolds(
  knex: Knex,
  opts: { prefix: string; skus: readonly string[]; count: number; expiresInMs: (i: number) => number; multiSkuEvery?: number },
): Promise<SeededHold[]> {
  const { skus } = opts;
  const holds: SeededHold[] = Array.from({ length: opts.count }, (_, i) => {
    const two = opts.multiSkuEvery !== undefined && skus.length > 1 && i % opts.multiSkuEvery === 0;
    const codes = two ? [skus[i % skus.length]!, skus[(i + 1) % skus.length]!] : [skus[i % skus.length]!];
    return { id: randomUUID(), lines: codes.map((sku) => ({ sku, quantity: 1 })) };
  });
  const lines = holds.flatMap((h) => h.lines.map((l) => ({ id: h.id, ...l })));
  await knex.transaction(async (trx) => {
    await query(
      trx,
      `INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at, created_at, updated_at)
       SELECT t.id, 'HOLD', 'HELD', 'seeded-customer', 'admin:seed', t.request_id, 'PESSIMISTIC',
              now() + t.ms * interval '1 millisecond', now() + interval '1 day', now() - interval '1 hour', now() - interval '1 hour'
         FROM unnest(?::uuid[], ?::text[], ?::bigint[]) AS t(id, request_id, ms)`,
      [holds.map((h) => h.id), holds.map((_, i) => `${opts.prefix}-${i}`), holds.map((_, i) => Math.round(opts.expiresInMs(i)))],
    );
    await query(
      trx,
      `INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
       SELECT r.id, l.sku, l.quantity, 'HELD', r.expires_at, r.created_at
         FROM unnest(?::uuid[], ?::text[], ?::int[]) AS l(id, sku, quantity) JOIN reservations r ON r.id = l.id`,
      [lines.map((l) => l.id), lines.map((l) => l.sku), lines.map((l) => l.quantity)],
    );
    const applied = await applyCounterChanges(
      trx,
      lines.map((l) => ({ sku: l.sku, operation: "HOLD_CREATED" as const, reservationId: l.id, reserved: l.quantity })),
      { actor: "admin:seed", requestId: null },
    );
    if (applied.refused.length > 0) throw new Error(`seedHolds: not enough stock on ${applied.refused.join(", ")}`);
  });
  return holds;
}
