// The attempt rate limiter (packages/schema/src/fairness.ts, ADMIT_ATTEMPTS) judges an
// attempt at the moment it holds the (SKU, customer) row, not when its statement began.
// A CI run found the race: an attempt that waited for the row while others of the same
// customer were admitted got a retry-after longer than the window (10,003 ms of 10,000).
import { expect } from "chai";
import type { Knex } from "knex";
import { admitAttempts, query, transaction, type Db } from "@holdfast/schema";
import { databaseFixture } from "../support/database.js";
import { untilALockWait } from "../support/wait.js";

describe("shared schema: the attempt rate limiter", () => {
  // One connection holds the customer's row, one runs the attempt, one watches.
  const fx = databaseFixture("fairness", 3);
  let knex: Knex;
  const WINDOW_MS = 10_000;

  before(async () => {
    knex = fx.knex;
    await query(
      knex,
      `INSERT INTO skus (code, name, rate_limit_max_attempts, rate_limit_window_ms)
       SELECT code, code, n, ? FROM (VALUES ('RL-2', 2), ('RL-3', 3), ('RL-A', 5), ('RL-B', 5), ('RL-LOW', 3)) AS v(code, n)`,
      [WINDOW_MS],
    );
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
   * Runs an attempt of `customer` on `skus` while the test holds the customer's row of
   * `heldSku` (which must exist): once the attempt waits for it, `meanwhile` runs in the
   * holding transaction, which then commits. The attempt's admissions, and what
   * `meanwhile` returned.
   */
  async function attemptWaitingFor<T>(heldSku: string, customer: string, skus: string[], meanwhile: (trx: Db) => Promise<T>) {
    let attempt!: ReturnType<typeof admitAttempts>;
    const during = await transaction(knex, async (trx) => {
      await query(trx, `SELECT 1 FROM customer_attempt_windows WHERE sku_code = ? AND customer_id = ? FOR UPDATE`, [heldSku, customer]);
      attempt = admitAttempts(knex, customer, skus);
      await untilALockWait(knex, "the attempt waiting for the customer's row");
      return meanwhile(trx);
    });
    return { admissions: await attempt, during };
  }

  /**
   * An attempt of `customer` on `sku` that waited for its row while two attempts that
   * won it were admitted: the log it finds holds two times, both newer than its start.
   */
  async function attemptThatWaitedBehindTwo(sku: string, customer: string) {
    expect((await admitAttempts(knex, customer, [sku]))[0]!.admitted, "the row's first attempt").to.equal(true);
    const { admissions } = await attemptWaitingFor(sku, customer, [sku], (trx) =>
      query(
        trx,
        `UPDATE customer_attempt_windows
            SET admitted = ARRAY[clock_timestamp(), clock_timestamp()]::timestamptz[],
                last_attempt_at = clock_timestamp(), expires_at = clock_timestamp() + window_ms * interval '1 millisecond'
          WHERE sku_code = ? AND customer_id = ?`,
        [sku, customer],
      ),
    );
    return admissions[0]!;
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

  it("stamps a new row of a multi-SKU attempt when it is inserted, after the wait for an earlier SKU's row", async () => {
    // RL-A's row exists and is held; RL-B's does not: the attempt inserts it after RL-A's wait.
    await admitAttempts(knex, "multi", ["RL-A"]);
    const { admissions, during } = await attemptWaitingFor("RL-A", "multi", ["RL-B", "RL-A"], async (trx) => {
      const [row] = await query<{ at: string }>(trx, `SELECT clock_timestamp()::text AS at`);
      return row!.at;
    });
    expect(admissions.map((a) => [a.sku, a.admitted])).to.deep.equal([["RL-A", true], ["RL-B", true]]);
    const [b] = await query<{ after_the_wait: boolean }>(
      knex,
      `SELECT admitted[1] >= ?::timestamptz AND last_attempt_at = admitted[1] AS after_the_wait FROM customer_attempt_windows WHERE sku_code = 'RL-B' AND customer_id = 'multi'`,
      [during],
    );
    expect(b!.after_the_wait, "RL-B's admission time is after the row of RL-A was let go").to.equal(true);
  });

  it("refuses, and does not fail, once UpdateSku has lowered the limit below what the log holds", async () => {
    for (let i = 0; i < 3; i++) expect((await admitAttempts(knex, "lowered", ["RL-LOW"]))[0]!.admitted).to.equal(true);
    const [before] = await query<{ newest: string }>(knex, `SELECT admitted[3]::text AS newest FROM customer_attempt_windows WHERE sku_code = 'RL-LOW' AND customer_id = 'lowered'`);
    await query(knex, `UPDATE skus SET rate_limit_max_attempts = 1 WHERE code = 'RL-LOW'`);
    const [refused] = await admitAttempts(knex, "lowered", ["RL-LOW"]);
    expect(refused).to.include({ admitted: false, maxAttempts: 1 });
    expect(refused!.retryAfterMs).to.be.greaterThan(0).and.at.most(WINDOW_MS);
    // Every admitted time is kept (a limit raised again counts them all); under the limit
    // of 1 the next attempt is admitted when the newest leaves the window, not before.
    const [after] = await query<{ logged: number; newest_kept: boolean; retry_after_ms: number }>(
      knex,
      `SELECT cardinality(admitted) AS logged, admitted[3] = ?::timestamptz AS newest_kept,
              ceil(extract(epoch FROM admitted[3] + window_ms * interval '1 millisecond' - last_attempt_at) * 1000)::int AS retry_after_ms
         FROM customer_attempt_windows WHERE sku_code = 'RL-LOW' AND customer_id = 'lowered'`,
      [before!.newest],
    );
    expect(after).to.deep.equal({ logged: 3, newest_kept: true, retry_after_ms: refused!.retryAfterMs });
  });

  it("keeps every admitted time when a refusal judged by an older, lower limit meets a log that a raised one filled", async () => {
    // The attempt reads a limit of 1; while it waits for the row, the limit becomes 5 and two
    // more attempts are admitted. It is refused by the limit it read, and erases nothing.
    await query(knex, `UPDATE skus SET rate_limit_max_attempts = 1 WHERE code = 'RL-2'`);
    await admitAttempts(knex, "raised", ["RL-2"]);
    const { admissions } = await attemptWaitingFor("RL-2", "raised", ["RL-2"], (trx) =>
      query(
        trx,
        `UPDATE customer_attempt_windows
            SET admitted = admitted || ARRAY[clock_timestamp(), clock_timestamp()]::timestamptz[], max_attempts = 5
          WHERE sku_code = 'RL-2' AND customer_id = 'raised'`,
      ),
    );
    expect(admissions[0]).to.include({ admitted: false, maxAttempts: 1 });
    expect((await windowOf("RL-2", "raised")).logged).to.equal(3);
    await query(knex, `UPDATE skus SET rate_limit_max_attempts = 2 WHERE code = 'RL-2'`);
  });
});
