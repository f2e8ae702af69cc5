import type { Knex } from 'knex';
import type pg from 'pg';

/**
 * A transaction opened by `transaction`: its statements go to its pooled pg connection
 * directly, without Knex's query machinery (issue 8's profile: Knex's per-statement
 * and per-transaction work was ~8 % of the reservation-service's CPU per hold).
 */
export class PgTransaction {
  /** Set once COMMIT or ROLLBACK is under way: a statement after that is a bug, not part of the transaction. */
  ended = false;

  constructor(readonly connection: pg.ClientBase) {}
}

/** A Knex instance, a transaction of one, or a PgTransaction. */
export type Db = Knex | Knex.Transaction | PgTransaction;

/**
 * Runs one SQL statement with positional `?` parameters and returns its rows. Holdfast's
 * SQL is written out (and commented) rather than built, so this is the one way to run
 * it. Values are always bound parameters, never spliced into the text; JavaScript
 * arrays bind as PostgreSQL arrays (cast them, e.g. `?::text[]`).
 *
 * On a Knex instance the statement runs on a connection of its pool, taken for that
 * statement (as `knex.raw` would); on a PgTransaction, on its connection; both without
 * Knex's query builder, with Knex's rules for the text (`?` is a parameter, `\?` a
 * literal question mark; `??` identifiers are not supported). A Knex transaction (tests
 * and tools open some) runs it through `raw`.
 */
export async function query<T>(db: Db, text: string, params: readonly unknown[] = []): Promise<T[]> {
  if (db instanceof PgTransaction) {
    if (db.ended) throw new Error('query: the transaction has already ended');
    return send<T>(db.connection, text, params);
  }
  if (db.isTransaction !== true) {
    const client = db.client as KnexClient;
    const connection = await client.acquireConnection();
    try {
      return await send<T>(connection, text, params);
    } finally {
      await client.releaseConnection(connection);
    }
  }
  const result = (await db.raw(text, params as Knex.RawBinding[])) as { rows: T[] };
  return result.rows;
}

/**
 * Runs `work` in a transaction (READ COMMITTED, the server's default) on a connection
 * of `knex`'s pool: BEGIN, `work`, COMMIT; ROLLBACK if `work` throws, and its error is
 * rethrown. `work` runs its statements with `query(trx, ...)`. A connection whose
 * ROLLBACK failed is not reused (Knex's pool drops connections marked disposed, as it
 * does those that reported an error or ended).
 */
export async function transaction<T>(knex: Knex, work: (trx: PgTransaction) => Promise<T>): Promise<T> {
  const client = knex.client as KnexClient;
  const connection = await client.acquireConnection();
  const trx = new PgTransaction(connection);
  try {
    await connection.query('BEGIN');
    let result: T;
    try {
      result = await work(trx);
    } catch (err) {
      trx.ended = true;
      await connection.query('ROLLBACK').catch((rollbackError: unknown) => {
        connection.__knex__disposed ??= rollbackError;
      });
      throw err;
    }
    trx.ended = true;
    await connection.query('COMMIT');
    return result;
  } finally {
    trx.ended = true;
    await client.releaseConnection(connection);
  }
}

/** What `query` and `transaction` use of Knex's client (knex 3: its pool of pg connections). */
interface KnexClient {
  acquireConnection(): Promise<PooledConnection>;
  releaseConnection(connection: PooledConnection): Promise<void>;
}

/** A pg connection of Knex's pool; Knex destroys it instead of reusing it once `__knex__disposed` is set. */
type PooledConnection = pg.ClientBase & { __knex__disposed?: unknown };

async function send<T>(connection: pg.ClientBase, text: string, params: readonly unknown[]): Promise<T[]> {
  const sql = positional(text);
  if (sql.count !== params.length) throw new Error(`Expected ${params.length} bindings, saw ${sql.count}`);
  if (params.includes(undefined)) throw new Error(`Undefined binding(s) detected for the query: ${sql.text}`);
  try {
    const result = await connection.query(sql.text, params as unknown[]);
    return result.rows as T[];
  } catch (err) {
    // As Knex did: the statement in the message (not its values), for the logs.
    if (err instanceof Error) err.message = `${sql.text} - ${err.message}`;
    throw err;
  }
}

/** Texts in `$n` form, by their `?` form (the statements are a few hundred constants, and some built from them). */
const POSITIONAL = new Map<string, { text: string; count: number }>();
const POSITIONAL_MAX = 2_000;

function positional(text: string): { text: string; count: number } {
  let converted = POSITIONAL.get(text);
  if (converted !== undefined) return converted;
  let count = 0;
  const out = text.replace(/\\?\?\??/g, (match) => {
    if (match === '\\?') return '?';
    if (match !== '?') throw new Error(`query: "${match}" is not supported (a parameter is "?", a literal question mark "\\?")`);
    return `$${++count}`;
  });
  converted = { text: out, count };
  if (POSITIONAL.size >= POSITIONAL_MAX) POSITIONAL.clear();
  POSITIONAL.set(text, converted);
  return converted;
}

/**
 * A statement text built from a constant part (a CTE, a read) once: `build`'s result,
 * the same string each time for the same part, so that building and sending it costs
 * no string work per call (texts are looked up by value on the way out, see
 * `positional`). For parts that are a handful of constants; past 100 it starts over.
 */
export function builtOnce(build: (part: string) => string): (part: string) => string {
  const built = new Map<string, string>();
  return (part) => {
    let text = built.get(part);
    if (text === undefined) {
      text = build(part);
      if (built.size >= 100) built.clear();
      built.set(part, text);
    }
    return text;
  };
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
