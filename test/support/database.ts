import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Knex } from "knex";
import { createKnex, migrateLatest } from "@holdfast/schema";

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.HOLDFAST_TEST_ADMIN_URL;
  if (!url) throw new Error("HOLDFAST_TEST_ADMIN_URL is not set: run the tests through mocha (npm test)");
  return url;
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * A fresh database for one test file, migrated to the latest schema unless
 * `migrate: false`. Dropped (with FORCE, so stray connections don't block it)
 * by `drop()`.
 */
export async function createTestDatabase(label: string, options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `hf_${label.replace(/[^a-z0-9]/gi, "_").toLowerCase().slice(0, 30)}_${randomBytes(4).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  if (options.migrate !== false) {
    const knex = createKnex({ url: url.toString(), poolMax: 1 });
    try {
      await migrateLatest(knex);
    } finally {
      await knex.destroy();
    }
  }
  return {
    name,
    url: url.toString(),
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`)).then(() => undefined),
  };
}

/**
 * For the enclosing describe: a fresh migrated database and a pool of `poolMax`
 * connections on it, made in a `before` hook (registered first, so it runs before the
 * describe's own) and destroyed and dropped in an `after` hook.
 */
export function databaseFixture(label: string, poolMax: number): { db: TestDatabase; knex: Knex } {
  const fx = {} as { db: TestDatabase; knex: Knex };
  before(async () => {
    fx.db = await createTestDatabase(label);
    fx.knex = createKnex({ url: fx.db.url, poolMax });
  });
  after(async () => {
    await fx.knex?.destroy();
    await fx.db?.drop();
  });
  return fx;
}
