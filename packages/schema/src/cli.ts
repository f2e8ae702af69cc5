#!/usr/bin/env node
/**
 * holdfast-migrate: run the Holdfast migrations against $DATABASE_URL.
 *
 *   node dist/cli.js <latest|up|down|rollback-all|status>
 *
 * Exit codes: 0 done, 1 the operation failed, 2 bad usage or a missing/invalid DATABASE_URL.
 */
import { createKnex, DatabaseUrlError, parseDatabaseUrl, redactDatabaseUrl } from './database.js';
import { MIGRATIONS_TABLE } from './migrate.js';
import { isMigrationCommand, MIGRATION_USAGE, runMigrationCommand } from './commands.js';

const USAGE = `${MIGRATION_USAGE}

Reads the database from DATABASE_URL (postgres://user:password@host:port/database).`;

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function err(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function main(argv: readonly string[]): Promise<number> {
  const args = argv.slice(2);
  if (args.length === 1 && (args[0] === '--help' || args[0] === '-h' || args[0] === 'help')) {
    out(USAGE);
    return 0;
  }
  const command = args[0];
  if (args.length !== 1 || !isMigrationCommand(command)) {
    err(args.length === 0 ? 'error: missing command' : `error: unknown command: ${args.join(' ')}`);
    err(USAGE);
    return 2;
  }

  const url = process.env.DATABASE_URL;
  try {
    parseDatabaseUrl(url);
  } catch (error) {
    if (error instanceof DatabaseUrlError) {
      err(`error: DATABASE_URL: ${error.message}`);
      return 2;
    }
    throw error;
  }

  const knex = createKnex({ url: url as string, poolMin: 0, poolMax: 2, applicationName: 'holdfast-migrate' });
  try {
    out(`database: ${redactDatabaseUrl(url as string)} (migrations table ${MIGRATIONS_TABLE})`);
    await runMigrationCommand(knex, command, out);
    return 0;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    err(`error: ${command} failed: ${message}`);
    return 1;
  } finally {
    await knex.destroy();
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    err(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exitCode = 1;
  },
);
