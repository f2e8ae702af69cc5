/**
 * 0002_hold_attempts: the request log that fairness is measured from.
 *
 * Every CreateHold attempt (granted or not) leaves one row per requested SKU, so the
 * flash-sale report can compute FIFO inversions, Jain's index over units granted per
 * customer, time-to-grant percentiles and undersell from facts recorded at the server,
 * not from client-side guesses.
 *
 * Kept apart from 0001 because it is written on the hottest path and its shape belongs
 * to the fairness work: it is deliberately cheap to insert into.
 * - No foreign keys. An attempt for an unknown SKU is still an attempt worth counting,
 *   and a FK check would take a KEY SHARE lock on the SKU's row in every concurrent
 *   attempt transaction (MultiXact churn on the hottest SKU of a flash sale).
 * - One secondary index only.
 * - It may be written outside the reservation's transaction (even batched, after the
 *   response), so reservation_id is informative, not a constraint.
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  `
  CREATE TABLE hold_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Groups the lines of one CreateHold call (a multi-SKU cart writes one row per SKU).
    attempt_id       uuid        NOT NULL,
    -- Arrival at the server (taken when the call is received, before any queueing on
    -- locks), which is the order FIFO fairness is judged by.
    received_at      timestamptz NOT NULL,
    -- Time from arrival to the decision, in microseconds.
    latency_us       integer     NOT NULL,
    caller           text        NOT NULL,
    customer_id      text        NOT NULL,
    request_id       text        NULL,
    -- COLLATE "C" like every SKU code column (byte-wise SKU order); not a FK (above).
    sku_code         text COLLATE "C" NOT NULL,
    -- As requested (after summing duplicate lines). Not CHECKed: a request refused as
    -- invalid is still an attempt the report may count.
    quantity         integer     NOT NULL,
    locking_strategy text        NULL,      -- NULL if the attempt failed before choosing
    -- GRANTED (a hold was created), REFUSED (any error, whatever its status code:
    -- stock, limits, rate limit, lock timeout, optimistic conflicts, bad input...) or
    -- WAITLISTED (join_waitlist_if_short put the customer on the waitlist instead):
    -- the report's requests_granted / requests_refused / requests_waitlisted.
    outcome          text        NOT NULL,
    -- The google.rpc.ErrorInfo reason of a REFUSED attempt, as the contract spells it
    -- (an ErrorReason name without the ERROR_REASON_ prefix: INSUFFICIENT_STOCK,
    -- PER_CUSTOMER_LIMIT_EXCEEDED, RATE_LIMITED, LOCK_TIMEOUT,
    -- CONFLICT_RETRIES_EXHAUSTED, WAITLIST_FULL, SKU_NOT_FOUND, BAD_REQUEST...), which
    -- is what FlashSaleReport.refusals groups by; for a WAITLISTED attempt the reason
    -- it could not be granted (INSUFFICIENT_STOCK). Free text so a new reason needs no
    -- migration; NULL exactly for GRANTED.
    reason           text        NULL,
    reservation_id   uuid        NULL,      -- the hold, when GRANTED
    -- The entry, when WAITLISTED and this line was short (a line that was not short
    -- gets no entry: nothing is held, all or nothing).
    waitlist_entry_id uuid       NULL,
    -- An idempotent replay of an earlier attempt: logged, but not counted as a new
    -- attempt by the report (contract).
    replayed         boolean     NOT NULL DEFAULT false,

    CONSTRAINT hold_attempts_outcome_valid CHECK (outcome IN ('GRANTED', 'REFUSED', 'WAITLISTED')),
    CONSTRAINT hold_attempts_granted_has_reservation CHECK (outcome <> 'GRANTED' OR reservation_id IS NOT NULL),
    CONSTRAINT hold_attempts_reason_unless_granted CHECK ((outcome = 'GRANTED') = (reason IS NULL)),
    CONSTRAINT hold_attempts_latency_non_negative CHECK (latency_us >= 0),
    CONSTRAINT hold_attempts_locking_strategy_valid CHECK (locking_strategy IN ('OPTIMISTIC', 'PESSIMISTIC'))
  )`,
  `COMMENT ON TABLE hold_attempts IS 'Request log: one row per SKU line of every CreateHold attempt, for fairness metrics.'`,
  // GetFlashSaleReport(sku, window): WHERE sku_code = $1 AND received_at >= $from AND
  // received_at < $to ORDER BY received_at, id.
  `CREATE INDEX hold_attempts_sku_received_idx ON hold_attempts (sku_code, received_at, id)`,
];

const DOWN: readonly string[] = [`DROP TABLE hold_attempts`];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
