import type { Knex } from 'knex';

/** A Knex instance or a transaction of one. */
export type Db = Knex | Knex.Transaction;

/**
 * Runs one SQL statement with positional `?` parameters and returns its rows. Holdfast's
 * SQL is written out (and commented) rather than built, so this is the one way to run
 * it. Values are always bound parameters, never spliced into the text; JavaScript
 * arrays bind as PostgreSQL arrays (cast them, e.g. `?::text[]`).
 */
export async function query<T>(db: Db, text: string, params: readonly unknown[] = []): Promise<T[]> {
  const result = (await db.raw(text, params as Knex.RawBinding[])) as { rows: T[] };
  return result.rows;
}

/**
 * `$name` placeholders bound as positional `?`, for a statement that uses a value
 * several times (a SKU filter repeated in each branch of a UNION). The text must
 * contain no other "$". Returns the arguments of `query`.
 */
export function named(text: string, values: Record<string, unknown>): [string, unknown[]] {
  const params: unknown[] = [];
  const bound = text.replace(/\$(\w+)/g, (_, name: string) => {
    if (!(name in values)) throw new Error(`no value for $${name}`);
    params.push(values[name]);
    return '?';
  });
  return [bound, params];
}
