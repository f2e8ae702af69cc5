/**
 * 0001_initial: the Holdfast schema.
 *
 * Design rules that every table below follows:
 *
 * - Every guarantee lives in the database. Any number of reservation-service and
 *   expiry-worker replicas share this schema, so nothing may depend on an in-process
 *   lock or cache: CHECK constraints, unique indexes, row locks and SKIP LOCKED do it.
 * - The contract (proto/) is the source of truth for every limit a client can hit:
 *   the identifier patterns, lengths and numeric bounds CHECKed here are the ones its
 *   doc comments state (see limits.ts, which exports the same numbers so that services
 *   refuse bad input with INVALID_ARGUMENT before a constraint could turn it into
 *   INTERNAL).
 * - Status / enum columns are `text` + `CHECK (col IN (...))`, not PostgreSQL ENUM
 *   types: the database still rejects garbage, the value set can be widened in a later
 *   migration with a plain ALTER (no `ALTER TYPE ... ADD VALUE` transaction caveats),
 *   and the values read back as plain strings in TypeScript. Values are the contract's
 *   enum value names without their prefix (RESERVATION_STATUS_HELD -> 'HELD'); the
 *   contract's UNSPECIFIED is never stored.
 * - "Empty" in the contract is NULL here, never '': an empty string, an unset
 *   Duration or a zero "no limit" value are all stored as NULL, one convention.
 * - Durations are bigint milliseconds (`*_ms`), one unit for every duration column
 *   whatever the contract's resolution for the field, and bigint leaves no hidden
 *   24.8-day ceiling.
 * - SKU codes are `COLLATE "C"` everywhere: the contract orders SKUs byte-wise (its
 *   ORDERS section), which is also the order services sort them in JavaScript and the
 *   row-lock order. With the database's default collation (say en_US) "B" < "a" would
 *   not hold, ORDER BY would disagree with the lock order, and it would differ between
 *   databases initialised with different locales.
 * - Constraints are named (`<table>_<rule>`) so that a violation reported by the
 *   driver (`error.constraint`) can be mapped to a precise error, and so that the
 *   name itself documents the rule.
 * - CHECKs are written so that a NULL cannot slip through them: a CHECK passes when it
 *   evaluates to NULL, so "x = 'v'" alone would accept x IS NULL.
 * - Timestamps are `timestamptz` defaulting to `now()`, which is the start of the
 *   transaction: every row written by one transaction carries the same instant.
 * - Ids are `gen_random_uuid()` (built into PostgreSQL 13+, no extension needed), or
 *   identity columns where arrival order matters (ledger, waitlist, snapshots).
 *
 * Statements are unqualified so the schema can be created in whatever schema is first
 * on the `search_path` (tests isolate themselves with one schema or database each).
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  // ---------------------------------------------------------------------------------
  // skus: the catalog and the per-SKU policy (the contract's Sku and SkuPolicy).
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE skus (
    -- The client-facing SKU code is the key: every API call names SKUs by code, so a
    -- surrogate id would only add a lookup. The contract's pattern keeps codes free of
    -- '/', ':', ',' and whitespace, because they appear in error subjects "sku/<code>"
    -- and in comma-separated ErrorInfo metadata. ListSkus' code_prefix filter is a
    -- range (code >= $p AND code < $p || chr(127)) or a LIKE with '_' escaped (codes
    -- may contain '_'); under COLLATE "C" the primary key index serves both.
    code                      text COLLATE "C" PRIMARY KEY,
    name                      text        NOT NULL,

    -- Per-SKU policy: one typed column per SkuPolicy field. NULL is the contract's
    -- "zero value = server default" (an UNSPECIFIED enum, an absent Duration), so
    -- changing a server setting affects every SKU that has not opted out, and
    -- Sku.policy is returned as stored. Where the contract's zero means "no limit"
    -- (max_units_per_customer, customer_attempt_rate_limit, max_waitlist_length) that
    -- is NULL too: 0 is never stored, so "unset" has one spelling. Bounds that depend
    -- on server settings (the minimum / maximum hold TTL) are the service's to check;
    -- the CHECKs below hold whatever the settings are. If a server setting is lowered
    -- below a stored value, the setting wins at request time (contract).
    default_locking_strategy  text        NULL,
    max_units_per_customer    integer     NULL,
    default_hold_ttl_ms       bigint      NULL,
    max_hold_ttl_ms           bigint      NULL,
    max_hold_lifetime_ms      bigint      NULL,
    -- customer_attempt_rate_limit (RateLimit): both NULL = no limit, or both set.
    rate_limit_max_attempts   integer     NULL,
    rate_limit_window_ms      bigint      NULL,
    -- proto3 booleans have no "unset": false is the contract's default.
    abandonment_aware_ttl     boolean     NOT NULL DEFAULT false,
    -- NULL = UNSPECIFIED, which the contract defines as OFF; stored as NULL because
    -- Sku.policy reads back as stored (the one "unset" convention). Every mode of the
    -- contract is accepted here; a mode that the running server version does not
    -- implement yet is refused by the service (UNIMPLEMENTED / NOT_IMPLEMENTED) and
    -- never stored. The schema does not know which build is running, so it must not
    -- be the one to refuse.
    hot_sku_mode              text        NULL,
    -- Bucket rows for BUCKETED (kept, and ignored, in the other modes).
    stock_buckets             integer     NULL,
    waitlist_disabled         boolean     NOT NULL DEFAULT false,
    max_waitlist_length       integer     NULL,
    waitlist_promotion_policy text        NULL,
    promotion_hold_ttl_ms     bigint      NULL,
    -- Sku.create_time / Sku.update_time (name or policy changes only; changes of the
    -- availability row are inventory.updated_at and inventory.version).
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT skus_code_format CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    -- 1-200 characters (code points, which is what char_length counts in a UTF8
    -- database), not blank. The blank test here only knows ASCII whitespace, a subset
    -- of what the service's check (JavaScript \\s) refuses, so every name the service
    -- accepts is accepted here.
    CONSTRAINT skus_name_valid CHECK (
      char_length(name) BETWEEN 1 AND 200 AND btrim(name, E' \\t\\n\\x0B\\f\\r') <> ''
    ),
    CONSTRAINT skus_default_locking_strategy_valid
      CHECK (default_locking_strategy IN ('OPTIMISTIC', 'PESSIMISTIC')),
    CONSTRAINT skus_max_units_per_customer_range CHECK (max_units_per_customer BETWEEN 1 AND 1000000),
    CONSTRAINT skus_default_hold_ttl_positive CHECK (default_hold_ttl_ms > 0),
    CONSTRAINT skus_max_hold_ttl_positive CHECK (max_hold_ttl_ms > 0),
    CONSTRAINT skus_default_hold_ttl_within_max CHECK (default_hold_ttl_ms <= max_hold_ttl_ms),
    -- "from the effective max_hold_ttl to 7 days".
    CONSTRAINT skus_max_hold_lifetime_range CHECK (max_hold_lifetime_ms BETWEEN 1 AND 604800000),
    CONSTRAINT skus_max_hold_ttl_within_lifetime CHECK (max_hold_ttl_ms <= max_hold_lifetime_ms),
    CONSTRAINT skus_rate_limit_complete
      CHECK ((rate_limit_max_attempts IS NULL) = (rate_limit_window_ms IS NULL)),
    CONSTRAINT skus_rate_limit_max_attempts_range CHECK (rate_limit_max_attempts BETWEEN 1 AND 1000000),
    -- 1 s - 1 h.
    CONSTRAINT skus_rate_limit_window_range CHECK (rate_limit_window_ms BETWEEN 1000 AND 3600000),
    CONSTRAINT skus_hot_sku_mode_valid CHECK (hot_sku_mode IN ('OFF', 'GROUP_COMMIT', 'BUCKETED')),
    CONSTRAINT skus_stock_buckets_range CHECK (stock_buckets BETWEEN 1 AND 256),
    CONSTRAINT skus_max_waitlist_length_range CHECK (max_waitlist_length BETWEEN 1 AND 1000000),
    CONSTRAINT skus_waitlist_promotion_policy_valid
      CHECK (waitlist_promotion_policy IN ('STRICT_FIFO', 'FIRST_FIT')),
    CONSTRAINT skus_promotion_hold_ttl_positive CHECK (promotion_hold_ttl_ms > 0),
    -- The contract's policy durations are whole seconds (a fraction is BAD_REQUEST);
    -- stored in milliseconds like every duration here.
    CONSTRAINT skus_policy_durations_whole_seconds CHECK (
      default_hold_ttl_ms % 1000 = 0 AND max_hold_ttl_ms % 1000 = 0 AND max_hold_lifetime_ms % 1000 = 0
      AND rate_limit_window_ms % 1000 = 0 AND promotion_hold_ttl_ms % 1000 = 0
    ),
    CONSTRAINT skus_promotion_hold_ttl_within_max CHECK (promotion_hold_ttl_ms <= max_hold_ttl_ms)
  )`,
  `COMMENT ON TABLE skus IS 'Holdfast catalog: one row per SKU code, with per-SKU policy (NULL = server default / no limit).'`,

  // ---------------------------------------------------------------------------------
  // inventory: THE canonical availability row, one per SKU (the contract's Availability).
  // ---------------------------------------------------------------------------------
  //
  // The lock window rule. A hot row is locked from its first write until COMMIT, so
  // the reservation rows (header, lines, idempotency record) are written first and the
  // inventory row is touched last, and the counter change and its ledger event are
  // ONE statement, so that the row lock is held for a single statement plus COMMIT and
  // never across a client round trip:
  //
  //   WITH u AS (
  //     UPDATE inventory
  //        SET reserved = reserved + $q, version = version + 1, updated_at = now()
  //      WHERE sku_code = $sku AND available >= $q
  //     RETURNING sku_code, on_hand, reserved, allocated, version
  //   )
  //   INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved,
  //          on_hand_before, reserved_before, allocated_before,
  //          on_hand_after, reserved_after, allocated_after, version_after,
  //          actor, request_id)
  //   SELECT 'HOLD_CREATED', u.sku_code, $reservation_id, $q,
  //          u.on_hand, u.reserved - $q, u.allocated,
  //          u.on_hand, u.reserved, u.allocated, u.version,
  //          $actor, $request_id
  //     FROM u
  //   RETURNING id, version_after
  //
  // RETURNING gives the values after the change; "before" is after minus the delta.
  // No row returned = the SKU is short (or, for OPTIMISTIC, add "AND version = $read"
  // to the WHERE: no row = lost the race or short; re-read to tell which). A batch
  // runs one such statement per SKU, in SKU order (COLLATE "C", the contract's lock
  // order), and rolls back if any of them returns no row.
  //
  // Under the STRICT_FIFO promotion policy, a new buyer must not take stock ahead of
  // the people waiting for it, so CreateHold / CreateAllocation add
  //     AND waitlist_count = 0
  // to the guard (a short answer then also covers "units are spoken for by the
  // queue"; the service tells the two apart from the returned row or a re-read).
  // Under FIRST_FIT no extra guard is needed as long as every return of stock
  // promotes every waiting entry that fits in the same transaction: what is left
  // available then fits nobody who is waiting.
  `
  CREATE TABLE inventory (
    sku_code       text COLLATE "C" PRIMARY KEY REFERENCES skus (code),
    on_hand        bigint      NOT NULL DEFAULT 0,
    reserved       bigint      NOT NULL DEFAULT 0,   -- units in HELD reservations
    allocated      bigint      NOT NULL DEFAULT 0,   -- units in ALLOCATED reservations
    -- available is derived, never written. One source of truth: it cannot disagree
    -- with the three counters. And because PostgreSQL evaluates it per row, a single
    -- guarded statement is the whole stock check (see above).
    available      bigint      NOT NULL GENERATED ALWAYS AS (on_hand - reserved - allocated) STORED,
    -- Availability.waitlist_length / waitlist_units: the number of WAITING entries of
    -- the SKU and the sum of their quantities. Maintained by JoinWaitlist, LeaveWaitlist,
    -- CreateHold(join_waitlist_if_short), promotion and the expiry of WAITING entries,
    -- each under this row's lock (the same statement that bumps version), so that
    -- the STRICT_FIFO guard above reads a value no concurrent join can invalidate,
    -- and so that watchers see the queue length change with a new version.
    -- CheckConsistency can compare them with the WAITING rows of waitlist_entries.
    waitlist_count integer     NOT NULL DEFAULT 0,
    waitlist_units bigint      NOT NULL DEFAULT 0,
    -- The attempt-rate input of Availability.demand_status (CreateHold attempts per
    -- minute for the SKU, as last recorded). demand_status itself is derived at read
    -- time from this row alone (available, waitlist_count, this; thresholds in
    -- docs/fairness.md), so it can only change together with version, as the contract
    -- requires. Written (with a version bump) only when the measured rate crosses one
    -- of the thresholds, never per attempt: this is the hottest row of a flash sale.
    recent_attempts_per_minute integer NOT NULL DEFAULT 0,
    -- Availability.version. Bumped by every change of the row, whatever the column:
    -- a counter, the waitlist counters, the demand input (version = version + 1 in the
    -- same statement). So two rows with one version carry the same values, and a
    -- WatchAvailability client can drop any update whose version is not newer than
    -- the one it has. OPTIMISTIC callers compare-and-set on it (WHERE version = $read);
    -- AdjustStock honours an expected version with it (a waitlist change makes an
    -- expected version stale too: contract). Starts at 1: CreateSku returns version 1.
    -- Not maintained by a trigger on purpose: the hot row is updated thousands of times
    -- a second in a flash sale and the benchmark compares us with the bare statement.
    -- Versions are not contiguous in the ledger (waitlist and demand changes write no
    -- audit event); CheckConsistency must not expect them to be.
    version        bigint      NOT NULL DEFAULT 1,
    -- Availability.update_time: when the row last changed (with version).
    updated_at     timestamptz NOT NULL DEFAULT now(),

    -- The database is the last line of defence against oversell: whatever a bug in a
    -- service does, a transaction that would make any counter negative, or promise
    -- more units than are on hand, fails and rolls back.
    CONSTRAINT inventory_on_hand_non_negative CHECK (on_hand >= 0),
    CONSTRAINT inventory_reserved_non_negative CHECK (reserved >= 0),
    CONSTRAINT inventory_allocated_non_negative CHECK (allocated >= 0),
    CONSTRAINT inventory_not_oversold CHECK (on_hand - reserved - allocated >= 0),
    CONSTRAINT inventory_waitlist_count_non_negative CHECK (waitlist_count >= 0),
    CONSTRAINT inventory_waitlist_units_non_negative CHECK (waitlist_units >= 0),
    -- Every entry wants at least one unit: no entries <=> no units, and units >= count.
    CONSTRAINT inventory_waitlist_counters_consistent
      CHECK ((waitlist_count = 0) = (waitlist_units = 0) AND waitlist_units >= waitlist_count),
    CONSTRAINT inventory_recent_attempts_non_negative CHECK (recent_attempts_per_minute >= 0),
    CONSTRAINT inventory_version_positive CHECK (version >= 1)
  )
  -- Small table (one row per SKU) whose rows are rewritten constantly. No indexed
  -- column changes on a counter update, so with free space on the page every update
  -- can be a HOT update (no index churn, dead versions pruned in-page). A low
  -- fillfactor keeps that space available; it costs almost nothing on a table this size.
  WITH (fillfactor = 50)`,
  `COMMENT ON TABLE inventory IS 'Canonical availability row per SKU (counters, waitlist counters, version); available is generated; CHECKs forbid oversell.'`,

  // ---------------------------------------------------------------------------------
  // reservations: one header per hold or direct allocation (the contract's Reservation).
  // ---------------------------------------------------------------------------------
  //
  // Read-time rules (not stored): a HELD hold whose expires_at has passed is reported
  // as EXPIRED with close_reason "expired" even before it is swept (expiry is a rule,
  // not a timer); its row stays HELD, and its units stay in reserved, until the
  // worker or an in-line reclaim moves it. Reservation.lines are its reservation_items
  // in SKU order.
  `
  CREATE TABLE reservations (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    type              text        NOT NULL,
    status            text        NOT NULL,
    customer_id       text        NOT NULL,
    -- The authenticated principal that created it, "<role>:<subject>", returned as
    -- Reservation.created_by; "system:waitlist" for a hold created by a promotion.
    -- Idempotency tokens are scoped per caller: two order services may both use
    -- request id "1" without colliding.
    caller            text        NOT NULL,
    -- NULL exactly for holds created by a waitlist promotion (they answer no request).
    request_id        text        NULL,
    locking_strategy  text        NOT NULL,  -- the strategy actually used (after defaults)
    -- Holds only; kept after confirmation as history (Reservation.expire_time).
    expires_at        timestamptz NULL,
    -- Holds only: the latest expires_at any ExtendHold may set, i.e. created_at + the
    -- effective max_hold_lifetime when the hold was created. Stored because existing
    -- reservations keep their terms when the SKU policy changes (UpdateSku), and it is
    -- the "max_expire_time" of HOLD_LIFETIME_EXCEEDED.
    max_expires_at    timestamptz NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),  -- status or expires_at changed
    -- Reservation.confirm_time: when it became ALLOCATED (ConfirmHold for a hold, the
    -- creation for a direct allocation, so both types store it).
    confirmed_at      timestamptz NULL,
    closed_at         timestamptz NULL,      -- reached RELEASED / EXPIRED / FULFILLED / CANCELLED
    -- Reservation.close_reason: the reason given to ReleaseHold / CancelAllocation
    -- (NULL when none was given), or 'expired' for an EXPIRED hold. NULL otherwise.
    close_reason      text        NULL,
    waitlist_entry_id uuid        NULL,      -- FK added below, once waitlist_entries exists
    version           integer     NOT NULL DEFAULT 0,

    CONSTRAINT reservations_type_valid CHECK (type IN ('HOLD', 'ALLOCATION')),
    CONSTRAINT reservations_status_valid
      CHECK (status IN ('HELD', 'ALLOCATED', 'RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED')),
    -- Lifecycle: HOLD: HELD -> ALLOCATED | RELEASED | EXPIRED; ALLOCATED -> FULFILLED | CANCELLED.
    -- A direct ALLOCATION starts at ALLOCATED, so it can never be HELD, RELEASED or EXPIRED.
    CONSTRAINT reservations_status_matches_type
      CHECK (type = 'HOLD' OR status IN ('ALLOCATED', 'FULFILLED', 'CANCELLED')),
    -- Expiry is a rule evaluated against expires_at, so a hold without one would live forever.
    CONSTRAINT reservations_hold_has_expiry CHECK ((type = 'HOLD') = (expires_at IS NOT NULL)),
    CONSTRAINT reservations_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT reservations_hold_has_max_expiry CHECK ((type = 'HOLD') = (max_expires_at IS NOT NULL)),
    -- max_hold_lifetime: "from its create_time to its expire_time, including every extension".
    CONSTRAINT reservations_expiry_within_lifetime CHECK (expires_at <= max_expires_at),
    -- closed_at is set exactly when a final state is reached (queries and retention rely on it).
    CONSTRAINT reservations_closed_at_iff_final
      CHECK ((status IN ('RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED')) = (closed_at IS NOT NULL)),
    -- confirmed_at is set exactly in the allocation states, for both types.
    CONSTRAINT reservations_confirmed_at_iff_allocated
      CHECK ((status IN ('ALLOCATED', 'FULFILLED', 'CANCELLED')) = (confirmed_at IS NOT NULL)),
    -- The contract's close_reason value set: free text (0-512 characters, empty =
    -- NULL) for RELEASED and CANCELLED, exactly 'expired' for EXPIRED, none otherwise.
    CONSTRAINT reservations_close_reason_valid CHECK (
      CASE
        WHEN status = 'EXPIRED' THEN close_reason IS NOT NULL AND close_reason = 'expired'
        WHEN status IN ('RELEASED', 'CANCELLED') THEN close_reason IS NULL OR char_length(close_reason) BETWEEN 1 AND 512
        ELSE close_reason IS NULL
      END
    ),
    CONSTRAINT reservations_locking_strategy_valid CHECK (locking_strategy IN ('OPTIMISTIC', 'PESSIMISTIC')),
    CONSTRAINT reservations_customer_id_format CHECK (customer_id ~ '^[A-Za-z0-9._:@-]{1,128}$'),
    CONSTRAINT reservations_caller_length CHECK (char_length(caller) BETWEEN 1 AND 256),
    CONSTRAINT reservations_request_id_format CHECK (request_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    -- Every API-created reservation answers a request (request_id is required by every
    -- mutating RPC); only a promotion's hold answers none, and it names its entry.
    CONSTRAINT reservations_request_id_unless_promoted
      CHECK ((request_id IS NULL) = (waitlist_entry_id IS NOT NULL)),
    CONSTRAINT reservations_waitlist_only_for_holds CHECK (waitlist_entry_id IS NULL OR type = 'HOLD'),
    CONSTRAINT reservations_version_non_negative CHECK (version >= 0),
    -- Backstop for idempotency (idempotency_records is the primary mechanism): one
    -- reservation per (caller, request id), whatever happens to the records table.
    -- It also carries the contract's rule that a request_id attached to a reservation
    -- stays taken for that caller forever, after its idempotency record is pruned
    -- (a later request with it is IDEMPOTENCY_KEY_REUSED naming the reservation; the
    -- service looks in waitlist_entries too, by the same (caller, request_id) prefix,
    -- since no index spans both tables). NULL request ids are distinct, so promotions
    -- are unaffected. Usable as an arbiter: INSERT ... ON CONFLICT (caller, request_id)
    -- DO NOTHING.
    CONSTRAINT reservations_caller_request_id_key UNIQUE (caller, request_id)
  )`,
  `COMMENT ON TABLE reservations IS 'Reservation headers (holds and direct allocations) with their lifecycle status.'`,
  // The expiry sweeper's claim query:
  //   SELECT id FROM reservations WHERE status = 'HELD' AND expires_at <= now()
  //    ORDER BY expires_at LIMIT $n FOR UPDATE SKIP LOCKED
  // its "when is the next expiry" query (min(expires_at) WHERE status = 'HELD'), and
  // WorkerStatus.overdue_holds / oldest_overdue / next_expire_time. Partial: only live
  // holds are indexed, so the index stays as small as the set of active holds even
  // when the table holds millions of closed reservations.
  `CREATE INDEX reservations_held_expires_at_idx ON reservations (expires_at) WHERE status = 'HELD'`,
  // ListReservations by customer, newest first (created_at DESC, id DESC: the index
  // is scanned backwards), keyset-paginated; also the per-customer limit (units in
  // this customer's HELD/ALLOCATED reservations) and the abandonment-aware TTL (how
  // many of this customer's holds expired recently).
  `CREATE INDEX reservations_customer_created_idx ON reservations (customer_id, created_at, id)`,
  // ListReservations by status, newest first, keyset-paginated on (created_at, id).
  `CREATE INDEX reservations_status_created_idx ON reservations (status, created_at, id)`,
  // ListReservations with no customer/status filter (or only a type filter), newest
  // first: without it every page would be a full scan and a sort.
  `CREATE INDEX reservations_created_idx ON reservations (created_at, id)`,

  // ---------------------------------------------------------------------------------
  // reservation_items: the lines of a reservation (Reservation.lines).
  // ---------------------------------------------------------------------------------
  //
  // Lines are stored and returned in SKU order (ORDER BY sku_code, COLLATE "C"), which
  // is also the lock order; the request's own line order is not kept (the contract
  // returns lines in SKU order whatever the request's order).
  //
  // status and expires_at are copies of the header's. They exist so that per-SKU
  // questions about live holds can be answered from one index without a join to the
  // headers (PostgreSQL cannot index across a join): "this SKU's expired holds" (the
  // in-line reclaim of CreateHold), "Σ HELD quantity of this SKU" (CheckConsistency,
  // reconciliation) and "this SKU's HELD reservations" (ListReservations by SKU). The
  // service keeps them in step: every statement that changes a header's status or
  // expires_at (create, confirm, release, expire, fulfil, cancel, ExtendHold) updates
  // the reservation's lines in the same transaction, before the inventory row is
  // touched. CheckConsistency verifies it (a line whose status or expires_at differs
  // from its header's is a violation), so a bug cannot hide.
  //
  // Deadlock rule for the in-line reclaim. A CreateHold holds (or will take) the
  // inventory rows of its own SKUs, in SKU order: its lock set. It may reclaim only
  // expired holds whose EVERY line's SKU is inside that sorted lock set:
  //   SELECT i.reservation_id FROM reservation_items i
  //    WHERE i.sku_code = ANY($lock_set) AND i.status = 'HELD' AND i.expires_at <= now()
  //      AND NOT EXISTS (SELECT 1 FROM reservation_items o
  //                       WHERE o.reservation_id = i.reservation_id
  //                         AND o.sku_code <> ALL($lock_set))
  // and claims their headers with FOR UPDATE SKIP LOCKED. Expired holds that also
  // touch other SKUs are left to the sweeper. So a reclaim never locks an inventory
  // row out of order, and never waits for a header (the sweeper, which claims headers
  // first and then locks their SKUs in order, may be waiting for our rows).
  `
  CREATE TABLE reservation_items (
    reservation_id uuid        NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    sku_code       text COLLATE "C" NOT NULL REFERENCES skus (code),
    quantity       integer     NOT NULL,
    -- Copies of reservations.status / expires_at (see above), and of created_at, which
    -- never changes, for ListReservations by SKU in the header's order.
    status         text        NOT NULL,
    expires_at     timestamptz NULL,
    created_at     timestamptz NOT NULL,

    -- One row per SKU per reservation. Lines naming the same SKU are summed before the
    -- insert (checking two lines of one SKU separately against the same availability is
    -- how Medusa oversold); the primary key makes an unsummed batch fail loudly.
    CONSTRAINT reservation_items_pkey PRIMARY KEY (reservation_id, sku_code),
    -- 1-1,000,000 in a request line and after summing (contract).
    CONSTRAINT reservation_items_quantity_range CHECK (quantity BETWEEN 1 AND 1000000),
    CONSTRAINT reservation_items_status_valid
      CHECK (status IN ('HELD', 'ALLOCATED', 'RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED')),
    CONSTRAINT reservation_items_held_has_expiry CHECK (status <> 'HELD' OR expires_at IS NOT NULL)
  )`,
  `COMMENT ON TABLE reservation_items IS 'Reservation lines: one row per SKU per reservation (duplicate SKUs summed); status/expires_at copied from the header.'`,
  // Per-SKU questions over all lines: allocated = Σ ALLOCATED lines (consistency check,
  // reconciliation recount), ListReservations by SKU in any status, and the FK from
  // skus. quantity is INCLUDEd so the sums need not visit the heap for the line itself.
  `CREATE INDEX reservation_items_sku_reservation_idx ON reservation_items (sku_code, reservation_id) INCLUDE (quantity)`,
  // Live holds per SKU: the in-line reclaim (WHERE sku_code = ANY($lock_set) AND
  // expires_at <= now()), Σ HELD quantity per SKU, and ListReservations by SKU for
  // HELD. Partial, so it is as small as the set of live holds; reservation_id and
  // quantity are INCLUDEd so all three can be index-only scans.
  `CREATE INDEX reservation_items_held_sku_expires_idx ON reservation_items (sku_code, expires_at)
     INCLUDE (reservation_id, quantity) WHERE status = 'HELD'`,
  // ListReservations by SKU, newest first, keyset-paginated on (created_at,
  // reservation_id) like the header indexes.
  `CREATE INDEX reservation_items_sku_created_idx ON reservation_items (sku_code, created_at, reservation_id)`,

  // ---------------------------------------------------------------------------------
  // reconciliation_runs: each check / repair run and what it found (the worker's
  // ReconciliationRun). Created before audit_events, whose repairs reference it.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE reconciliation_runs (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    mode               text        NOT NULL,
    status             text        NOT NULL DEFAULT 'RUNNING',
    -- "trigger" is a non-reserved word in PostgreSQL: usable unquoted as a column.
    trigger            text        NOT NULL,
    -- "<role>:<subject>" of the RunReconciliation caller, or 'system:schedule'.
    requested_by       text        NOT NULL,
    -- The RunReconciliation request_id (NULL when scheduled).
    request_id         text        NULL,
    -- The replica that runs (ran) it; it holds the lease while RUNNING.
    worker_id          text        NOT NULL,
    sku_filter         text[]      NULL,       -- ReconciliationRun.skus, in SKU order; NULL = every SKU
    created_at         timestamptz NOT NULL DEFAULT now(),  -- requested
    started_at         timestamptz NULL,       -- started checking (NULL while not yet started)
    finished_at        timestamptz NULL,
    -- ReconciliationRun.lease_expire_time. While RUNNING, the worker running it renews
    -- this lease; a RUNNING run whose lease has passed belongs to a dead worker and no
    -- longer blocks overlapping runs: any replica ends it FAILED ("worker <id>
    -- stopped: lease expired at <time>") with
    --   UPDATE ... WHERE id = $1 AND status = 'RUNNING' AND lease_expires_at < now()
    -- (the WHERE makes two replicas doing it at once harmless). Never cleared: after
    -- the run ends it is the last lease the run held.
    lease_expires_at   timestamptz NULL,
    skus_checked       integer     NOT NULL DEFAULT 0,
    skus_with_findings integer     NOT NULL DEFAULT 0,
    finding_count      integer     NOT NULL DEFAULT 0,
    repaired_count     integer     NOT NULL DEFAULT 0,
    -- ReconciliationFinding objects (see ReconciliationFindingJson in rows.ts), ordered
    -- by SKU then counter. A JSON array rather than a table: findings are written and
    -- read as a whole with their run, never queried one by one.
    findings           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error              text        NULL,

    CONSTRAINT reconciliation_runs_mode_valid CHECK (mode IN ('CHECK', 'REPAIR')),
    CONSTRAINT reconciliation_runs_status_valid CHECK (status IN ('RUNNING', 'OK', 'ISSUES', 'FAILED')),
    CONSTRAINT reconciliation_runs_trigger_valid CHECK (trigger IN ('SCHEDULED', 'ON_DEMAND')),
    CONSTRAINT reconciliation_runs_requested_by_length CHECK (char_length(requested_by) BETWEEN 1 AND 256),
    CONSTRAINT reconciliation_runs_worker_id_length CHECK (char_length(worker_id) BETWEEN 1 AND 256),
    CONSTRAINT reconciliation_runs_request_id_format CHECK (request_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    -- An on-demand run answers a RunReconciliation request; a scheduled one answers none.
    CONSTRAINT reconciliation_runs_request_id_iff_on_demand
      CHECK ((trigger = 'ON_DEMAND') = (request_id IS NOT NULL)),
    -- Empty filter = every SKU = NULL; at most 10,000 SKUs (contract).
    CONSTRAINT reconciliation_runs_sku_filter_size CHECK (cardinality(sku_filter) BETWEEN 1 AND 10000),
    -- A run is finished exactly when it has left RUNNING.
    CONSTRAINT reconciliation_runs_finished_iff_done CHECK ((status = 'RUNNING') = (finished_at IS NULL)),
    -- Times are the database's (now()), never a worker's clock, or this could fail.
    CONSTRAINT reconciliation_runs_finished_after_start
      CHECK (finished_at >= COALESCE(started_at, created_at)),
    -- OK and ISSUES are verdicts of a run that ran; FAILED may have died before starting.
    CONSTRAINT reconciliation_runs_verdict_has_started
      CHECK (status NOT IN ('OK', 'ISSUES') OR started_at IS NOT NULL),
    CONSTRAINT reconciliation_runs_running_has_lease CHECK (status <> 'RUNNING' OR lease_expires_at IS NOT NULL),
    -- error: "Why the run FAILED. Empty otherwise."
    CONSTRAINT reconciliation_runs_error_iff_failed CHECK ((status = 'FAILED') = (error IS NOT NULL)),
    CONSTRAINT reconciliation_runs_counts_non_negative
      CHECK (skus_checked >= 0 AND skus_with_findings >= 0 AND finding_count >= 0 AND repaired_count >= 0),
    CONSTRAINT reconciliation_runs_skus_with_findings_bounded CHECK (
      skus_with_findings <= skus_checked AND skus_with_findings <= finding_count
      AND (finding_count = 0) = (skus_with_findings = 0)
    ),
    CONSTRAINT reconciliation_runs_verdict_matches_findings
      CHECK (CASE status WHEN 'OK' THEN finding_count = 0 WHEN 'ISSUES' THEN finding_count > 0 ELSE true END),
    -- Check mode never writes; repair cannot fix more than it found.
    CONSTRAINT reconciliation_runs_repairs_bounded
      CHECK (repaired_count <= finding_count AND (mode = 'REPAIR' OR repaired_count = 0)),
    CONSTRAINT reconciliation_runs_findings_is_array CHECK (jsonb_typeof(findings) = 'array'),
    -- Backstop for RunReconciliation's idempotency (as for reservations).
    CONSTRAINT reconciliation_runs_requested_by_request_id_key UNIQUE (requested_by, request_id)
  )`,
  `COMMENT ON TABLE reconciliation_runs IS 'Reconciliation runs (check or repair) with their findings; RUNNING runs hold a lease.'`,
  // ListReconciliationRuns, newest first (create_time descending, then id),
  // keyset-paginated; WorkerStatus.last_reconciliation is its first row.
  `CREATE INDEX reconciliation_runs_created_idx ON reconciliation_runs (created_at DESC, id DESC)`,
  // The RUNNING runs: stale leases to take over, and the RECONCILIATION_IN_PROGRESS
  // test (does a RUNNING run overlap the requested SKUs?). Two replicas starting
  // overlapping runs at the same moment must serialise that test themselves (e.g.
  // pg_advisory_xact_lock on one key around "check, then INSERT"): SKU-set overlap is
  // not something a unique index can express.
  `CREATE INDEX reconciliation_runs_running_lease_idx ON reconciliation_runs (lease_expires_at) WHERE status = 'RUNNING'`,

  // ---------------------------------------------------------------------------------
  // audit_events: the append-only ledger of every stock counter change (AuditEvent).
  // ---------------------------------------------------------------------------------
  //
  // Written in the same statement as the counter change it records (the one-statement
  // shape is above the inventory table): the event is inserted while the inventory
  // row lock is held, from the values the UPDATE returned, so it cannot disagree with
  // the row and costs no extra round trip inside the lock window. Only stock counter
  // changes write events: ExtendHold, no-op calls and waitlist-only changes do not
  // (they must not lock the hot row just to log).
  `
  CREATE TABLE audit_events (
    -- Identity, not uuid: the ledger is read in order. Per SKU, id order is the order of
    -- the counter changes, because every event for a SKU is inserted while holding that
    -- SKU's inventory row lock (the event carries the before/after values read under it).
    -- Across SKUs ids are assigned at insert, not at commit, so a reader tailing the
    -- whole ledger by id may see a gap fill in later.
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at           timestamptz NOT NULL DEFAULT now(),
    operation             text        NOT NULL,
    sku_code              text COLLATE "C" NOT NULL REFERENCES skus (code),
    reservation_id        uuid        NULL REFERENCES reservations (id),
    delta_on_hand         bigint      NOT NULL DEFAULT 0,
    delta_reserved        bigint      NOT NULL DEFAULT 0,
    delta_allocated       bigint      NOT NULL DEFAULT 0,
    on_hand_before        bigint      NOT NULL,
    reserved_before       bigint      NOT NULL,
    allocated_before      bigint      NOT NULL,
    on_hand_after         bigint      NOT NULL,
    reserved_after        bigint      NOT NULL,
    allocated_after       bigint      NOT NULL,
    -- inventory.version right after the change (RETURNING version). Versions also move
    -- on changes that write no event, so consecutive events of a SKU may skip versions.
    version_after         bigint      NOT NULL,
    actor                 text        NOT NULL,   -- "<role>:<subject>", "worker:<id>", "system:waitlist"
    request_id            text        NULL,       -- the client's request_id; NULL for worker changes
    reason                text        NULL,
    -- The run that wrote a RECONCILIATION_REPAIR event.
    reconciliation_run_id uuid        NULL REFERENCES reconciliation_runs (id),
    details               jsonb       NULL,

    -- Exactly the contract's AuditOperation values. There is deliberately no
    -- HOLD_EXTENDED: ExtendHold changes no counter.
    CONSTRAINT audit_events_operation_valid CHECK (operation IN (
      'SKU_CREATED', 'STOCK_ADJUSTED',
      'HOLD_CREATED', 'HOLD_CONFIRMED', 'HOLD_RELEASED', 'HOLD_EXPIRED',
      'ALLOCATION_CREATED', 'ALLOCATION_FULFILLED', 'ALLOCATION_CANCELLED',
      'WAITLIST_PROMOTED', 'RECONCILIATION_REPAIR'
    )),
    -- Each event is internally consistent, so the counters can be rebuilt as
    -- SUM(delta_*) per SKU and every step of the replay can be checked against the
    -- recorded before/after values.
    CONSTRAINT audit_events_on_hand_arithmetic CHECK (on_hand_before + delta_on_hand = on_hand_after),
    CONSTRAINT audit_events_reserved_arithmetic CHECK (reserved_before + delta_reserved = reserved_after),
    CONSTRAINT audit_events_allocated_arithmetic CHECK (allocated_before + delta_allocated = allocated_after),
    -- Each operation moves the counters in exactly one way. A bug that, say, confirms a
    -- hold without taking the units out of reserved cannot write its event, so its
    -- transaction fails instead of silently corrupting the books. Only a repair may
    -- move counters arbitrarily (and it is itself recorded). Note for repairs: when a
    -- counter was changed outside the ledger, SUM(deltas) still gives the old value, so
    -- keeping "counters = SUM(deltas)" takes two RECONCILIATION_REPAIR events: one that
    -- records the drift (before = the ledger's value, after = the value found) and one
    -- that corrects it (before = found, after = repaired); details can tell them apart.
    -- Not enforced here (it spans rows): each event's before = the previous event's
    -- after for the same SKU; reconciliation checks that chain.
    CONSTRAINT audit_events_delta_shape CHECK (
      CASE operation
        WHEN 'SKU_CREATED' THEN
          delta_reserved = 0 AND delta_allocated = 0 AND delta_on_hand >= 0
          AND on_hand_before = 0 AND reserved_before = 0 AND allocated_before = 0
        WHEN 'STOCK_ADJUSTED' THEN delta_reserved = 0 AND delta_allocated = 0
        WHEN 'HOLD_CREATED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved > 0
        WHEN 'WAITLIST_PROMOTED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved > 0
        WHEN 'HOLD_CONFIRMED' THEN delta_on_hand = 0 AND delta_allocated > 0 AND delta_reserved = -delta_allocated
        WHEN 'HOLD_RELEASED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved < 0
        WHEN 'HOLD_EXPIRED' THEN delta_on_hand = 0 AND delta_allocated = 0 AND delta_reserved < 0
        WHEN 'ALLOCATION_CREATED' THEN delta_on_hand = 0 AND delta_reserved = 0 AND delta_allocated > 0
        WHEN 'ALLOCATION_FULFILLED' THEN delta_reserved = 0 AND delta_allocated < 0 AND delta_on_hand = delta_allocated
        WHEN 'ALLOCATION_CANCELLED' THEN delta_on_hand = 0 AND delta_reserved = 0 AND delta_allocated < 0
        WHEN 'RECONCILIATION_REPAIR' THEN true
        ELSE false
      END
    ),
    -- SKU_CREATED is the first event of every SKU and leaves version 1 (contract);
    -- every later change bumps the version past it.
    CONSTRAINT audit_events_version_after_valid
      -- Not "> 1" for the others: an event that moves no counter keeps the version
      -- (the "record the drift" half of a repair on a SKU still at version 1).
      CHECK (CASE WHEN operation = 'SKU_CREATED' THEN version_after = 1 ELSE version_after >= 1 END),
    -- Reservation lifecycle events must say which reservation they belong to.
    CONSTRAINT audit_events_reservation_required CHECK (
      operation IN ('SKU_CREATED', 'STOCK_ADJUSTED', 'RECONCILIATION_REPAIR') OR reservation_id IS NOT NULL
    ),
    -- Repairs are only made by reconciliation runs, and say which one.
    CONSTRAINT audit_events_run_iff_repair
      CHECK ((operation = 'RECONCILIATION_REPAIR') = (reconciliation_run_id IS NOT NULL)),
    CONSTRAINT audit_events_actor_length CHECK (char_length(actor) BETWEEN 1 AND 256),
    CONSTRAINT audit_events_request_id_format CHECK (request_id ~ '^[A-Za-z0-9._:-]{1,128}$')
  )`,
  `COMMENT ON TABLE audit_events IS 'Append-only ledger: one row per stock counter change (per SKU); counters = SUM(deltas). UPDATE/DELETE/TRUNCATE are refused by trigger.'`,
  // Append-only is what makes the ledger evidence: if events could be edited, "the
  // counters equal the ledger replay" would prove nothing, and a repair could hide
  // drift instead of recording it. Corrections are new events (RECONCILIATION_REPAIR).
  // Statement-level triggers fire even when no row matches and cost nothing per row.
  // (A superuser can still DISABLE TRIGGER or DROP TABLE; this guards against
  // application bugs and careless SQL, not against the DBA.)
  `
  CREATE FUNCTION audit_events_reject_rewrite() RETURNS trigger
  LANGUAGE plpgsql AS $fn$
  BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
      USING ERRCODE = 'restrict_violation',
            HINT = 'Record a correction as a new event (operation RECONCILIATION_REPAIR).';
  END
  $fn$`,
  `
  CREATE TRIGGER audit_events_append_only
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_rewrite()`,
  // Ledger replay per SKU (SUM of deltas, in id order) and ListAuditEvents by SKU,
  // ascending id, keyset-paginated on id. (Without a filter: the primary key.)
  `CREATE INDEX audit_events_sku_id_idx ON audit_events (sku_code, id)`,
  // ListAuditEvents by reservation. Partial: stock adjustments carry no reservation.
  `CREATE INDEX audit_events_reservation_id_idx ON audit_events (reservation_id, id) WHERE reservation_id IS NOT NULL`,
  // A run's repair events (ReconciliationFinding.repair_audit_event_id), and the FK.
  // Partial: only repairs carry a run, so it stays tiny.
  `CREATE INDEX audit_events_reconciliation_run_id_idx ON audit_events (reconciliation_run_id, id)
     WHERE reconciliation_run_id IS NOT NULL`,

  // ---------------------------------------------------------------------------------
  // inventory_snapshots: periodic / on-demand copies of the availability rows
  // (AvailabilitySnapshot).
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE inventory_snapshots (
    -- AvailabilitySnapshot.id, rendered as a decimal string (the contract calls it
    -- opaque and unordered, so this may change without breaking clients).
    id                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One uuid per snapshot pass, drawn by the worker: two replicas snapshotting at
    -- the same moment never mix their rows (taken_at alone could collide).
    snapshot_run_id      uuid        NOT NULL,
    -- AvailabilitySnapshot.snapshot_time: the pass's consistent-read time. now() is
    -- per transaction, and a pass is one transaction, so all its rows share it.
    taken_at             timestamptz NOT NULL DEFAULT now(),
    sku_code             text COLLATE "C" NOT NULL REFERENCES skus (code),
    -- The availability row as read (Availability: counters, version, waitlist
    -- counters, update_time). demand_status is not recorded (contract: UNSPECIFIED).
    on_hand              bigint      NOT NULL,
    reserved             bigint      NOT NULL,
    allocated            bigint      NOT NULL,
    available            bigint      NOT NULL,
    version              bigint      NOT NULL,
    waitlist_count       integer     NOT NULL,
    waitlist_units       bigint      NOT NULL,
    inventory_updated_at timestamptz NOT NULL,   -- inventory.updated_at (Availability.update_time)
    -- The SKU's last ledger event visible to the snapshot's transaction (NULL if the
    -- SKU had none). Counters and ledger are written in the same transaction, so
    -- counters = this snapshot + SUM(deltas WHERE id > last_audit_event_id): a
    -- reconciliation may replay from the latest snapshot instead of from the start.
    last_audit_event_id  bigint      NULL,
    trigger              text        NOT NULL,

    CONSTRAINT inventory_snapshots_trigger_valid CHECK (trigger IN ('SCHEDULED', 'ON_DEMAND')),
    CONSTRAINT inventory_snapshots_counters_non_negative
      CHECK (on_hand >= 0 AND reserved >= 0 AND allocated >= 0 AND available >= 0
             AND waitlist_count >= 0 AND waitlist_units >= 0),
    CONSTRAINT inventory_snapshots_available_derived CHECK (available = on_hand - reserved - allocated),
    CONSTRAINT inventory_snapshots_version_positive CHECK (version >= 1),
    -- One row per SKU per pass.
    CONSTRAINT inventory_snapshots_run_sku_key UNIQUE (snapshot_run_id, sku_code)
  )`,
  `COMMENT ON TABLE inventory_snapshots IS 'History of availability rows, one row per SKU per snapshot pass (snapshot_run_id); pruned by retention.'`,
  // ListAvailabilitySnapshots orders by snapshot_time, then SKU order, oldest first;
  // rows of two passes with the same taken_at and SKU come in recording order, which
  // is id order (keyset on all three).
  // Without a SKU filter this index; with one, the next. Also retention
  // (DELETE ... WHERE taken_at < $cutoff) and WorkerStatus.last_snapshot_time (max).
  `CREATE INDEX inventory_snapshots_taken_sku_idx ON inventory_snapshots (taken_at, sku_code, id)`,
  // ListAvailabilitySnapshots for one SKU: oldest first by (taken_at, id).
  `CREATE INDEX inventory_snapshots_sku_taken_idx ON inventory_snapshots (sku_code, taken_at, id)`,

  // ---------------------------------------------------------------------------------
  // worker_replicas: the expiry-worker processes known through the database
  // (WorkerStatus.replicas).
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE worker_replicas (
    worker_id    text        PRIMARY KEY,   -- unique per process
    -- WorkerReplica.host is rendered as host || '/' || pid ("host-a/12345").
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    version      text        NOT NULL,      -- the worker's software version
    started_at   timestamptz NOT NULL DEFAULT now(),
    -- Renewed periodically by the replica; replicas with a heartbeat in the last minute
    -- are listed, older rows are pruned by retention.
    heartbeat_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT worker_replicas_worker_id_length CHECK (char_length(worker_id) BETWEEN 1 AND 256),
    CONSTRAINT worker_replicas_host_length CHECK (char_length(host) BETWEEN 1 AND 256),
    CONSTRAINT worker_replicas_pid_positive CHECK (pid > 0),
    CONSTRAINT worker_replicas_version_length CHECK (char_length(version) BETWEEN 1 AND 256)
  )`,
  `COMMENT ON TABLE worker_replicas IS 'Expiry-worker replicas and their heartbeats (WorkerStatus.replicas).'`,
  // "Replicas with a heartbeat in the last minute", and pruning the dead ones.
  `CREATE INDEX worker_replicas_heartbeat_at_idx ON worker_replicas (heartbeat_at)`,

  // ---------------------------------------------------------------------------------
  // waitlist_entries: the FIFO queue of customers waiting for stock to return
  // (WaitlistEntry).
  // ---------------------------------------------------------------------------------
  //
  // Queue order is seq, never created_at: listings, positions and promotion all
  // order by seq (entries created in one transaction share a created_at, and a
  // transaction that started earlier may insert later).
  //
  // Derived at read time (not stored): WaitlistEntry.position = 1 + the number of
  // WAITING entries of the SKU with a smaller seq, and units_ahead = the sum of their
  // quantities (both 0 when not WAITING); one index-only scan of
  // waitlist_entries_waiting_sku_seq_idx.
  //
  // Lifecycle (contract): WAITING -> PROMOTED | EXPIRED | CANCELLED;
  // PROMOTED -> CONFIRMED | EXPIRED | CANCELLED. EXPIRED means either the entry's own
  // expires_at passed while WAITING (no hold), or its promoted hold expired
  // unconfirmed (the turn is lost). CANCELLED: LeaveWaitlist, or its hold released.
  `
  CREATE TABLE waitlist_entries (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Arrival order, the FIFO key. Assigned at INSERT. For seq order to be commit
    -- order among a SKU's entries, draw it while holding the SKU's inventory row lock:
    -- the join is one statement, the counter update first and the insert from it,
    --   WITH u AS (UPDATE inventory SET waitlist_count = waitlist_count + 1,
    --                     waitlist_units = waitlist_units + $q, version = version + 1,
    --                     updated_at = now()
    --               WHERE sku_code = $sku RETURNING sku_code)
    --   INSERT INTO waitlist_entries (sku_code, ...) SELECT u.sku_code, ... FROM u
    -- (the INSERT's rows, and so their seq, only exist once the UPDATE has the lock).
    -- Promotions run under the same lock, so a promoter always sees the true head.
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    sku_code       text COLLATE "C" NOT NULL REFERENCES skus (code),
    customer_id    text        NOT NULL,
    quantity       integer     NOT NULL,
    status         text        NOT NULL DEFAULT 'WAITING',
    caller         text        NOT NULL,
    -- The request_id of the JoinWaitlist, or of the CreateHold(join_waitlist_if_short)
    -- that created the entry (shared by that CreateHold's entries, one per short SKU).
    request_id     text        NOT NULL,
    -- The hold created by the promotion.
    reservation_id uuid        NULL REFERENCES reservations (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- The entry's own deadline (now() + JoinWaitlist.max_wait): if still WAITING then,
    -- it becomes EXPIRED. NULL = waits until promoted or cancelled.
    expires_at     timestamptz NULL,
    promoted_at    timestamptz NULL,
    closed_at      timestamptz NULL,

    CONSTRAINT waitlist_entries_status_valid
      CHECK (status IN ('WAITING', 'PROMOTED', 'CONFIRMED', 'EXPIRED', 'CANCELLED')),
    CONSTRAINT waitlist_entries_quantity_range CHECK (quantity BETWEEN 1 AND 1000000),
    CONSTRAINT waitlist_entries_customer_id_format CHECK (customer_id ~ '^[A-Za-z0-9._:@-]{1,128}$'),
    CONSTRAINT waitlist_entries_caller_length CHECK (char_length(caller) BETWEEN 1 AND 256),
    CONSTRAINT waitlist_entries_request_id_format CHECK (request_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    CONSTRAINT waitlist_entries_expiry_after_creation CHECK (expires_at > created_at),
    -- A waiting entry has no hold and is not closed.
    CONSTRAINT waitlist_entries_waiting_is_open CHECK (
      status <> 'WAITING' OR (reservation_id IS NULL AND promoted_at IS NULL AND closed_at IS NULL)
    ),
    -- PROMOTED and CONFIRMED have a hold. EXPIRED and CANCELLED may or may not have had
    -- one (expired / left while WAITING, or their promoted hold expired / was released).
    CONSTRAINT waitlist_entries_promoted_has_hold CHECK (
      status NOT IN ('PROMOTED', 'CONFIRMED') OR reservation_id IS NOT NULL
    ),
    -- In every status: promoted exactly when there is a hold.
    CONSTRAINT waitlist_entries_hold_iff_promoted_at CHECK ((reservation_id IS NULL) = (promoted_at IS NULL)),
    CONSTRAINT waitlist_entries_closed_at_iff_final CHECK (
      (status IN ('CONFIRMED', 'EXPIRED', 'CANCELLED')) = (closed_at IS NOT NULL)
    ),
    -- Idempotent JoinWaitlist / CreateHold per caller, and the request_id stays taken
    -- after the idempotency record is pruned (as for reservations; lookups by the
    -- (caller, request_id) prefix of this key). sku_code is part of the key because
    -- one CreateHold(join_waitlist_if_short) for several short SKUs creates one entry
    -- per short SKU under its one request_id.
    CONSTRAINT waitlist_entries_caller_request_id_sku_key UNIQUE (caller, request_id, sku_code)
  )`,
  `COMMENT ON TABLE waitlist_entries IS 'FIFO waitlist per SKU (seq = queue order, never created_at); the head is promoted to a hold when stock returns.'`,
  // Head of the queue, positions and units_ahead: WHERE sku_code = $1 AND status =
  // 'WAITING' ORDER BY seq (also ListWaitlistEntries for a SKU and [WAITING]).
  // Partial, so it only holds the people still waiting; quantity INCLUDEd for
  // index-only units_ahead and FIRST_FIT scans.
  `CREATE INDEX waitlist_entries_waiting_sku_seq_idx ON waitlist_entries (sku_code, seq)
     INCLUDE (quantity) WHERE status = 'WAITING'`,
  // One active (WAITING or PROMOTED) entry per customer per SKU: a second join cannot
  // jump the queue or double a customer's claim while the first is waiting or holding
  // its promoted hold; enforced even under concurrent joins.
  // (ALREADY_EXISTS / WAITLIST_ENTRY_ALREADY_EXISTS.)
  `CREATE UNIQUE INDEX waitlist_entries_one_active_per_customer
     ON waitlist_entries (sku_code, customer_id) WHERE status IN ('WAITING', 'PROMOTED')`,
  // The worker's expiry of WAITING entries past their own deadline
  // (WHERE status = 'WAITING' AND expires_at <= now() ... FOR UPDATE SKIP LOCKED, then
  // the SKU's waitlist counters decremented under its row lock).
  `CREATE INDEX waitlist_entries_waiting_expires_at_idx ON waitlist_entries (expires_at) WHERE status = 'WAITING'`,
  // ListWaitlistEntries is always in queue order (ascending seq, keyset on seq),
  // whatever the filters. By SKU in any status (and the FK from skus):
  `CREATE INDEX waitlist_entries_sku_seq_idx ON waitlist_entries (sku_code, seq)`,
  // By customer, and WatchWaitlist(customer)'s initial state (WAITING and PROMOTED
  // entries, in queue order):
  `CREATE INDEX waitlist_entries_customer_seq_idx ON waitlist_entries (customer_id, seq)`,
  // Without filters (entries of all SKUs interleaved in arrival order). Unique:
  // identity values are never reused, and it makes seq alone a valid cursor.
  `CREATE UNIQUE INDEX waitlist_entries_seq_key ON waitlist_entries (seq)`,
  // From a hold back to its entry (when a promoted hold is confirmed, expires or is
  // released, the entry becomes CONFIRMED, EXPIRED or CANCELLED).
  `CREATE INDEX waitlist_entries_reservation_id_idx ON waitlist_entries (reservation_id) WHERE reservation_id IS NOT NULL`,
  // reservations.waitlist_entry_id -> waitlist_entries: added now that both exist
  // (the two tables reference each other). A promotion inserts the hold (pointing at
  // the entry), then marks the entry PROMOTED with the hold's id, in one transaction.
  `ALTER TABLE reservations
     ADD CONSTRAINT reservations_waitlist_entry_id_fkey
     FOREIGN KEY (waitlist_entry_id) REFERENCES waitlist_entries (id)`,
  // An entry is promoted at most once, whatever races between promoters.
  `CREATE UNIQUE INDEX reservations_waitlist_entry_id_key
     ON reservations (waitlist_entry_id) WHERE waitlist_entry_id IS NOT NULL`,

  // ---------------------------------------------------------------------------------
  // idempotency_records: the outcome of each (caller, request id).
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE idempotency_records (
    caller           text        NOT NULL,
    request_id       text        NOT NULL,
    method           text        NOT NULL,   -- fully qualified RPC name
    -- Hash of the canonical request bytes (method included). Same id + same hash =
    -- replay the recorded outcome; same id + different hash = IDEMPOTENCY_KEY_REUSED.
    request_hash     text        NOT NULL,
    state            text        NOT NULL DEFAULT 'IN_FLIGHT',
    response         bytea       NULL,       -- serialized response, or serialized business error
    status_code      integer     NULL,       -- gRPC status code of the recorded outcome (0 = OK)
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz NULL,
    -- Retention window: the service sets it (configurable, 24 h by default); the worker
    -- prunes past it. The default is only a safety net for a writer that forgets.
    expires_at       timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    -- For an IN_FLIGHT record committed ahead of the work: until this time a duplicate
    -- waits / is told the original is in flight; after it, the original is presumed
    -- dead (crashed process) and a duplicate may take the record over. NULL when the
    -- record is written in the same transaction as the work (a crash then rolls it back).
    lease_expires_at timestamptz NULL,

    -- Duplicates arriving at the same moment collide on this key: exactly one INSERT
    -- wins, the others wait for it (or see its record) and never run the work twice.
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (caller, request_id),
    CONSTRAINT idempotency_records_state_valid CHECK (state IN ('IN_FLIGHT', 'COMPLETED')),
    CONSTRAINT idempotency_records_completed_iff_completed_at CHECK ((state = 'COMPLETED') = (completed_at IS NOT NULL)),
    -- A completed record can always be replayed.
    CONSTRAINT idempotency_records_completed_has_outcome
      CHECK (state <> 'COMPLETED' OR (response IS NOT NULL AND status_code IS NOT NULL)),
    CONSTRAINT idempotency_records_status_code_valid CHECK (status_code BETWEEN 0 AND 16),
    CONSTRAINT idempotency_records_caller_length CHECK (char_length(caller) BETWEEN 1 AND 256),
    CONSTRAINT idempotency_records_request_id_format CHECK (request_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    CONSTRAINT idempotency_records_request_hash_not_empty CHECK (char_length(request_hash) >= 1),
    CONSTRAINT idempotency_records_expires_after_creation CHECK (expires_at > created_at)
  )`,
  `COMMENT ON TABLE idempotency_records IS 'Outcome per (caller, request id) for replay; kept until expires_at, then pruned.'`,
  // Retention: DELETE FROM idempotency_records WHERE expires_at < now() (in batches).
  `CREATE INDEX idempotency_records_expires_at_idx ON idempotency_records (expires_at)`,
];

const DOWN: readonly string[] = [
  // Reverse order of creation. The reservations <-> waitlist_entries cycle is cut first.
  `DROP TABLE idempotency_records`,
  `ALTER TABLE reservations DROP CONSTRAINT reservations_waitlist_entry_id_fkey`,
  `DROP INDEX reservations_waitlist_entry_id_key`,
  `DROP TABLE waitlist_entries`,
  `DROP TABLE worker_replicas`,
  `DROP TABLE inventory_snapshots`,
  // Dropping the table drops its trigger; the function is dropped afterwards.
  `DROP TABLE audit_events`,
  `DROP FUNCTION audit_events_reject_rewrite()`,
  `DROP TABLE reconciliation_runs`,
  `DROP TABLE reservation_items`,
  `DROP TABLE reservations`,
  `DROP TABLE inventory`,
  `DROP TABLE skus`,
];

export async function up(knex: Knex): Promise<void> {
  await runSql(knex, UP);
}

export async function down(knex: Knex): Promise<void> {
  await runSql(knex, DOWN);
}
