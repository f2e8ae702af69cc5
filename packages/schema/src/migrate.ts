/**
 * Running the migrations: thin wrappers over `knex.migrate` that always use Holdfast's
 * explicit migration list and its own bookkeeping tables, plus a status report.
 */
import type { Knex } from 'knex';
import { migrations, migrationSource } from './migrations/index.js';

/** Knex's record of applied migrations (a dedicated name, so Holdfast can share a database). */
export const MIGRATIONS_TABLE = 'holdfast_migrations';
/** Knex derives its lock table from the migrations table name: `<table>_lock`. */
export const MIGRATIONS_LOCK_TABLE = `${MIGRATIONS_TABLE}_lock`;

/**
 * The migrator configuration every function here uses. Exported for callers that need
 * another `knex.migrate` operation (e.g. `knex.migrate.to`), so they cannot forget the
 * table name or fall back to Knex's directory scanning.
 */
export const migratorConfig: Readonly<Knex.MigratorConfig> = Object.freeze({
  migrationSource,
  tableName: MIGRATIONS_TABLE,
  // Each batch runs in one transaction (PostgreSQL DDL is transactional): a failing
  // migration leaves the database exactly as it was.
  disableTransactions: false,
});

export interface MigrationRunResult {
  /** The batch number Knex recorded (or rolled back); 0 when there was nothing to do. */
  batch: number;
  /** Names of the migrations applied (up/latest) or reverted (down/rollback), in execution order. */
  migrations: string[];
}

export interface AppliedMigration {
  name: string;
  batch: number;
  appliedAt: Date;
}

export interface MigrationStatus {
  /** Applied migrations, in application order. */
  applied: AppliedMigration[];
  /** Known migrations not applied yet, in the order `latest` would apply them. */
  pending: string[];
  /** Recorded as applied but absent from this build's list (a newer build migrated this database). */
  unknown: string[];
  /** Name of the last applied migration, or null for an empty database. */
  current: string | null;
  /** No pending and no unknown migrations. */
  upToDate: boolean;
}

/** Applies every pending migration, in one batch (one transaction). */
export async function migrateLatest(knex: Knex): Promise<MigrationRunResult> {
  return withMigrationLock(knex, async () => toResult(await knex.migrate.latest(migratorConfig)));
}

/** Applies the next pending migration only. */
export async function migrateUp(knex: Knex): Promise<MigrationRunResult> {
  return withMigrationLock(knex, async () => toResult(await knex.migrate.up(migratorConfig)));
}

/** Reverts the last applied migration only (one step). */
export async function migrateDown(knex: Knex): Promise<MigrationRunResult> {
  return withMigrationLock(knex, async () => toResult(await knex.migrate.down(migratorConfig)));
}

/**
 * Reverts every applied migration, newest first. Knex's own bookkeeping tables
 * (`holdfast_migrations`, `holdfast_migrations_lock`) are left in place, empty.
 */
export async function migrateRollbackAll(knex: Knex): Promise<MigrationRunResult> {
  return withMigrationLock(knex, async () => toResult(await knex.migrate.rollback(migratorConfig, true)));
}

/** Which migrations are applied and which are pending. Read-only: creates nothing. */
export async function migrationStatus(knex: Knex): Promise<MigrationStatus> {
  const known = migrations.map((m) => m.name);
  let applied: AppliedMigration[] = [];
  if (await knex.schema.hasTable(MIGRATIONS_TABLE)) {
    const rows: Array<{ name: string; batch: number | string; migration_time: Date | string }> = await knex
      .select('name', 'batch', 'migration_time')
      .from(MIGRATIONS_TABLE)
      .orderBy('id');
    applied = rows.map((row) => ({
      name: row.name,
      batch: Number(row.batch),
      appliedAt: row.migration_time instanceof Date ? row.migration_time : new Date(row.migration_time),
    }));
  }
  const appliedNames = new Set(applied.map((m) => m.name));
  const knownNames = new Set(known);
  const pending = known.filter((name) => !appliedNames.has(name));
  const unknown = applied.map((m) => m.name).filter((name) => !knownNames.has(name));
  return {
    applied,
    pending,
    unknown,
    current: applied.length > 0 ? applied[applied.length - 1].name : null,
    upToDate: pending.length === 0 && unknown.length === 0,
  };
}

function toResult(value: unknown): MigrationRunResult {
  // knex.migrate.{latest,up,down,rollback} resolve to [batchNo, log]; the log holds
  // the names given by our MigrationSource.
  const [batch, log] = Array.isArray(value) ? value : [0, []];
  return {
    batch: typeof batch === 'number' ? batch : Number(batch) || 0,
    migrations: Array.isArray(log) ? log.map(String) : [],
  };
}

/**
 * Session-level advisory lock key for migrations: ('Hold', 'Migr') as two int4.
 * Any other Holdfast process migrating the same database waits on it.
 */
const ADVISORY_LOCK_KEY: readonly [number, number] = [0x486f6c64, 0x4d696772];

/**
 * Serializes migration runs across processes. Knex's own lock row makes a concurrent
 * second migrator *fail* ("Migration table is already locked"), and two processes
 * creating the bookkeeping tables at the same instant collide on the catalog; with this
 * lock the second one waits, then finds nothing left to do. This is what makes "every
 * replica migrates on start" safe. (Measured on a fresh database: four concurrent
 * `migrateLatest` calls all fail without it; with it one applies and three are no-ops.)
 *
 * The lock is held by a dedicated session, opened with the same driver and connection
 * settings as the Knex instance, so it takes no slot from the pool (a pool of one still
 * works) and is released by PostgreSQL if this process dies. When the Knex instance has
 * no static connection settings (a connection provider function), the lock is skipped
 * and Knex's lock row is the only protection.
 */
async function withMigrationLock<T>(knex: Knex, work: () => Promise<T>): Promise<T> {
  const client = knex.client as {
    driver?: { Client?: new (settings: object) => LockSession };
    connectionSettings?: unknown;
  };
  const settings = client.connectionSettings;
  const SessionClass = client.driver?.Client;
  if (!SessionClass || typeof settings !== 'object' || settings === null || Object.keys(settings).length === 0) {
    return work();
  }

  const session = new SessionClass(settings);
  // An idle client that loses its connection emits 'error'; without a listener that
  // would crash the process. The work's own connections report their own failures.
  session.on('error', () => undefined);
  await session.connect();
  try {
    await session.query('SELECT pg_advisory_lock($1, $2)', [...ADVISORY_LOCK_KEY]);
    return await work();
  } finally {
    // Ending the session releases the lock (and would, too, if this process died).
    await session.end().catch(() => undefined);
  }
}

/** The subset of pg.Client used for the migration lock. */
interface LockSession {
  connect(): Promise<unknown>;
  query(text: string, values: unknown[]): Promise<unknown>;
  end(): Promise<void>;
  on(event: 'error', listener: (error: Error) => void): unknown;
}
