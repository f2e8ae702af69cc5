#!/usr/bin/env node
// `npm run migrate -- <latest|up|down|rollback-all|status>` against DATABASE_URL,
// or against the embedded PostgreSQL that `npm start` uses when it is not set.
import { ConfigError, createLogger } from "@holdfast/runtime";
import { createKnex, isMigrationCommand, MIGRATION_USAGE, runMigrationCommand } from "@holdfast/schema";
import { resolveDatabase } from "./database.js";

const logger = createLogger("migrate", "info");

async function main(): Promise<number> {
  const command = process.argv[2] ?? "latest";
  if (!isMigrationCommand(command)) {
    process.stderr.write(`unknown command: ${command}\n${MIGRATION_USAGE}\n`);
    return 2;
  }
  const database = await resolveDatabase(logger);
  const knex = createKnex({ url: database.url, poolMax: 1, applicationName: "holdfast-migrate" });
  try {
    await runMigrationCommand(knex, command, (line) => process.stdout.write(`${line}\n`));
    return 0;
  } finally {
    await knex.destroy();
    await database.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else logger.fatal({ err }, "migration failed");
    process.exit(1);
  },
);
