/**
 * 0005_refuse: `holdfast_refuse(reason)`, which fails the statement that calls it with
 * SQLSTATE HF001, `reason` as its DETAIL (packages/schema/src/ledger.ts,
 * ApplyOptions.finish).
 *
 * Why a statement needs to fail on purpose: a transaction's last statement is sent
 * together with its COMMIT (query.ts commitWith), so the service cannot look at what
 * the statement found before committing. A guarded counter change that finds the row
 * short must then not commit the rows written alongside it (the reservation, the
 * recorded response): it calls this function, the statement fails, and PostgreSQL
 * ends the transaction at the COMMIT as a ROLLBACK. VOLATILE, so that the planner
 * never evaluates it ahead of the CASE that guards it.
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  `
  CREATE FUNCTION holdfast_refuse(reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
  AS $$
  BEGIN
    RAISE EXCEPTION USING ERRCODE = 'HF001', MESSAGE = 'statement refused: ' || reason, DETAIL = reason;
  END
  $$`,
  `COMMENT ON FUNCTION holdfast_refuse(text) IS
     'Fails the calling statement with SQLSTATE HF001, the given reason as its DETAIL: a statement sent with its COMMIT refuses its work this way (migration 0005).'`,
];

const DOWN: readonly string[] = [`DROP FUNCTION holdfast_refuse(text)`];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
