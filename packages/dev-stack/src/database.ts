import path from "node:path";
import { z } from "zod";
import { envVar, loadConfig, type Logger } from "@holdfast/runtime";
import { embeddedUrl, ensureDatabase, isReachable, startEmbeddedPostgres } from "./embedded-postgres.js";

const localEnv = z.object({
  DATABASE_URL: envVar.databaseUrl().optional(),
  HOLDFAST_DATA_DIR: z.string().min(1).default(".holdfast"),
  HOLDFAST_EMBEDDED_PG_PORT: envVar.port(54329),
});

export interface ResolvedDatabase {
  url: string;
  /** Human-readable origin, for the start-up banner. */
  description: string;
  stop(): Promise<void>;
}

/**
 * `DATABASE_URL` when it is set; otherwise the project's embedded PostgreSQL
 * (data kept in `.holdfast/postgres` between runs) with a `holdfast` database:
 * the one already running (say, `npm run migrate` while `npm start` runs), or
 * a new one that `stop()` stops.
 */
export async function resolveDatabase(logger: Logger): Promise<ResolvedDatabase> {
  const env = loadConfig(localEnv);
  if (env.DATABASE_URL !== undefined) {
    return { url: env.DATABASE_URL, description: "DATABASE_URL", stop: async () => undefined };
  }
  const dataDir = path.resolve(env.HOLDFAST_DATA_DIR, "postgres");
  const port = env.HOLDFAST_EMBEDDED_PG_PORT;
  if (await isReachable(embeddedUrl(port, "postgres"))) {
    await ensureDatabase(embeddedUrl(port, "postgres"), "holdfast");
    return { url: embeddedUrl(port, "holdfast"), description: `embedded PostgreSQL already running on port ${port}`, stop: async () => undefined };
  }
  logger.info({ dataDir, port }, "starting embedded PostgreSQL (set DATABASE_URL to use your own)");
  const cluster = await startEmbeddedPostgres({
    dataDir,
    port,
    persistent: true,
    onLog: (line) => logger.debug({ postgres: line }, "postgres"),
  });
  await ensureDatabase(cluster.url("postgres"), "holdfast");
  return { url: cluster.url("holdfast"), description: `embedded PostgreSQL, data in ${dataDir}`, stop: () => cluster.stop() };
}
