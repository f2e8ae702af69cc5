/**
 * 0008_planned_per_call: three statements of the waitlist that find entries by the
 * ids a transaction passes, as functions planned afresh on every call (`SET
 * plan_cache_mode = force_custom_plan`: on the ids themselves and the table as it is
 * then), in packages/schema/src/waitlist.ts:
 *
 * - `holdfast_promote_entries(entry_ids, reservation_ids)`: a promotion's entries
 *   become PROMOTED with their holds;
 * - `holdfast_close_waiting(new_status, ids)`: WAITING entries leave the queue
 *   (closeWaiting: LeaveWaitlist, a lapsed max_wait);
 * - `holdfast_settle_promoted(new_status, reservation_ids)`: PROMOTED entries follow
 *   their holds (settlePromotedEntries: confirm, release, expiry).
 *
 * Why: statements in a transaction run on a generic plan made once per connection
 * (query.ts), kept until the table's statistics change (autovacuum's ANALYZE). Each of
 * these matches a partial index of the queue by its status (WAITING, or WAITING and
 * PROMOTED), and a generic plan made while waitlist_entries was small and never
 * analyzed (a new database, the first minutes of a sale) scans that whole index and
 * filters by id: every waiting entry of every SKU read to change one, mostly under a
 * SKU's row lock. test/schema/waitlist.test.ts, with 2,000 buyers waiting on another
 * SKU: 2,006, 2,001 and 2,001 rows read to promote, close and settle one entry; 5, 1
 * and 1 planned per call.
 *
 * PostgreSQL 18 plans a SQL function's statements through the plan cache, where the
 * function's SET applies; older versions plan them without the parameters' values,
 * and this helps nothing there (Holdfast runs on 18: embedded, docker-compose.yml).
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

/**
 * The functions: signature (with the arguments' names, which CREATE needs and
 * COMMENT and DROP accept), body.
 */
const FUNCTIONS: readonly { signature: string; body: string }[] = [
  {
    signature: 'holdfast_promote_entries(entry_ids uuid[], reservation_ids uuid[])',
    body: `UPDATE waitlist_entries w
        SET status = 'PROMOTED', reservation_id = p.reservation_id, promoted_at = clock_timestamp(), updated_at = clock_timestamp()
       FROM unnest(entry_ids, reservation_ids) AS p(entry_id, reservation_id)
      WHERE w.id = p.entry_id AND w.status = 'WAITING'`,
  },
  {
    signature: 'holdfast_close_waiting(new_status text, ids uuid[])',
    body: `UPDATE waitlist_entries w SET status = new_status, closed_at = now(), updated_at = now()
      WHERE w.id = ANY(ids) AND w.status = 'WAITING'`,
  },
  {
    signature: 'holdfast_settle_promoted(new_status text, reservation_ids uuid[])',
    body: `UPDATE waitlist_entries w SET status = new_status, closed_at = now(), updated_at = now()
      WHERE w.reservation_id = ANY(reservation_ids) AND w.status = 'PROMOTED'`,
  },
];

const UP: readonly string[] = FUNCTIONS.flatMap(({ signature, body }) => [
  `CREATE FUNCTION ${signature}
     RETURNS SETOF waitlist_entries LANGUAGE sql VOLATILE
     SET plan_cache_mode = force_custom_plan
   AS $$
     ${body}
      RETURNING w.*
   $$`,
  `COMMENT ON FUNCTION ${signature} IS 'Planned on every call, never on a generic plan made while its table looked small (migration 0008).'`,
]);

const DOWN: readonly string[] = FUNCTIONS.map(({ signature }) => `DROP FUNCTION ${signature}`).reverse();

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
