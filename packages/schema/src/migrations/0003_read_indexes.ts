/**
 * 0003_read_indexes: two indexes that reads found missing once they ran against a
 * long history.
 *
 * - ALLOCATED lines per SKU. CheckConsistency sums them (allocated = Σ ALLOCATED lines);
 *   without this it walks every line the SKU ever had (reservation_items_sku_reservation_idx
 *   holds closed lines too). Partial, like the index of HELD lines: it is as small as the
 *   set of open allocations.
 * - The ledger by time. ListAuditEvents filtered only by a time window otherwise walks
 *   the primary key from the first event. Events are appended in roughly time order
 *   (occurred_at is the inserting transaction's start), which is what BRIN needs: a
 *   few pages of summary for millions of rows, and no cost worth measuring on the
 *   insert path of the hottest table.
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  `CREATE INDEX reservation_items_allocated_sku_idx ON reservation_items (sku_code) INCLUDE (quantity) WHERE status = 'ALLOCATED'`,
  `CREATE INDEX audit_events_occurred_at_brin ON audit_events USING brin (occurred_at)`,
];

const DOWN: readonly string[] = [`DROP INDEX audit_events_occurred_at_brin`, `DROP INDEX reservation_items_allocated_sku_idx`];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
