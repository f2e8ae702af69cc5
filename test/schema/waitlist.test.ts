// The waitlist's updates by id (packages/schema/src/waitlist.ts: a promotion, a leave,
// a promoted entry following its hold) against a real PostgreSQL: they find the
// entries they change by their ids, whatever the table's statistics say. Transactions
// run on generic plans made once per connection (query.ts), and plans made while
// waitlist_entries was small and never analyzed (a new database, the first minutes of
// a sale) read every WAITING entry of every SKU to change one (migration 0008).
import { expect } from "chai";
import { DEFAULT_HOLD_TERMS, closeWaiting, promoteWaiting, query, settlePromotedEntries, transaction, type Db, type WaitlistEntryRow } from "@holdfast/schema";
import { databaseFixture } from "../support/database.js";

const ORIGIN = { actor: "test", requestId: null };

describe("shared schema: a waitlist promotion", () => {
  // One connection: the plan made by the first promotion is the one the second uses.
  const fx = databaseFixture("waitlist-plan", 1);

  /** Units back on the shelf, and customers `from`.. WAITING for one unit each, as the counters say. */
  async function waiting(sku: string, customers: number, onHand: number, from = 1): Promise<void> {
    await query(fx.knex, `INSERT INTO skus (code, name) VALUES (?, ?) ON CONFLICT DO NOTHING`, [sku, sku]);
    await query(
      fx.knex,
      `INSERT INTO inventory (sku_code, on_hand) VALUES (?, 0) ON CONFLICT DO NOTHING`,
      [sku],
    );
    await query(
      fx.knex,
      `INSERT INTO waitlist_entries (sku_code, customer_id, quantity, caller, request_id)
       SELECT ?, 'c-' || n, 1, 'service:test', 'w-' || ? || '-' || n FROM generate_series(?::int, ?::int) AS n`,
      [sku, sku, from, from + customers - 1],
    );
    await query(
      fx.knex,
      `UPDATE inventory SET on_hand = on_hand + ?, waitlist_count = waitlist_count + ?, waitlist_units = waitlist_units + ?, version = version + 1
        WHERE sku_code = ?`,
      [onHand, customers, customers, sku],
    );
  }

  /** Rows of waitlist_entries this transaction has read so far: by sequential scans, and fetched through its indexes. */
  const entriesRead = async (trx: Db) =>
    (
      await query<{ n: number }>(
        trx,
        `SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::int AS n FROM pg_stat_xact_user_tables WHERE relname = 'waitlist_entries'`,
      )
    )[0]!.n;

  /** Runs `work` in a transaction; what it returned and the rows of waitlist_entries it read. */
  const reading = <T>(work: (trx: Db) => Promise<T>) =>
    transaction(fx.knex, async (trx) => {
      const before = await entriesRead(trx);
      const value = await work(trx);
      return { value, read: (await entriesRead(trx)) - before };
    });
  const entry = async (sku: string, customer: string) =>
    (await query<WaitlistEntryRow>(fx.knex, `SELECT * FROM waitlist_entries WHERE sku_code = ? AND customer_id = ?`, [sku, customer]))[0]!;

  it("finds the entries it promotes, closes or settles by id, not by reading every waiting entry, even when planned on a table that looked empty", async () => {
    // No ANALYZE during the test: the plans made below must stay the ones used.
    await query(fx.knex, `ALTER TABLE waitlist_entries SET (autovacuum_enabled = false)`);
    const [table] = await query<{ reltuples: number }>(fx.knex, "SELECT reltuples FROM pg_class WHERE relname = 'waitlist_entries'");
    expect(table!.reltuples, "never analyzed, as in a new database").to.equal(-1);

    // The first promotion, leave and settling, on a table of three entries: their statements are planned now.
    await waiting("WL-A", 2, 1);
    const first = await transaction(fx.knex, (trx) => promoteWaiting(trx, ["WL-A"], ORIGIN, DEFAULT_HOLD_TERMS));
    expect(first.map((p) => p.entry.status)).to.deep.equal(["PROMOTED"]);
    const leaving = await entry("WL-A", "c-2");
    await transaction(fx.knex, (trx) => closeWaiting(trx, "WL-A", [leaving], "CANCELLED"));
    await transaction(fx.knex, (trx) => settlePromotedEntries(trx, [first[0]!.reservationId], "CANCELLED"));

    // Then a queue of 2,000 on another SKU, and two more buyers waiting on this one.
    await waiting("WL-B", 2_000, 0);
    await waiting("WL-A", 2, 1, 3);
    const promoted = await reading((trx) => promoteWaiting(trx, ["WL-A"], ORIGIN, DEFAULT_HOLD_TERMS));
    expect(promoted.value.map((p) => [p.entry.customer_id, p.entry.status])).to.deep.equal([["c-3", "PROMOTED"]]);
    const leaver = await entry("WL-A", "c-4");
    const left = await reading((trx) => closeWaiting(trx, "WL-A", [leaver], "CANCELLED"));
    expect(left.value.map((e) => [e.customer_id, e.status])).to.deep.equal([["c-4", "CANCELLED"]]);
    const settled = await reading((trx) => settlePromotedEntries(trx, [promoted.value[0]!.reservationId], "CONFIRMED"));
    expect(settled.value.map((e) => [e.customer_id, e.status])).to.deep.equal([["c-3", "CONFIRMED"]]);
    // WL-A's own entries (the lapsed-entry sweep, the head, the update), not WL-B's queue.
    expect([promoted.read, left.read, settled.read], "rows of waitlist_entries read to promote, close, settle").to.satisfy((reads: number[]) =>
      reads.every((n) => n >= 1 && n <= 20),
    );
  });
});
