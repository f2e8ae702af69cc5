// Mocha global fixtures: one PostgreSQL server for the whole run. Each test
// file then makes its own database on it (see database.ts), so files never see
// each other's rows. DATABASE_URL, when set, names the server to use instead of
// an embedded one (its database is only used to create and drop test databases).
import { mkdtemp, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startEmbeddedPostgres, type RunningPostgres } from "@holdfast/dev-stack";
import { freePort } from "./ports.js";

let cluster: RunningPostgres | undefined;

export async function mochaGlobalSetup(): Promise<void> {
  if (process.env.DATABASE_URL) {
    process.env.HOLDFAST_TEST_ADMIN_URL = process.env.DATABASE_URL;
    return;
  }
  const root = await mkdtemp(path.join(tmpdir(), "holdfast-test-"));
  await chmod(root, 0o755);
  cluster = await startEmbeddedPostgres({ dataDir: path.join(root, "data"), port: await freePort(), persistent: false, fast: true });
  process.env.HOLDFAST_TEST_ADMIN_URL = cluster.url("postgres");
}

export async function mochaGlobalTeardown(): Promise<void> {
  await cluster?.stop();
}
