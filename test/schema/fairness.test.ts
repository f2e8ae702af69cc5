// The attempt rate limiter (packages/schema/src/fairness.ts, ADMIT_ATTEMPTS) judges an
// attempt at the moment it holds the (SKU, customer) row, not when its statement began.
// A CI run found the race: an attempt that waited for the row while others of the same
// customer were admitted got a retry-after longer than the window (10,003 ms of 10,000).
import { expect } from "chai";
import type { Knex } from "knex";
import { admitAttempts, createKnex, query, transaction } from "@holdfast/schema";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { untilALockWait } from "../support/wait.js";

describe("shared schema: the attempt rate limiter", () => {
  let db: TestDatabase;
  let knex: Knex;
  const WINDOW_MS = 10_000;

  before(async () => {
    db = await createTestDatabase("fairness");
    // One connection holds the customer's row, one runs the attempt, one watches.
    knex = createKnex({ url: db.url, poolMax: 3 });
    await query(knex, `INSERT INTO skus (code, name, rate_limit_max_attempts, rate_limit_window_ms) VALUES ('RL-2', 'RL-2', 2, ?), ('RL-3', 'RL-3', 3, ?)`, [WINDOW_MS, WINDOW_MS]);
  });
  after(async () => {
    await knex?.destroy();
    await db?.drop();
  });

  /** The customer's row, judged in SQL (microseconds; a JS Date keeps milliseconds). */
  const windowOf = async (sku: string, customer: string) =>
    (
      await query<{ logged: number; in_order: boolean; attempt_is_newest: boolean; expires_a_window_after_newest: boolean }>(
        knex,
        `SELECT cardinality(admitted) AS logged,
                admitted = ARRAY(SELECT a FROM unnest(admitted) AS a ORDER BY a) AS in_order,
                last_attempt_at >= ALL(admitted) AS attempt_is_newest,
                expires_at = admitted[cardinality(admitted)] + window_ms * interval '1 millisecond' AS expires_a_window_after_newest
           FROM customer_attempt_windows WHERE sku_code = ? AND customer_id = ?`,
        [sku, customer],
      )
    )[0]!;

  /**
   * Starts an attempt of `customer` on `sku` while the test holds its row, waits until the
   * attempt waits for it, then leaves two admissions in the log, both newer than the
   * attempt's start (as two attempts that won the row would have), and lets it go.
   */
  async function attemptThatWaitedBehindTwo(sku: string, customer: string) {
    expect((await admitAttempts(knex, customer, [sku]))[0]!.admitted, "the row's first attempt").to.equal(true);
    let attempt!: ReturnType<typeof admitAttempts>;
    await transaction(knex, async (trx) => {
      await query(trx, `SELECT 1 FROM customer_attempt_windows WHERE sku_code = ? AND customer_id = ? FOR UPDATE`, [sku, customer]);
      attempt = admitAttempts(knex, customer, [sku]);
      await untilALockWait(knex, "the attempt waiting for the customer's row");
      await query(
        trx,
        `UPDATE customer_attempt_windows
            SET admitted = ARRAY[clock_timestamp(), clock_timestamp()]::timestamptz[],
                last_attempt_at = clock_timestamp(), expires_at = clock_timestamp() + window_ms * interval '1 millisecond'
          WHERE sku_code = ? AND customer_id = ?`,
        [sku, customer],
      );
    });
    return (await attempt)[0]!;
  }

  it("refuses an attempt that waited while the window filled, with a retry-after within the window", async () => {
    // Max 2, and two in the log when it gets the row. Judged at its start, the log's times
    // would be in its future and the wait longer than the window.
    const refused = await attemptThatWaitedBehindTwo("RL-2", "waited");
    expect(refused.admitted).to.equal(false);
    expect(refused.retryAfterMs).to.be.greaterThan(0).and.at.most(WINDOW_MS);
    expect(await windowOf("RL-2", "waited")).to.include({ logged: 2, attempt_is_newest: true });
  });

  it("logs an attempt admitted after a wait after the times logged while it waited", async () => {
    // Max 3, and two in the log when it gets the row: admitted as the third, last in the log.
    const admitted = await attemptThatWaitedBehindTwo("RL-3", "waited");
    expect(admitted.admitted).to.equal(true);
    expect(await windowOf("RL-3", "waited")).to.deep.equal({ logged: 3, in_order: true, attempt_is_newest: true, expires_a_window_after_newest: true });
  });
});
