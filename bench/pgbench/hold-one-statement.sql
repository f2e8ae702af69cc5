-- The ceiling proper: one hold as ONE statement, everything the database must
-- write for it and nothing else: its idempotency record (completed, with a
-- recorded response of the size CreateHold records), its reservation header and
-- line, the guarded counter update and its ledger event (audit_events), in one
-- transaction of one round trip. The rows are written first and the counter last
-- (the UPDATE waits on a one-time filter over the inserts of the record and the
-- line), so the hot row is locked only for the UPDATE, the event and the commit.
--
-- The same tables, constraints, indexes and foreign keys as the service's
-- statements (services/reservation-service/src/core/reserve.ts insertReservation,
-- packages/schema/src/ledger.ts APPLY_COUNTER_CHANGES, packages/core/src/
-- idempotency.ts). A fresh request id and reservation id per hold
-- (gen_random_uuid()); the customer is the client. The SKU: one of "skus" codes (-D skus=N),
-- uniformly at random (bench/scenarios.ts skuCode; 1 = the one hot SKU). The
-- caller is spelt 'service:' || 'bench' because pgbench reads a colon and a name
-- as a variable even inside a string literal.
--
--   pgbench -n -M prepared -c 16 -j 2 -T 10 -D skus=10000 -f bench/pgbench/hold-one-statement.sql <url>
\set i random(0, :skus - 1)
WITH k AS (
  SELECT gen_random_uuid() AS id, gen_random_uuid()::text AS request_id, ('B-' || lpad(:i::text, 5, '0')) COLLATE "C" AS sku,
         'service:' || 'bench' AS caller
), claim AS (
  INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, status_code, response, expires_at, completed_at)
  SELECT k.caller, k.request_id, 'holdfast.inventory.v1.InventoryReservationService/CreateHold',
         md5(k.request_id) || md5(k.sku), 'COMPLETED', 0,
         '\x0a80010a2466373865663430652d316462382d343862362d383639332d31313032613033653236366210011801220263312a0b0a07422d3030303030100130023a0c0894fe87d80610c0ea8ea802420c0894fe87d80610c0ea8ea8024a0c08a49a88d80610c0ea8ea8026a0268317a13736572766963653a6465762d73657276696365'::bytea,
         now() + interval '1 day', now()
    FROM k
  ON CONFLICT (caller, request_id) DO NOTHING
  RETURNING request_id
), h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
  SELECT k.id, 'HOLD', 'HELD', 'c' || :client_id::text, k.caller, k.request_id, 'PESSIMISTIC',
         now() + interval '1 hour', now() + interval '2 hours'
    FROM k
  RETURNING id, status, expires_at, created_at
), lines AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, k.sku, 1, h.status, h.expires_at, h.created_at FROM h, k
  RETURNING reservation_id
), u AS (
  UPDATE inventory i
     SET reserved = i.reserved + 1, version = i.version + 1, updated_at = now()
    FROM k
   WHERE i.sku_code = k.sku
     AND i.on_hand >= 0 AND i.reserved + 1 >= 0 AND i.allocated >= 0 AND i.on_hand - (i.reserved + 1) - i.allocated >= 0
     AND i.waitlist_count = 0
     AND (SELECT count(*) FROM claim) + (SELECT count(*) FROM lines) = 2 -- one-time filter: the rows above are written first
  RETURNING i.sku_code, i.on_hand, i.reserved, i.allocated, i.version
)
INSERT INTO audit_events (
  operation, sku_code, reservation_id, delta_on_hand, delta_reserved, delta_allocated,
  on_hand_before, reserved_before, allocated_before, on_hand_after, reserved_after, allocated_after,
  version_after, actor, request_id)
SELECT 'HOLD_CREATED', u.sku_code, k.id, 0, 1, 0,
       u.on_hand, u.reserved - 1, u.allocated, u.on_hand, u.reserved, u.allocated,
       u.version, k.caller, k.request_id
  FROM u, k;
