/**
 * The migration commands shared by the `holdfast-migrate` CLI (DATABASE_URL) and the
 * dev-stack's `npm run migrate` (DATABASE_URL or the embedded PostgreSQL).
 */
import type { Knex } from 'knex';
import {
  migrateDown,
  migrateLatest,
  migrateRollbackAll,
  migrateUp,
  migrationStatus,
  type MigrationRunResult,
} from './migrate.js';

export const MIGRATION_COMMANDS = ['latest', 'up', 'down', 'rollback-all', 'status'] as const;
export type MigrationCommand = (typeof MIGRATION_COMMANDS)[number];

export const MIGRATION_USAGE = `usage: holdfast-migrate <${MIGRATION_COMMANDS.join('|')}>

  latest        apply every pending migration (one transaction)
  up            apply the next pending migration
  down          revert the last applied migration
  rollback-all  revert every applied migration
  status        list applied and pending migrations`;

export function isMigrationCommand(value: string | undefined): value is MigrationCommand {
  return (MIGRATION_COMMANDS as readonly string[]).includes(value ?? '');
}

function describeRun(out: (line: string) => void, verb: string, result: MigrationRunResult): void {
  if (result.migrations.length === 0) {
    out(`nothing to ${verb === 'applied' ? 'apply' : 'revert'}`);
    return;
  }
  for (const name of result.migrations) out(`${verb} ${name}`);
  const batch = verb === 'applied' ? ` (batch ${result.batch})` : '';
  out(`${result.migrations.length} migration(s) ${verb}${batch}`);
}

/** Runs one migration command, describing what it did through `out`. */
export async function runMigrationCommand(knex: Knex, command: MigrationCommand, out: (line: string) => void): Promise<void> {
  switch (command) {
    case 'latest':
      return describeRun(out, 'applied', await migrateLatest(knex));
    case 'up':
      return describeRun(out, 'applied', await migrateUp(knex));
    case 'down':
      return describeRun(out, 'reverted', await migrateDown(knex));
    case 'rollback-all':
      return describeRun(out, 'reverted', await migrateRollbackAll(knex));
    case 'status': {
      const status = await migrationStatus(knex);
      for (const m of status.applied) out(`applied  ${m.name}  (batch ${m.batch}, ${m.appliedAt.toISOString()})`);
      for (const name of status.pending) out(`pending  ${name}`);
      for (const name of status.unknown) out(`unknown  ${name}  (applied, but not known to this build)`);
      out(
        status.upToDate
          ? `up to date at ${status.current ?? '(no migrations)'}`
          : `${status.pending.length} pending, ${status.unknown.length} unknown; current: ${status.current ?? '(none)'}`,
      );
    }
  }
}
