/**
 * 0006_format_checks: the identifier format CHECKs say "these characters, at most N
 * of them" as a repeated class plus char_length, instead of a bounded repetition
 * (`{1,128}`). The same rule, and the same constraint names.
 *
 * Why: PostgreSQL's regex engine builds the DFA of an expression lazily, state by
 * state, afresh for every evaluation. `[class]{1,128}` unrolls into 128 states, so
 * each check of a 15-character request id built ~15 of them: ~7 µs a row, against
 * ~0.3 µs for `[class]+` (measured on PostgreSQL 18, 100,000 evaluations). A hold
 * evaluates five (the reservation's customer and request id, its ledger event's
 * request id, its idempotency record's on the claim and again on its completion,
 * since an UPDATE checks every CHECK), which `perf` showed as 3.6 % of the machine's
 * CPU under a GROUP_COMMIT load (PostgreSQL's `miss`, issue 8).
 *
 * Re-adding a CHECK scans its table once, under the ACCESS EXCLUSIVE lock the DROP
 * takes, with the new (cheap) expression. Every existing row passed the old rule,
 * which is the same rule, so the scan cannot fail.
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

/** [table, constraint, column, character class, bounds]: the checks of 0001_initial. */
const CHECKS: readonly [string, string, string, string, { first?: string; max: number }][] = [
  ['skus', 'skus_code_format', 'code', 'A-Za-z0-9._-', { first: 'A-Za-z0-9', max: 64 }],
  ['reservations', 'reservations_customer_id_format', 'customer_id', 'A-Za-z0-9._:@-', { max: 128 }],
  ['reservations', 'reservations_request_id_format', 'request_id', 'A-Za-z0-9._:-', { max: 128 }],
  ['reconciliation_runs', 'reconciliation_runs_request_id_format', 'request_id', 'A-Za-z0-9._:-', { max: 128 }],
  ['audit_events', 'audit_events_request_id_format', 'request_id', 'A-Za-z0-9._:-', { max: 128 }],
  ['waitlist_entries', 'waitlist_entries_customer_id_format', 'customer_id', 'A-Za-z0-9._:@-', { max: 128 }],
  ['waitlist_entries', 'waitlist_entries_request_id_format', 'request_id', 'A-Za-z0-9._:-', { max: 128 }],
  ['idempotency_records', 'idempotency_records_request_id_format', 'request_id', 'A-Za-z0-9._:-', { max: 128 }],
];

/** The 0006 form: a repeated class and a length bound. NULL passes, as before. */
function cheap(column: string, chars: string, { first, max }: { first?: string; max: number }): string {
  return first === undefined
    ? `${column} ~ '^[${chars}]+$' AND char_length(${column}) <= ${max}`
    : `${column} ~ '^[${first}][${chars}]*$' AND char_length(${column}) <= ${max}`;
}

/** The 0001 form, for `down`. */
function bounded(column: string, chars: string, { first, max }: { first?: string; max: number }): string {
  return first === undefined ? `${column} ~ '^[${chars}]{1,${max}}$'` : `${column} ~ '^[${first}][${chars}]{0,${max - 1}}$'`;
}

function replaceAll(form: typeof cheap): string[] {
  return CHECKS.map(
    ([table, name, column, chars, bounds]) => `ALTER TABLE ${table} DROP CONSTRAINT ${name}, ADD CONSTRAINT ${name} CHECK (${form(column, chars, bounds)})`,
  );
}

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, replaceAll(cheap));
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, replaceAll(bounded));
}
