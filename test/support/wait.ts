// Waiting for something that happens in another process, with a deadline (never a bare sleep).
import type { Knex } from "knex";
import { query } from "@holdfast/schema";

/** Polls `check` until it returns true, or fails after `timeoutMs` naming `what`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Waits until a backend of `sql`'s database (other than the asking one) waits for a lock, or fails naming `what`. */
export async function untilALockWait(sql: Knex, what = "a backend waiting for a lock", timeoutMs = 5_000): Promise<void> {
  await until(
    what,
    async () => {
      const [w] = await query<{ n: number }>(
        sql,
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
      );
      return w!.n > 0;
    },
    timeoutMs,
  );
}
