/**
 * 0007_ledger_delta_shape: the ledger's "each operation moves the counters in exactly
 * one way" rule (`audit_events_delta_shape`, 0001_initial) is evaluated by an
 * IMMUTABLE plpgsql function, `holdfast_delta_shape_ok`. The same CASE, the same
 * constraint name, the same verdict for every row (test/schema/migrations.test.ts
 * compares the two on every operation and sign of the deltas).
 *
 * Why: PostgreSQL reads every CHECK expression of a table from its stored node tree
 * and prepares it once per statement that writes the table (ExecRelCheck), and this
 * CASE of eleven branches is 19 KB of node tree, two thirds of the ledger's and a
 * quarter of all the CHECKs a hold's statements prepare. A function call is a small
 * node; plpgsql compiles the body once per session. pgbench's one-statement hold on
 * 100 SKUs: +3 %, +9 %, +13 % in three alternated pairs (issue 8; docs/benchmarks.md,
 * "Reading the run above").
 *
 * NOT STRICT, like the CASE it replaces: a NULL argument gives what the CASE gives
 * (the columns are NOT NULL anyway). Re-adding the CHECK scans audit_events once
 * under the ACCESS EXCLUSIVE lock the DROP takes; every row passed the same rule.
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

/** The rule as 0001_initial wrote it, over the columns of audit_events: the function's body, and what `down` restores (the test migrates down to compare the two). */
const DELTA_SHAPE_CASE = `
      CASE operation
        WHEN 'SKU_CREATED' THEN
          delta_reserved = 0 AND delta_allocated = 0 AND delta_on_hand >= 0
          AND on_hand_before = 0 AND reserved_before = 0 AND allocated_before = 0
        WHEN 'STOCK_ADJUSTED' THEN delta_reserved = 0 AND delta_allocated = 0
        WHEN 'HOLD_CREATED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved > 0
        WHEN 'WAITLIST_PROMOTED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved > 0
        WHEN 'HOLD_CONFIRMED' THEN delta_on_hand = 0 AND delta_allocated > 0 AND delta_reserved = -delta_allocated
        WHEN 'HOLD_RELEASED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved < 0
        WHEN 'HOLD_EXPIRED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved < 0
        WHEN 'ALLOCATION_CREATED' THEN delta_on_hand = 0 AND delta_reserved = 0 AND delta_allocated > 0
        WHEN 'ALLOCATION_FULFILLED' THEN delta_reserved = 0 AND delta_allocated < 0 AND delta_on_hand = delta_allocated
        WHEN 'ALLOCATION_CANCELLED' THEN delta_on_hand = 0 AND delta_reserved = 0 AND delta_allocated < 0
        WHEN 'RECONCILIATION_REPAIR' THEN true
        ELSE false
      END`;

/** The function's arguments, in order: the columns the rule reads. */
const COLUMNS = ['operation', 'delta_on_hand', 'delta_reserved', 'delta_allocated', 'on_hand_before', 'reserved_before', 'allocated_before'];

const UP: readonly string[] = [
  // The parameters are named as the columns, so the body is the rule's text itself.
  `CREATE FUNCTION holdfast_delta_shape_ok(operation text, delta_on_hand bigint, delta_reserved bigint, delta_allocated bigint,
                                           on_hand_before bigint, reserved_before bigint, allocated_before bigint)
     RETURNS boolean LANGUAGE plpgsql IMMUTABLE
   AS $$
   BEGIN
     RETURN ${DELTA_SHAPE_CASE};
   END
   $$`,
  `COMMENT ON FUNCTION holdfast_delta_shape_ok(text, bigint, bigint, bigint, bigint, bigint, bigint) IS
     'CHECK audit_events_delta_shape: the one way each ledger operation may move the counters (migration 0007: a function, because PostgreSQL prepares a CHECK expression per statement).'`,
  `ALTER TABLE audit_events DROP CONSTRAINT audit_events_delta_shape,
     ADD CONSTRAINT audit_events_delta_shape CHECK (holdfast_delta_shape_ok(${COLUMNS.join(', ')}))`,
];

const DOWN: readonly string[] = [
  `ALTER TABLE audit_events DROP CONSTRAINT audit_events_delta_shape, ADD CONSTRAINT audit_events_delta_shape CHECK (${DELTA_SHAPE_CASE})`,
  `DROP FUNCTION holdfast_delta_shape_ok(text, bigint, bigint, bigint, bigint, bigint, bigint)`,
];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
