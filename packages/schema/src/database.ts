/**
 * The one way Holdfast processes open the database: a Knex instance on the `pg` driver
 * with Holdfast's type parsing, pool sizing and session settings.
 */
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';

export interface CreateKnexOptions {
  /** `postgres://` or `postgresql://` URL (query parameters such as `sslmode` are honoured). */
  url: string;
  /** Connections kept open when idle. Default 0, so an idle process holds no connections. */
  poolMin?: number;
  /** Upper bound of the pool. Default 10. */
  poolMax?: number;
  /** Reported in `pg_stat_activity.application_name`. Default `holdfast`. */
  applicationName?: string;
  /**
   * Server-side `statement_timeout` for every connection, in ms. Sent in the startup
   * packet, so it costs no round trip. Default (or 0): the server's / role's setting.
   */
  statementTimeoutMs?: number;
  /**
   * Server-side `lock_timeout` for every connection, in ms: the longest any statement
   * waits for a row or table lock before failing with SQLSTATE 55P03 (which the
   * services answer as ABORTED / LOCK_TIMEOUT). Sent in the startup packet like
   * statement_timeout, so a transaction pays no `SET LOCAL` round trip for it.
   * Default (or 0): the server's setting.
   */
  lockTimeoutMs?: number;
  /**
   * Server-side `idle_in_transaction_session_timeout`, in ms: a connection left idle
   * inside an open transaction (a stuck process) is closed by the server so that its
   * row locks cannot stall a hot SKU forever. Default (or 0): the server's setting.
   */
  idleInTransactionTimeoutMs?: number;
  /**
   * `search_path` for every connection (e.g. a per-test schema). Default: the server's.
   * The migrations use unqualified names, so they create the schema in the first
   * schema of this path.
   */
  searchPath?: string | string[];
  /**
   * Where Knex's own warnings and errors go (e.g. "Acquire connection error"). Knex's
   * default is console.log on stdout, which would corrupt a service's structured log
   * stream; pass the service logger's functions here. Default: one line on stderr each
   * for warn / error / deprecate, debug discarded.
   */
  log?: Knex.Logger;
}

function stderrLine(prefix: string) {
  return (message: unknown): void => {
    const text = message instanceof Error ? message.message : typeof message === 'string' ? message : JSON.stringify(message);
    process.stderr.write(`${prefix}${text}\n`);
  };
}

const DEFAULT_KNEX_LOG: Knex.Logger = {
  warn: stderrLine('knex warning: '),
  error: stderrLine('knex error: '),
  deprecate: (method: string, alternative: string) =>
    process.stderr.write(`knex deprecation: ${method} is deprecated, use ${alternative}\n`),
  debug: () => undefined,
};

/** Thrown for a missing or malformed database URL; the message never contains the password. */
export class DatabaseUrlError extends Error {
  override readonly name = 'DatabaseUrlError';
}

/**
 * Checks that `url` is a usable PostgreSQL URL and returns it parsed.
 * @throws DatabaseUrlError
 */
export function parseDatabaseUrl(url: string | undefined): URL {
  if (url === undefined || url.trim() === '') {
    throw new DatabaseUrlError('database URL is missing (expected postgres://user:password@host:port/database)');
  }
  let parsed: URL;
  try {
    parsed = new URL(url.trim());
  } catch {
    throw new DatabaseUrlError('database URL is not a valid URL (expected postgres://user:password@host:port/database)');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new DatabaseUrlError(
      `database URL must start with postgres:// or postgresql://, not ${parsed.protocol}//`,
    );
  }
  if (parsed.port !== '' && !/^\d+$/.test(parsed.port)) {
    throw new DatabaseUrlError(`database URL has an invalid port: ${parsed.port}`);
  }
  return parsed;
}

/** The URL with its password replaced by `***`, for logs and messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<invalid database URL>';
  }
}

/**
 * Creates the Knex instance. Nothing connects until the first query; call
 * `knex.destroy()` to close the pool.
 *
 * @throws DatabaseUrlError for a bad URL, RangeError for bad pool / timeout options.
 */
export function createKnex(options: CreateKnexOptions): Knex {
  parseDatabaseUrl(options.url);
  const poolMin = options.poolMin ?? 0;
  const poolMax = options.poolMax ?? 10;
  if (!Number.isInteger(poolMin) || poolMin < 0) throw new RangeError(`poolMin must be an integer >= 0, got ${poolMin}`);
  if (!Number.isInteger(poolMax) || poolMax < 1) throw new RangeError(`poolMax must be an integer >= 1, got ${poolMax}`);
  if (poolMin > poolMax) throw new RangeError(`poolMin (${poolMin}) must not exceed poolMax (${poolMax})`);
  const timeouts = {
    statement_timeout: options.statementTimeoutMs ?? 0,
    lock_timeout: options.lockTimeoutMs ?? 0,
    idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs ?? 0,
  };
  for (const [name, value] of Object.entries(timeouts)) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be an integer >= 0 (ms), got ${value}`);
  }

  const connection: Knex.PgConnectionConfig = {
    connectionString: options.url.trim(),
    // Parameters written in the URL itself take precedence over these (pg's rule).
    application_name: options.applicationName ?? 'holdfast',
    // pg sends these in the startup packet; 0 means "leave the server's setting".
    ...Object.fromEntries(Object.entries(timeouts).filter(([, value]) => value > 0)),
    types: holdfastTypeParsers,
    // node-postgres's pipeline mode: a statement is sent as soon as it is issued, not
    // after the answer to the one before (each still has its own Sync, so one failing
    // does not skip the next). `transaction` (query.ts) uses it to send BEGIN with the
    // first statement and COMMIT with the last; code that awaits each statement, as
    // everything else does, sees no difference.
    ...({ pipeline: true } as object),
  };

  const config: Knex.Config = {
    client: 'pg',
    connection,
    pool: { min: poolMin, max: poolMax },
    log: { ...DEFAULT_KNEX_LOG, ...options.log },
  };
  if (options.searchPath !== undefined) config.searchPath = options.searchPath;
  return knexFactory(config);
}

// ---------------------------------------------------------------------------------------
// Type parsing
// ---------------------------------------------------------------------------------------
//
// PostgreSQL int8 (bigint) and numeric can exceed JavaScript's exact integer range, so
// `pg` returns them as strings by default. Holdfast's bigint columns are stock counters,
// versions and identity ids, all far below 2^53 (9e15), and count(*) (int8) and
// sum(bigint) (numeric) are used everywhere in the services and tests. Strings would make
// every `a + b` a concatenation bug, so they are parsed to JS numbers here instead.
//
// Precision is never lost silently: a value outside Number.MAX_SAFE_INTEGER makes the
// query fail with a RangeError rather than return a rounded number. (Non-integral numeric
// values, e.g. avg(), are returned as the nearest double, as any float would be.)
//
// The parsers are attached to the connections of this Knex instance only (pg's
// per-client `types` option), not installed globally with pg.types.setTypeParser, so
// other users of `pg` in the same process are unaffected.

const INT8_OID = 20;
const NUMERIC_OID = 1700;
const INT8_ARRAY_OID = 1016;
const NUMERIC_ARRAY_OID = 1231;

/** Parses an int8 in text form to a JS number; throws instead of rounding. */
export function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`int8 value ${text} is outside the exactly representable range of a JS number`);
  }
  return value;
}

/** Parses a numeric in text form to a JS number; throws for integers beyond 2^53. */
export function parseNumeric(text: string): number {
  const value = Number(text);
  if (Number.isFinite(value) && Math.abs(value) > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`numeric value ${text} is outside the exactly representable range of a JS number`);
  }
  return value; // NaN / Infinity come back as NaN / Infinity
}

type Nested<T> = T | null | Nested<T>[];

function mapNested<T>(value: Nested<string>, parse: (text: string) => T): Nested<T> {
  if (value === null) return null;
  if (Array.isArray(value)) return value.map((item) => mapNested(item, parse));
  return parse(value);
}

const TEXT_ARRAY_OID = 1009;

function arrayParserFor(parse: (text: string) => number): (text: string) => Nested<number> {
  // pg's text[] parser splits any array literal into (nested) arrays of element strings
  // (NULL elements as null); each element is then parsed like a scalar.
  const getParser = pg.types.getTypeParser as (oid: number, format: 'text') => (text: string) => Nested<string>;
  const splitArray = getParser(TEXT_ARRAY_OID, 'text');
  return (text: string) => mapNested(splitArray(text), parse);
}

/** The `types` object given to every pg client created by {@link createKnex}. */
export const holdfastTypeParsers: Knex.PgCustomTypesConfig = (() => {
  const overrides = new pg.TypeOverrides();
  overrides.setTypeParser(INT8_OID, 'text', parseInt8);
  overrides.setTypeParser(NUMERIC_OID, 'text', parseNumeric);
  overrides.setTypeParser(INT8_ARRAY_OID, 'text', arrayParserFor(parseInt8));
  overrides.setTypeParser(NUMERIC_ARRAY_OID, 'text', arrayParserFor(parseNumeric));
  return {
    getTypeParser: (oid: number, format: string) => overrides.getTypeParser(oid, format === 'binary' ? 'binary' : 'text'),
  };
})();
