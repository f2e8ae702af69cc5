/**
 * 0004_fairness_controls: what the per-SKU fairness controls of SkuPolicy need
 * (docs/fairness.md, "Fairness controls"; the SQL is packages/schema/src/fairness.ts).
 *
 * - customer_attempt_windows: the sliding log of customer_attempt_rate_limit, one row
 *   per (SKU, customer) holding the times of the attempts it admitted within the
 *   window. Written by one autocommitted INSERT ... ON CONFLICT DO UPDATE per attempt,
 *   before the attempt's own transaction: the row is locked for that one statement
 *   only, never while the attempt waits for a SKU's row. No foreign key (as
 *   hold_attempts): an FK check would take a KEY SHARE lock on the SKU's row in every
 *   attempt, and the rows are disposable (the worker prunes them once expires_at
 *   passes; nothing in them matters after that).
 * - reservations_active_customer_idx: max_units_per_customer sums the units of one
 *   customer's HELD and ALLOCATED reservations. reservations_customer_created_idx
 *   would walk every reservation the customer ever had; this partial index holds only
 *   the open ones, so the sum costs the customer's open reservations, whatever the
 *   history. (The abandonment-aware TTL reads the customer's holds of the last 24 h
 *   through reservations_customer_created_idx, a range on created_at.)
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  `
  CREATE TABLE customer_attempt_windows (
    sku_code        text COLLATE "C" NOT NULL,
    customer_id     text        NOT NULL,
    -- The SKU's limit as of the last attempt (copied from skus so that the upsert's
    -- ON CONFLICT branch can read it from EXCLUDED).
    max_attempts    integer     NOT NULL,
    window_ms       bigint      NOT NULL,
    -- The database clock (clock_timestamp()) of every admitted attempt that is still
    -- inside the window, oldest first. At most max_attempts of them: an attempt is
    -- admitted only while fewer are in the window, and refused ones are not logged.
    admitted        timestamptz[] NOT NULL,
    -- The last attempt (admitted or not), and whether it was admitted: what the
    -- upsert returns to its caller.
    last_attempt_at timestamptz NOT NULL,
    last_admitted   boolean     NOT NULL,
    -- When the newest admitted attempt leaves the window: from then on the row admits
    -- like an absent one, and retention may delete it.
    expires_at      timestamptz NOT NULL,

    CONSTRAINT customer_attempt_windows_pkey PRIMARY KEY (sku_code, customer_id),
    CONSTRAINT customer_attempt_windows_bounded CHECK (cardinality(admitted) <= max_attempts)
  )`,
  `COMMENT ON TABLE customer_attempt_windows IS 'Sliding log of admitted CreateHold/JoinWaitlist attempts per (SKU, customer), for SkuPolicy.customer_attempt_rate_limit.'`,
  // Retention: DELETE ... WHERE expires_at < now() ORDER BY expires_at LIMIT n.
  `CREATE INDEX customer_attempt_windows_expires_at_idx ON customer_attempt_windows (expires_at)`,
  `CREATE INDEX reservations_active_customer_idx ON reservations (customer_id) WHERE status IN ('HELD', 'ALLOCATED')`,
];

const DOWN: readonly string[] = [`DROP INDEX reservations_active_customer_idx`, `DROP TABLE customer_attempt_windows`];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
