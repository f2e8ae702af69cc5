import type { Knex } from 'knex';

/**
 * Runs DDL statements one at a time, in order.
 *
 * One `knex.raw` per statement (rather than one big multi-statement string) so that
 * a failure names the statement that failed. Knex runs each migration inside a
 * transaction and PostgreSQL DDL is transactional, so a failure part-way leaves
 * nothing behind.
 *
 * The statements are passed without bindings: Knex then sends the text untouched
 * (no `?` placeholder processing), so SQL comments and operators are safe.
 */
export async function runSql(knex: Knex, statements: readonly string[]): Promise<void> {
  for (const statement of statements) {
    try {
      await knex.raw(statement);
    } catch (error) {
      const firstLine = statement.trim().split('\n').find((line) => !line.trim().startsWith('--')) ?? '';
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`migration statement failed: ${firstLine.trim()} :: ${message}`, { cause: error });
    }
  }
}
