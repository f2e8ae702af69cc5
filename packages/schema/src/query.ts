import { createHash } from 'node:crypto';
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
    for (let attempt = 0; ; attempt++) {
      const connection = await client.acquireConnection();
      try {
        return await send<T>(connection, text, params);
      } catch (err) {
        // A statement prepared before a migration changed what it returns failed before
        // it ran (stalePlan disposed of the connection): once more, on another connection.
        if (attempt === 0 && isStalePlan(err)) continue;
        throw err;
      } finally {
        await client.releaseConnection(connection);
      }
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
 *
 * The transaction's statements (all prepared, see `prepared`) run on generic plans,
 * planned once per connection: these are the write paths of the RPCs (a claim, key
 * lookups, inserts, guarded counter updates), whose best plan does not depend on the
 * values. Left to choose, PostgreSQL re-plans them on every call, because it prices
 * `unnest(?::text[])` at 100 rows in a generic plan and at the array's length in a
 * custom one; issue 8 measured that re-planning at ~0.9 ms of its CPU per hold.
 * `SET LOCAL` ends with the transaction, and it travels with BEGIN (one round trip).
 */
export async function transaction<T>(knex: Knex, work: (trx: PgTransaction) => Promise<T>): Promise<T> {
  const client = knex.client as KnexClient;
  const connection = await client.acquireConnection();
  const trx = new PgTransaction(connection);
  try {
    await connection.query(BEGIN);
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

const BEGIN = 'BEGIN; SET LOCAL plan_cache_mode = force_generic_plan';

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
    const result = await connection.query(prepared(connection, sql) ? { name: sql.name, text: sql.text, values: params as unknown[] } : { text: sql.text, values: params as unknown[] });
    return result.rows as T[];
  } catch (err) {
    // The connection's prepared statements predate a migration that changed a result's
    // columns; PostgreSQL will not re-plan such a statement. Knex's pool drops the
    // connection when it is released, and every statement is prepared afresh on its
    // successor. (Each pooled connection meets this once after such a migration.)
    if (isStalePlan(err)) (connection as PooledConnection).__knex__disposed ??= err;
    // As Knex did: the statement in the message (not its values), for the logs.
    if (err instanceof Error) err.message = `${sql.text} - ${err.message}`;
    throw err;
  }
}

/**
 * PostgreSQL refusing to run a prepared statement whose result columns a schema change
 * altered (SQLSTATE 0A000, "cached plan must not change result type"). Nothing ran;
 * the same work succeeds on a fresh connection, so it is safe to retry.
 */
export function isStalePlan(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '0A000' && err instanceof Error && err.message.includes('cached plan must not change result type');
}

/** A statement in `$n` form: its text, its number of parameters, and its name as a prepared statement. */
interface Positional {
  text: string;
  count: number;
  name: string;
}

/** Texts in `$n` form, by their `?` form (the statements are a few hundred constants, and some built from them). */
const POSITIONAL = new Map<string, Positional>();
const POSITIONAL_MAX = 2_000;

function positional(text: string): Positional {
  let converted = POSITIONAL.get(text);
  if (converted !== undefined) return converted;
  let count = 0;
  const out = text.replace(/\\?\?\??/g, (match) => {
    if (match === '\\?') return '?';
    if (match !== '?') throw new Error(`query: "${match}" is not supported (a parameter is "?", a literal question mark "\\?")`);
    return `$${++count}`;
  });
  // Named by a digest of the text, so that a name always means the same text, even
  // after this cache has started over (node-postgres refuses a name reused for another).
  converted = { text: out, count, name: `hf_${createHash('sha1').update(out).digest('base64url')}` };
  if (POSITIONAL.size >= POSITIONAL_MAX) POSITIONAL.clear();
  POSITIONAL.set(text, converted);
  return converted;
}

/**
 * Statements are sent as named prepared statements, each parsed (and, once PostgreSQL
 * settles on a generic plan, planned) once per connection instead of on every call:
 * issue 8 measured planning alone at ~1 ms of PostgreSQL's CPU per hold, a third of
 * the total, when node-postgres sent them unnamed. A prepared statement lives as long
 * as its connection and costs the server memory, so a connection prepares at most
 * PREPARED_PER_CONNECTION of them (Holdfast's statements are constants, a few hundred
 * at most); anything past that is sent unnamed. Prepared statements are not undone
 * by ROLLBACK, and PostgreSQL re-plans them itself when the schema changes.
 */
export const PREPARED_PER_CONNECTION = 500;
const preparedCount = new WeakMap<pg.ClientBase, Set<string>>();

function prepared(connection: pg.ClientBase, sql: Positional): boolean {
  let names = preparedCount.get(connection);
  if (names === undefined) preparedCount.set(connection, (names = new Set()));
  if (names.has(sql.name)) return true;
  if (names.size >= PREPARED_PER_CONNECTION) return false;
  names.add(sql.name);
  return true;
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
