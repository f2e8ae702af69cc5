-- One hold as the reservation-service sends it to PostgreSQL (PESSIMISTIC, one
-- SKU, stock available): one transaction of two round trips, each a pipeline of two
-- messages, taken from the service's text (log_statement = all of a CreateHold),
-- with literals where it binds parameters and the SKU's read as a subquery of the
-- claim's SELECT (the service's claim statement carries it as a CTE of its own):
--   1. BEGIN, and behind it, without waiting for its answer, the claim of the request
--      id, which also reads the SKU's policy and counters
--      (packages/schema/src/query.ts transaction; packages/core/src/idempotency.ts
--      claimKeys, with reserve.ts's read);
--   2. the reservation, its line and the recorded response, in the same statement
--      as the guarded counter update and its ledger event (reserve.ts, with
--      packages/schema/src/ledger.ts APPLY_COUNTER_CHANGES, its `alongside` CTEs and
--      its `finish` check), and behind it the COMMIT (query.ts commitWith).
-- The hot row is locked from the counter update until the commit's flush: no round
-- trip through the client in between.
--
-- Not here, because the service sends them outside this transaction: the attempt
-- rate limit's admission statement before it (fairness-controls.ts admitAttempt,
-- autocommitted, and skipped for SKUs without a limit), the NOTIFYs after it, and
-- the request log (hold_attempts, one multi-row INSERT per 50 ms). What differs
-- from the service: the request id is the client's number and a random one (the
-- service gets it from the client), the reservation id is made by the second
-- statement (the service makes it); the request hash is made up; the recorded
-- response is a CreateHoldResponse of the usual size. The caller is spelt
-- 'service:' || 'bench' because pgbench reads a colon and a name as a variable even
-- inside a string literal. This file copies the service's statements by hand:
-- update it when idempotency.ts, reserve.ts or ledger.ts change them.
--
--   pgbench -n -M prepared -c 16 -j 2 -T 10 -D skus=10000 -f bench/pgbench/hold-statements.sql <url>
\set i random(0, :skus - 1)
\set r random(1, 1000000000000000)
\startpipeline
BEGIN;
-- 1. Claim the request id and read the SKU (packages/core/src/idempotency.ts claimKeys).
WITH k AS (SELECT :client_id::text || '-' || :r::text AS request_id, 'service:' || 'bench' AS caller),
claim AS (
  INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, expires_at, lease_expires_at)
  SELECT k.caller, k.request_id, 'holdfast.inventory.v1.InventoryReservationService/CreateHold', md5(k.request_id) || md5(:i::text), 'IN_FLIGHT',
         now() + 86400000 * interval '1 millisecond', now() + NULL * interval '1 millisecond'
    FROM k
  ON CONFLICT (caller, request_id) DO UPDATE
     SET method = EXCLUDED.method, request_hash = EXCLUDED.request_hash, state = 'IN_FLIGHT',
         response = NULL, status_code = NULL, created_at = now(), completed_at = NULL,
         expires_at = EXCLUDED.expires_at, lease_expires_at = EXCLUDED.lease_expires_at
   WHERE CASE WHEN idempotency_records.state = 'IN_FLIGHT' AND idempotency_records.lease_expires_at IS NOT NULL
              THEN idempotency_records.lease_expires_at < now()
              ELSE idempotency_records.expires_at <= now() END
  RETURNING created_at::text AS token
)
SELECT (SELECT count(*) FROM claim)::int AS claimed, (SELECT token FROM claim) AS token,
       (SELECT id FROM reservations WHERE caller = (SELECT caller FROM k) AND request_id = (SELECT request_id FROM k)) AS reservation_id,
       (SELECT id FROM waitlist_entries WHERE caller = (SELECT caller FROM k) AND request_id = (SELECT request_id FROM k) ORDER BY seq LIMIT 1) AS waitlist_entry_id,
       now() AS now, (SELECT request_id FROM k) AS request_id, (SELECT caller FROM k) AS caller, 'B-' || lpad(:i::text, 5, '0') AS sku,
       -- The SKU's policy and counters, no lock (reserve.ts's read, in the claim's statement).
       (SELECT row_to_json(r)::text FROM (SELECT s.*, i.on_hand, i.reserved, i.allocated, i.available, i.version, i.waitlist_count,
                                                   EXISTS (SELECT 1 FROM reservation_items ri
                                                            WHERE ri.sku_code = i.sku_code AND ri.status = 'HELD'
                                                              AND ri.expires_at <= (SELECT clock_timestamp())) AS reclaimable
                                              FROM skus s JOIN inventory i ON i.sku_code = s.code
                                             WHERE s.code = 'B-' || lpad(:i::text, 5, '0')) r) AS sku_row
;
\endpipeline
\startpipeline
-- 2. The reservation, its line and the recorded response (reserve.ts insertReservations'
-- CTEs, `alongside`), and the counters with the ledger event, guarded, in one
-- statement (packages/schema/src/ledger.ts APPLY_COUNTER_CHANGES).
WITH rid AS (SELECT gen_random_uuid() AS id),
h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at, confirmed_at)
  VALUES ((SELECT id FROM rid), 'HOLD', 'HELD', 'c' || :client_id::text, ('service:' || 'bench'), (:client_id::text || '-' || :r::text), 'PESSIMISTIC',
          now() + 3600000::bigint * interval '1 millisecond',
          now() + 7200000::bigint * interval '1 millisecond',
          CASE WHEN 'HELD'::text = 'ALLOCATED' THEN now() END)
  RETURNING id, status, expires_at, created_at
), lines AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, l.sku_code, l.quantity, h.status, h.expires_at, h.created_at
    FROM h, unnest(ARRAY[('B-' || lpad(:i::text, 5, '0'))], ARRAY[1]::int[]) AS l(sku_code, quantity)
  RETURNING reservation_id
), recorded AS (
  UPDATE idempotency_records SET state = 'COMPLETED', status_code = 0,
         response = '\x0a80010a2466373865663430652d316462382d343862362d383639332d31313032613033653236366210011801220263312a0b0a07422d3030303030100130023a0c0894fe87d80610c0ea8ea802420c0894fe87d80610c0ea8ea8024a0c08a49a88d80610c0ea8ea8026a0268317a13736572766963653a6465762d73657276696365'::bytea,
         completed_at = now()
   WHERE caller = ('service:' || 'bench') AND request_id = (:client_id::text || '-' || :r::text)
  RETURNING 1
), written AS (
  SELECT 1 FROM lines UNION ALL SELECT 1 FROM recorded
),
ch AS (
  SELECT *
    FROM unnest(ARRAY[0]::int[], ARRAY[('B-' || lpad(:i::text, 5, '0'))], ARRAY['HOLD_CREATED']::text[], ARRAY[(SELECT id FROM rid)], ARRAY[0]::bigint[], ARRAY[1]::bigint[], ARRAY[0]::bigint[], ARRAY[NULL]::text[])
      AS t(ord, sku_code, operation, reservation_id, d_on_hand, d_reserved, d_allocated, reason)
),
expected AS (
  SELECT * FROM unnest('{}'::text[], '{}'::bigint[]) AS e(sku_code, version)
),
per_sku AS (
  SELECT ch.sku_code COLLATE "C" AS sku_code, sum(d_on_hand) AS d_on_hand, sum(d_reserved) AS d_reserved,
         sum(d_allocated) AS d_allocated, count(*) AS n,
         (SELECT e.version FROM expected e WHERE e.sku_code = ch.sku_code) AS expected_version,
         true AND NOT EXISTS (SELECT 1 FROM skus s WHERE s.code = ch.sku_code AND s.waitlist_promotion_policy = 'FIRST_FIT') AS yields
    FROM ch GROUP BY ch.sku_code
),
u AS (
  UPDATE inventory i
     SET on_hand = i.on_hand + p.d_on_hand,
         reserved = i.reserved + p.d_reserved,
         allocated = i.allocated + p.d_allocated,
         version = i.version + p.n,
         updated_at = now()
    FROM per_sku p
   WHERE i.sku_code = p.sku_code
     AND i.on_hand + p.d_on_hand >= 0
     AND i.reserved + p.d_reserved >= 0
     AND i.allocated + p.d_allocated >= 0
     AND (i.on_hand + p.d_on_hand) - (i.reserved + p.d_reserved) - (i.allocated + p.d_allocated) >= 0
     AND (p.expected_version IS NULL OR i.version = p.expected_version)
     AND (NOT p.yields OR i.waitlist_count = 0)
     -- Rows first, counter last: the alongside rows are written before the row is locked.
     AND (SELECT count(*) FROM written) >= 0
  RETURNING i.sku_code, i.on_hand, i.reserved, i.allocated, i.version
),
ev AS (
  SELECT ch.*, u.on_hand AS f_on_hand, u.reserved AS f_reserved, u.allocated AS f_allocated, u.version AS f_version,
         coalesce(sum(ch.d_on_hand) OVER later, 0) AS later_on_hand,
         coalesce(sum(ch.d_reserved) OVER later, 0) AS later_reserved,
         coalesce(sum(ch.d_allocated) OVER later, 0) AS later_allocated,
         count(*) OVER later AS later_events
    FROM ch JOIN u ON u.sku_code = ch.sku_code
  WINDOW later AS (PARTITION BY ch.sku_code ORDER BY ch.ord ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
),
logged AS (
INSERT INTO audit_events (
  operation, sku_code, reservation_id, delta_on_hand, delta_reserved, delta_allocated,
  on_hand_before, reserved_before, allocated_before, on_hand_after, reserved_after, allocated_after,
  version_after, actor, request_id, reason, reconciliation_run_id)
SELECT operation, sku_code, reservation_id, d_on_hand, d_reserved, d_allocated,
       f_on_hand - later_on_hand - d_on_hand, f_reserved - later_reserved - d_reserved, f_allocated - later_allocated - d_allocated,
       f_on_hand - later_on_hand, f_reserved - later_reserved, f_allocated - later_allocated,
       f_version - later_events, ('service:' || 'bench'), (:client_id::text || '-' || :r::text), reason, NULL::uuid
  FROM ev
 ORDER BY sku_code COLLATE "C", ord
RETURNING sku_code
)
-- Sent with the COMMIT: refuses (fails) instead of committing half (ledger.ts ApplyOptions.finish).
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM u) THEN holdfast_refuse('refused')
            WHEN clock_timestamp() >= now() + 3599900::bigint * interval '1 millisecond' THEN holdfast_refuse('late')
       END AS refused;
COMMIT;
\endpipeline
