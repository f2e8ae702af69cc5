import type { Knex } from 'knex';
import { migrationStatus } from './migrate.js';

interface ReadinessLogger {
  warn(fields: object, message: string): void;
}

/**
 * Start-up check of a service: waits (up to `timeoutMs`, retrying) for the database to
 * answer, then refuses to run against a schema that is not exactly the one this build
 * knows, because every query assumes it. The error says what to do.
 */
export async function assertDatabaseReady(knex: Knex, options: { timeoutMs: number; logger: ReadinessLogger }): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      // Each attempt is bounded by what is left of the budget: against a host that
      // does not answer, a connection attempt alone could outlast it.
      await withTimeout(knex.raw('SELECT 1'), Math.max(1, deadline - Date.now()));
      break;
    } catch (err) {
      if (Date.now() >= deadline) {
        throw new Error(`the database did not answer within ${options.timeoutMs} ms: ${(err as Error).message}`, { cause: err });
      }
      options.logger.warn({ attempt, err }, 'database not reachable yet; retrying');
      await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 200 * attempt)));
    }
  }
  const status = await migrationStatus(knex);
  if (status.pending.length > 0) {
    throw new Error(`the database schema is behind this build (pending: ${status.pending.join(', ')}): run \`npm run migrate\` first`);
  }
  if (status.unknown.length > 0) {
    throw new Error(`the database schema is ahead of this build (unknown: ${status.unknown.join(', ')}): deploy the newer build`);
  }
}

function withTimeout<T>(work: PromiseLike<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([Promise.resolve(work), timeout]).finally(() => clearTimeout(timer));
}
