/**
 * The migrations, as an explicit ordered list.
 *
 * Knex's default source scans a directory at run time, which breaks as soon as the code
 * is compiled to another folder, bundled, or run with a different file extension. Here
 * every migration is a static import, so the list is checked by the compiler and works
 * the same from `src` (ts loaders), `dist` and a bundle.
 *
 * To add a migration: create `NNNN_name.ts` exporting `up` and `down`, import it here and
 * append it. Never reorder, rename or edit a migration that has been applied anywhere:
 * the name is what Knex records in `holdfast_migrations`.
 */
import type { Knex } from 'knex';
import * as m0001 from './0001_initial.js';
import * as m0002 from './0002_hold_attempts.js';
import * as m0003 from './0003_read_indexes.js';
import * as m0004 from './0004_fairness_controls.js';
import * as m0005 from './0005_refuse.js';
import * as m0006 from './0006_format_checks.js';
import * as m0007 from './0007_ledger_delta_shape.js';
import * as m0008 from './0008_planned_per_call.js';

export interface HoldfastMigration {
  /** Recorded in the migrations table; sorts in application order. */
  readonly name: string;
  readonly up: (knex: Knex) => Promise<void>;
  readonly down: (knex: Knex) => Promise<void>;
}

export const migrations: readonly HoldfastMigration[] = Object.freeze([
  { name: '0001_initial', up: m0001.up, down: m0001.down },
  { name: '0002_hold_attempts', up: m0002.up, down: m0002.down },
  { name: '0003_read_indexes', up: m0003.up, down: m0003.down },
  { name: '0004_fairness_controls', up: m0004.up, down: m0004.down },
  { name: '0005_refuse', up: m0005.up, down: m0005.down },
  { name: '0006_format_checks', up: m0006.up, down: m0006.down },
  { name: '0007_ledger_delta_shape', up: m0007.up, down: m0007.down },
  { name: '0008_planned_per_call', up: m0008.up, down: m0008.down },
]);

/** A Knex `MigrationSource` over {@link migrations}; it never touches the file system. */
export class HoldfastMigrationSource implements Knex.MigrationSource<HoldfastMigration> {
  constructor(private readonly list: readonly HoldfastMigration[] = migrations) {
    const names = new Set<string>();
    let previous = '';
    for (const migration of list) {
      if (names.has(migration.name)) throw new Error(`duplicate migration name: ${migration.name}`);
      if (migration.name <= previous) {
        throw new Error(`migrations out of order: ${migration.name} is listed after ${previous}`);
      }
      names.add(migration.name);
      previous = migration.name;
    }
  }

  async getMigrations(): Promise<HoldfastMigration[]> {
    return [...this.list];
  }

  getMigrationName(migration: HoldfastMigration): string {
    return migration.name;
  }

  async getMigration(migration: HoldfastMigration): Promise<Knex.Migration> {
    return { up: migration.up, down: migration.down };
  }
}

export const migrationSource: HoldfastMigrationSource = new HoldfastMigrationSource();
