import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import pg from 'pg';

/**
 * A transaction opened by `transaction`: its statements go to its pooled pg connection
 * directly, without Knex's query machinery (issue 8's profile: Knex's per-statement
 * and per-transaction work was ~8 % of the reservation-service's CPU per hold).
 */
export class PgTransaction {
  /** Set once COMMIT or ROLLBACK is under way: a statement after that is a bug, not part of the transaction. */
  ended = false;
  /** Over on the server: committed, or ended by `commitWith`'s COMMIT after its statement failed. Nothing more to send. */
  settled = false;
  /** BEGIN, sent and not yet answered: the first statement goes right behind it (see `transaction`). */
  begin: Promise<unknown> | undefined;

  constructor(
    readonly connection: pg.ClientBase,
    /** Once aborted, the transaction does not commit (see `transaction`). */
    readonly signal?: AbortSignal,
  ) {}
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
    return afterBegin(db, send<T>(db.connection, text, params));
  }
  if (db.isTransaction !== true) {
    const client = db.client as KnexClient;
    for (let attempt = 0; ; attempt++) {
      const connection = await client.acquireConnection();
      try {
        return await send<T>(connection, text, params);
      } catch (err) {
        // A statement prepared before a migration failed before it ran (see `send`):
        // once more, prepared afresh.
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
 * rethrown. `work` runs its statements with `query(trx, ...)`, and may end with
 * `commitWith`, which sends its last statement together with the COMMIT. A connection
 * whose ROLLBACK failed is not reused (Knex's pool drops connections marked disposed,
 * as it does those that reported an error or ended).
 *
 * Round trips: BEGIN is not waited for; the first statement is sent right behind it
 * (the connections are in node-postgres's pipeline mode, see createKnex), and so is
 * the COMMIT behind the last statement with `commitWith`. A transaction of two
 * statements (an RPC's claim, then its writes) costs two round trips instead of four;
 * issue 8 measured that at ~20 % of PostgreSQL's CPU per hold (each round trip is a
 * backend going to sleep and waking up), and it takes the round trip through this
 * process out of the time a hot row stays locked.
 *
 * `signal`: once aborted, the transaction rolls back instead of committing (COMMIT, or
 * `commitWith`'s statement, is not sent) and the signal's reason is thrown. A commit
 * already sent stands, and so does one queued behind a last statement that is still
 * running (waiting for a row lock, say) when the signal aborts: a deadline bounds that
 * statement in the database (statement_timeout), a caller that just left does not.
 *
 * The transaction's statements (all prepared, see PREPARED_PER_CONNECTION) run on generic plans,
 * planned once per connection: these are the write paths of the RPCs (a claim, key
 * lookups, inserts, guarded counter updates), whose best plan does not depend on the
 * values. Left to choose, PostgreSQL re-plans them on every call, because it prices
 * `unnest(?::text[])` at 100 rows in a generic plan and at the array's length in a
 * custom one; issue 8 measured that re-planning at ~0.9 ms of its CPU per hold.
 * `SET LOCAL` ends with the transaction, and it travels with BEGIN.
 */
export async function transaction<T>(knex: Knex, work: (trx: PgTransaction) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const client = knex.client as KnexClient;
  const connection = await client.acquireConnection();
  const trx = new PgTransaction(connection, signal);
  try {
    // BEGIN cannot fail on a live connection (on a dead one, neither can what follows
    // it). Should it ever, what was sent behind it ran outside a transaction: the
    // connection is dropped and BEGIN's error thrown (afterBegin).
    trx.begin = connection.query(BEGIN);
    trx.begin.catch(() => undefined);
    let result: T;
    try {
      result = await work(trx);
      // Committed already (commitWith): that stands, whatever the signal says now.
      if (!trx.settled) signal?.throwIfAborted();
    } catch (err) {
      if (!trx.settled) await rollback(trx);
      throw err;
    }
    if (!trx.settled) {
      trx.ended = true;
      committedOrThrow(await afterBegin(trx, connection.query('COMMIT')));
      trx.settled = true;
    }
    return result;
  } finally {
    trx.ended = true;
    await client.releaseConnection(connection);
  }
}

/**
 * Ends `trx` with its last statement and COMMIT, sent together (one round trip), and
 * returns the statement's rows. Rows the statement locks stay locked for its execution
 * and the commit's flush, not for a round trip through this process.
 *
 * The COMMIT is sent before the statement's outcome is known, so the statement must do
 * all of its work or fail: never write part of it and report the rest as refused rows
 * (ledger.ts's counter change raises instead, ApplyOptions.finish). If it fails in the
 * database, PostgreSQL ends the failed transaction at the COMMIT (as a ROLLBACK) and
 * the statement's error is thrown. If node-postgres cannot send it at all (a value it
 * cannot serialize), the COMMIT is not sent either and the transaction rolls back. If
 * the COMMIT itself fails (a lost connection), its fate is unknown, as with any COMMIT.
 * With the transaction's signal aborted, nothing is sent and the transaction rolls back.
 * A statement that ran but whose rows node-postgres failed to parse (a type parser
 * throwing) has committed although its error is thrown: the last statements sent this
 * way return no such values (the ledger's returns a NULL, the inserts a constant).
 */
export async function commitWith<T>(trx: PgTransaction, text: string, params: readonly unknown[] = []): Promise<T[]> {
  if (trx.ended) throw new Error('commitWith: the transaction has already ended');
  trx.signal?.throwIfAborted();
  const { connection } = trx;
  const statement = sendStatement<T>(connection, text, params);
  if (statement.unsent !== undefined) {
    statement.rows.catch(() => undefined);
    throw statement.unsent;
  }
  trx.ended = true;
  const commit = connection.query('COMMIT');
  const [ran, committed] = await Promise.allSettled([afterBegin(trx, statement.rows), commit]);
  if (committed.status === 'fulfilled') trx.settled = true; // committed, or rolled back after a failed statement
  if (ran.status === 'rejected') throw ran.reason;
  if (committed.status === 'rejected') throw committed.reason;
  committedOrThrow(committed.value);
  return ran.value;
}

/**
 * PostgreSQL answers COMMIT in a failed transaction with "ROLLBACK", not an error: a
 * statement error that work swallowed would otherwise pass for a commit.
 */
function committedOrThrow(result: pg.QueryResult): void {
  if (result.command !== 'COMMIT') throw new Error(`the transaction was rolled back (COMMIT answered ${result.command}): one of its statements had failed`);
}

/** `statement`'s outcome, once the BEGIN sent before it (if it is the transaction's first) has been answered. */
async function afterBegin<T>(trx: PgTransaction, statement: Promise<T>): Promise<T> {
  const begin = trx.begin;
  if (begin === undefined) return statement;
  trx.begin = undefined;
  const [began, result] = await Promise.allSettled([begin, statement]);
  if (began.status === 'rejected') {
    // What followed BEGIN ran outside a transaction, or not at all: nothing more on this connection.
    (trx.connection as PooledConnection).__knex__disposed ??= began.reason;
    trx.ended = true;
    trx.settled = true;
    throw began.reason;
  }
  if (result.status === 'rejected') throw result.reason;
  return result.value;
}

/** ROLLBACK; a connection where it fails is dropped by the pool. */
async function rollback(trx: PgTransaction): Promise<void> {
  const connection = trx.connection as PooledConnection;
  trx.ended = true;
  await afterBegin(trx, connection.query('ROLLBACK')).catch((rollbackError: unknown) => {
    connection.__knex__disposed ??= rollbackError;
  });
  trx.settled = true;
}

const BEGIN = 'BEGIN; SET LOCAL plan_cache_mode = force_generic_plan';

/** What `query` and `transaction` use of Knex's client (knex 3: its pool of pg connections). */
interface KnexClient {
  acquireConnection(): Promise<PooledConnection>;
  releaseConnection(connection: PooledConnection): Promise<void>;
}

/** A pg connection of Knex's pool; Knex destroys it instead of reusing it once `__knex__disposed` is set. */
type PooledConnection = pg.ClientBase & { __knex__disposed?: unknown };

function send<T>(connection: PooledConnection, text: string, params: readonly unknown[]): Promise<T[]> {
  return sendStatement<T>(connection, text, params).rows;
}

/**
 * Sends one statement on `connection` (as a named prepared statement, see
 * PREPARED_PER_CONNECTION) and returns its rows to come; `unsent` is set when it
 * never went out (node-postgres refused it, or could not serialize a value), known
 * as soon as this returns: `commitWith` must not send a COMMIT behind a statement
 * that never ran.
 */
function sendStatement<T>(connection: PooledConnection, text: string, params: readonly unknown[]): { rows: Promise<T[]>; unsent?: unknown } {
  const sql = positional(text);
  if (sql.count !== params.length) return refused(new Error(`Expected ${params.length} bindings, saw ${sql.count}`));
  if (params.includes(undefined)) return refused(new Error(`Undefined binding(s) detected for the query: ${sql.text}`));
  const prepared = preparedOn(connection);
  const name = `hf${generation}_${sql.digest}`;
  const known = prepared.names.has(name);
  const named = known || prepared.names.size < PREPARED_PER_CONNECTION;
  const values = params as unknown[];
  let unsent: unknown;
  let submitting = true;
  const result = new Promise<pg.QueryResult>((resolve, reject) => {
    const statement = new pg.Query(named ? { name, text: sql.text, values } : { text: sql.text, values }, (err, res) => {
      if (err === undefined || err === null) resolve(res as unknown as pg.QueryResult);
      else {
        // Failed while being submitted (a value it could not serialize): never sent.
        if (submitting) unsent = err;
        reject(err);
      }
    });
    const submit = statement.submit.bind(statement) as (c: unknown) => unknown;
    // A statement node-postgres refuses to submit is answered later, but never sent.
    (statement as { submit: (c: unknown) => unknown }).submit = (c) => {
      const error = submit(c);
      if (error) unsent = error;
      return error;
    };
    connection.query(statement);
  });
  submitting = false;
  const rows = result.then(
    (res) => {
      if (named) prepared.names.add(name);
      return res.rows as T[];
    },
    (err: unknown) => {
      if (named && !(err instanceof pg.DatabaseError)) {
        // node-postgres failed on its side (a value it could not convert) after it may
        // have sent the statement's Parse and then closed it: what the connection has
        // prepared is no longer known, so the pool drops it.
        connection.__knex__disposed ??= err;
      } else if (known && isSchemaChange(err)) {
        // A statement that ran on this connection before now fails before running: the
        // schema changed under it (see `generation`).
        if (prepared.generation === generation) generation++;
        STALE.add(err as object);
        connection.__knex__disposed ??= err;
      }
      // As Knex did: the statement in the message (not its values), for the logs.
      if (err instanceof Error) err.message = `${sql.text} - ${err.message}`;
      throw err;
    },
  );
  return { rows, unsent };
}

function refused(err: Error): { rows: Promise<never>; unsent: Error } {
  return { rows: Promise.reject(err), unsent: err };
}

/**
 * Prepared statements and migrations. A prepared statement keeps the parameter and
 * result types of the schema it was parsed against. After a migration PostgreSQL
 * re-plans it by itself when it can; when it cannot, the statement fails without
 * having run: "cached plan must not change result type" (0A000, a statement whose
 * result columns changed, e.g. `RETURNING *` after ADD COLUMN), a type error against
 * a column whose type changed (class 42, e.g. a parameter parsed as text compared
 * with a column now uuid), or 26000 (the statement is gone). Such a failure of a
 * statement that already ran on that connection is taken as a schema change:
 * `generation`, which every statement's name carries, goes up, so every connection
 * prepares every statement afresh under new names; and every connection that
 * prepared statements under an older generation is dropped by the pool once its
 * current use ends (its old statements go with it). The failed statement is retried
 * at once outside a transaction (`query`); inside one, the error is marked
 * (`isStalePlan`) and the call is answered ABORTED, retryable.
 */
let generation = 0;
const STALE = new WeakSet<object>();

function isSchemaChange(err: unknown): boolean {
  const { code, routine } = err as { code?: unknown; routine?: unknown };
  if (typeof code !== 'string') return false;
  // The routine, not the message, which the server may translate (lc_messages).
  return (code === '0A000' && routine === 'RevalidateCachedQuery') || code === '26000' || code.startsWith('42');
}

/**
 * A statement that had been prepared on its connection before a schema change, and
 * failed for it before running (see `generation`): safe to retry, and a retry is
 * prepared afresh.
 */
export function isStalePlan(err: unknown): boolean {
  return typeof err === 'object' && err !== null && STALE.has(err);
}

/** A statement in `$n` form: its text, its number of parameters, and the digest its prepared statement's name carries. */
interface Positional {
  text: string;
  count: number;
  /** A digest of the text, the stable part of its prepared statement's name. */
  digest: string;
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
  converted = { text: out, count, digest: createHash('sha1').update(out).digest('base64url') };
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
 * by ROLLBACK. After a migration PostgreSQL re-plans them itself, or refuses them
 * (see `generation`).
 */
export const PREPARED_PER_CONNECTION = 500;

/** What a connection has prepared: the names, all of one generation. */
interface Prepared {
  generation: number;
  names: Set<string>;
}
const PREPARED = new WeakMap<pg.ClientBase, Prepared>();

function preparedOn(connection: PooledConnection): Prepared {
  let prepared = PREPARED.get(connection);
  if (prepared === undefined) {
    PREPARED.set(connection, (prepared = { generation, names: new Set() }));
  } else if (prepared.generation !== generation) {
    // Its statements predate a schema change: the pool drops it once this use ends.
    connection.__knex__disposed ??= new Error('prepared statements predate a schema change');
    prepared.generation = generation;
    prepared.names.clear();
  }
  return prepared;
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
