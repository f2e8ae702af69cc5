/**
 * 0001_initial: the Holdfast schema.
 *
 * Design rules that every table below follows:
 *
 * - Every guarantee lives in the database. Any number of reservation-service and
 *   expiry-worker replicas share this schema, so nothing may depend on an in-process
 *   lock or cache: CHECK constraints, unique indexes, row locks and SKIP LOCKED do it.
 * - Status / enum columns are `text` + `CHECK (col IN (...))`, not PostgreSQL ENUM
 *   types: the database still rejects garbage, the value set can be widened in a later
 *   migration with a plain ALTER (no `ALTER TYPE ... ADD VALUE` transaction caveats),
 *   and the values read back as plain strings in TypeScript.
 * - Constraints are named (`<table>_<rule>`) so that a violation reported by the
 *   driver (`error.constraint`) can be mapped to a precise error, and so that the
 *   name itself documents the rule.
 * - Timestamps are `timestamptz` defaulting to `now()`, which is the start of the
 *   transaction: every row written by one transaction carries the same instant.
 * - Ids are `gen_random_uuid()` (built into PostgreSQL 13+, no extension needed), or
 *   identity columns where arrival order matters (ledger, waitlist).
 *
 * Statements are unqualified so the schema can be created in whatever schema is first
 * on the `search_path` (tests isolate themselves with one schema or database each).
 */
import type { Knex } from 'knex';
import { runSql } from './run-sql.js';

const UP: readonly string[] = [
  // ---------------------------------------------------------------------------------
  // skus: the catalog and the per-SKU policy.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE skus (
    -- The client-facing SKU code is the key: every API call names SKUs by code, so a
    -- surrogate id would only add a lookup. Length and charset are CHECKed so codes
    -- are safe in URLs, logs and NOTIFY channel payloads.
    code                          text        PRIMARY KEY,
    name                          text        NOT NULL,
    -- Per-SKU policy. NULL means "use the server default" (configured in the service),
    -- so changing a server default affects every SKU that has not opted out.
    default_locking_strategy      text        NULL,
    max_units_per_customer        integer     NULL,
    default_hold_ttl_seconds      integer     NULL,
    max_hold_ttl_seconds          integer     NULL,
    attempt_rate_limit_per_minute integer     NULL,
    -- Reserved for a later bucketed / hot-SKU mode. Only 'OFF' is accepted until a
    -- migration that implements another mode widens the CHECK: the database refuses a
    -- mode that no code knows how to serve.
    hot_mode                      text        NOT NULL DEFAULT 'OFF',
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT skus_code_format CHECK (
      char_length(code) BETWEEN 1 AND 64
      AND code ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]*$'
    ),
    CONSTRAINT skus_name_length CHECK (char_length(btrim(name)) >= 1 AND char_length(name) <= 256),
    CONSTRAINT skus_default_locking_strategy_valid
      CHECK (default_locking_strategy IN ('OPTIMISTIC', 'PESSIMISTIC')),
    CONSTRAINT skus_max_units_per_customer_positive CHECK (max_units_per_customer > 0),
    CONSTRAINT skus_default_hold_ttl_positive CHECK (default_hold_ttl_seconds > 0),
    CONSTRAINT skus_max_hold_ttl_positive CHECK (max_hold_ttl_seconds > 0),
    CONSTRAINT skus_default_hold_ttl_within_max CHECK (default_hold_ttl_seconds <= max_hold_ttl_seconds),
    CONSTRAINT skus_attempt_rate_limit_positive CHECK (attempt_rate_limit_per_minute > 0),
    CONSTRAINT skus_hot_mode_valid CHECK (hot_mode IN ('OFF'))
  )`,
  `COMMENT ON TABLE skus IS 'Holdfast catalog: one row per SKU code, with per-SKU policy (NULL = server default).'`,

  // ---------------------------------------------------------------------------------
  // inventory: THE canonical counters, one row per SKU.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE inventory (
    sku_code   text        PRIMARY KEY REFERENCES skus (code),
    on_hand    bigint      NOT NULL DEFAULT 0,
    reserved   bigint      NOT NULL DEFAULT 0,   -- units in HELD reservations
    allocated  bigint      NOT NULL DEFAULT 0,   -- units in ALLOCATED reservations
    -- available is derived, never written. One source of truth: it cannot disagree
    -- with the three counters. And because PostgreSQL evaluates it per row, a single
    -- guarded statement is the whole stock check:
    --   UPDATE inventory SET reserved = reserved + $q, version = version + 1, updated_at = now()
    --    WHERE sku_code = $sku AND available >= $q
    -- (0 rows updated = short). The row lock is taken and released by that one
    -- statement's transaction, which keeps the hot-row lock window as short as possible.
    available  bigint      NOT NULL GENERATED ALWAYS AS (on_hand - reserved - allocated) STORED,
    -- Bumped by every writer (version = version + 1). OPTIMISTIC callers compare-and-set
    -- on it (WHERE version = $read); AdjustStock honours an expected version with it.
    -- Not maintained by a trigger on purpose: the hot row is updated thousands of times
    -- a second in a flash sale and the benchmark compares us with the bare statement.
    version    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),

    -- The database is the last line of defence against oversell: whatever a bug in a
    -- service does, a transaction that would make any counter negative, or promise
    -- more units than are on hand, fails and rolls back.
    CONSTRAINT inventory_on_hand_non_negative CHECK (on_hand >= 0),
    CONSTRAINT inventory_reserved_non_negative CHECK (reserved >= 0),
    CONSTRAINT inventory_allocated_non_negative CHECK (allocated >= 0),
    CONSTRAINT inventory_not_oversold CHECK (on_hand - reserved - allocated >= 0),
    CONSTRAINT inventory_version_non_negative CHECK (version >= 0)
  )
  -- Small table (one row per SKU) whose rows are rewritten constantly. No indexed
  -- column changes on a counter update, so with free space on the page every update
  -- can be a HOT update (no index churn, dead versions pruned in-page). A low
  -- fillfactor keeps that space available; it costs almost nothing on a table this size.
  WITH (fillfactor = 50)`,
  `COMMENT ON TABLE inventory IS 'Canonical stock counters, one row per SKU; available is generated; CHECKs forbid oversell.'`,

  // ---------------------------------------------------------------------------------
  // reservations: one header per hold or direct allocation.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE reservations (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    type              text        NOT NULL,
    status            text        NOT NULL,
    customer_id       text        NOT NULL,
    -- The authenticated principal that made the request. Idempotency tokens are scoped
    -- per caller: two order services may both use request id "1" without colliding.
    caller            text        NOT NULL,
    request_id        text        NULL,      -- NULL for holds created by a waitlist promotion
    locking_strategy  text        NOT NULL,  -- the strategy actually used (after defaults)
    expires_at        timestamptz NULL,      -- holds only; kept after confirmation as history
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    confirmed_at      timestamptz NULL,      -- HOLD -> ALLOCATED
    closed_at         timestamptz NULL,      -- reached RELEASED / EXPIRED / FULFILLED / CANCELLED
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
    -- closed_at is set exactly when a final state is reached (queries and retention rely on it).
    CONSTRAINT reservations_closed_at_iff_final
      CHECK ((status IN ('RELEASED', 'EXPIRED', 'FULFILLED', 'CANCELLED')) = (closed_at IS NOT NULL)),
    -- A hold has been confirmed exactly when it is in one of the allocation states.
    CONSTRAINT reservations_hold_confirmed_at
      CHECK (type <> 'HOLD' OR (status IN ('ALLOCATED', 'FULFILLED', 'CANCELLED')) = (confirmed_at IS NOT NULL)),
    CONSTRAINT reservations_locking_strategy_valid CHECK (locking_strategy IN ('OPTIMISTIC', 'PESSIMISTIC')),
    CONSTRAINT reservations_customer_id_length CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    CONSTRAINT reservations_caller_length CHECK (char_length(caller) BETWEEN 1 AND 256),
    CONSTRAINT reservations_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 256),
    CONSTRAINT reservations_waitlist_only_for_holds CHECK (waitlist_entry_id IS NULL OR type = 'HOLD'),
    CONSTRAINT reservations_version_non_negative CHECK (version >= 0),
    -- Backstop for idempotency (idempotency_records is the primary mechanism): one
    -- reservation per (caller, request id), whatever happens to the records table.
    -- NULL request ids are distinct from each other, so promotions are unaffected.
    -- Usable as an arbiter: INSERT ... ON CONFLICT (caller, request_id) DO NOTHING.
    CONSTRAINT reservations_caller_request_id_key UNIQUE (caller, request_id)
  )`,
  `COMMENT ON TABLE reservations IS 'Reservation headers (holds and direct allocations) with their lifecycle status.'`,
  // The expiry sweeper's claim query:
  //   SELECT id FROM reservations WHERE status = 'HELD' AND expires_at <= now()
  //    ORDER BY expires_at LIMIT $n FOR UPDATE SKIP LOCKED
  // and its "when is the next expiry" query (min(expires_at) WHERE status = 'HELD'),
  // and "reclaim expired holds before refusing" in CreateHold. Partial: only live holds
  // are indexed, so the index stays as small as the set of active holds even when the
  // table holds millions of closed reservations.
  `CREATE INDEX reservations_held_expires_at_idx ON reservations (expires_at) WHERE status = 'HELD'`,
  // ListReservations by customer, keyset-paginated on (created_at, id); also the
  // per-customer limit (units in this customer's HELD/ALLOCATED reservations) and the
  // abandonment-aware TTL (how many of this customer's holds expired recently).
  `CREATE INDEX reservations_customer_created_idx ON reservations (customer_id, created_at, id)`,
  // ListReservations by status, keyset-paginated on (created_at, id).
  `CREATE INDEX reservations_status_created_idx ON reservations (status, created_at, id)`,

  // ---------------------------------------------------------------------------------
  // reservation_items: the lines of a reservation.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE reservation_items (
    reservation_id uuid    NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    sku_code       text    NOT NULL REFERENCES skus (code),
    quantity       integer NOT NULL,
    -- Position of the SKU's first line in the request (1-based), for echoing lines back
    -- in request order.
    line_no        integer NOT NULL,

    -- One row per SKU per reservation. Lines naming the same SKU are summed before the
    -- insert (checking two lines of one SKU separately against the same availability is
    -- how Medusa oversold); the primary key makes an unsummed batch fail loudly.
    CONSTRAINT reservation_items_pkey PRIMARY KEY (reservation_id, sku_code),
    CONSTRAINT reservation_items_quantity_positive CHECK (quantity > 0),
    CONSTRAINT reservation_items_line_no_positive CHECK (line_no >= 1)
  )`,
  `COMMENT ON TABLE reservation_items IS 'Reservation lines: one row per SKU per reservation (duplicate SKUs summed).'`,
  // Per-SKU questions: the consistency check (reserved = sum of HELD lines, allocated =
  // sum of ALLOCATED lines), ListReservations by SKU, the reconciliation recount.
  // quantity is INCLUDEd so the sums need not visit the heap for the line itself.
  `CREATE INDEX reservation_items_sku_reservation_idx ON reservation_items (sku_code, reservation_id) INCLUDE (quantity)`,

  // ---------------------------------------------------------------------------------
  // audit_events: the append-only ledger of every counter change.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE audit_events (
    -- Identity, not uuid: the ledger is read in order. Per SKU, id order is the order of
    -- the counter changes, because every event for a SKU is inserted while holding that
    -- SKU's inventory row lock (the event carries the before/after values read under it).
    -- Across SKUs ids are assigned at insert, not at commit, so a reader tailing the
    -- whole ledger by id may see a gap fill in later.
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    operation        text        NOT NULL,
    sku_code         text        NOT NULL REFERENCES skus (code),
    reservation_id   uuid        NULL REFERENCES reservations (id),
    delta_on_hand    bigint      NOT NULL DEFAULT 0,
    delta_reserved   bigint      NOT NULL DEFAULT 0,
    delta_allocated  bigint      NOT NULL DEFAULT 0,
    on_hand_before   bigint      NOT NULL,
    reserved_before  bigint      NOT NULL,
    allocated_before bigint      NOT NULL,
    on_hand_after    bigint      NOT NULL,
    reserved_after   bigint      NOT NULL,
    allocated_after  bigint      NOT NULL,
    actor            text        NOT NULL,   -- the caller, or the worker id
    request_id       text        NULL,
    reason           text        NULL,
    details          jsonb       NULL,

    CONSTRAINT audit_events_operation_valid CHECK (operation IN (
      'SKU_CREATED', 'STOCK_ADJUSTED',
      'HOLD_CREATED', 'HOLD_EXTENDED', 'HOLD_CONFIRMED', 'HOLD_RELEASED', 'HOLD_EXPIRED',
      'ALLOCATION_CREATED', 'ALLOCATION_FULFILLED', 'ALLOCATION_CANCELLED',
      'RECONCILIATION_REPAIR', 'WAITLIST_PROMOTED'
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
        WHEN 'HOLD_EXTENDED' THEN delta_on_hand = 0 AND delta_reserved = 0 AND delta_allocated = 0
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
    -- Reservation lifecycle events must say which reservation they belong to.
    CONSTRAINT audit_events_reservation_required CHECK (
      operation IN ('SKU_CREATED', 'STOCK_ADJUSTED', 'RECONCILIATION_REPAIR') OR reservation_id IS NOT NULL
    ),
    CONSTRAINT audit_events_actor_not_empty CHECK (char_length(actor) >= 1)
  )`,
  `COMMENT ON TABLE audit_events IS 'Append-only ledger: one row per counter change (per SKU); counters = SUM(deltas). UPDATE/DELETE/TRUNCATE are refused by trigger.'`,
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
  // keyset-paginated on id.
  `CREATE INDEX audit_events_sku_id_idx ON audit_events (sku_code, id)`,
  // ListAuditEvents by reservation. Partial: stock adjustments carry no reservation.
  `CREATE INDEX audit_events_reservation_id_idx ON audit_events (reservation_id, id) WHERE reservation_id IS NOT NULL`,

  // ---------------------------------------------------------------------------------
  // inventory_snapshots: periodic / on-demand copies of the counters.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE inventory_snapshots (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- now() is per transaction: all rows of one snapshot share taken_at, which is how
    -- a snapshot is identified.
    taken_at            timestamptz NOT NULL DEFAULT now(),
    sku_code            text        NOT NULL REFERENCES skus (code),
    on_hand             bigint      NOT NULL,
    reserved            bigint      NOT NULL,
    allocated           bigint      NOT NULL,
    available           bigint      NOT NULL,
    version             bigint      NOT NULL,
    -- The SKU's last ledger event visible to the snapshot's transaction (NULL if the
    -- SKU had none). Counters and ledger are written in the same transaction, so
    -- counters = this snapshot + SUM(deltas WHERE id > last_audit_event_id): a
    -- reconciliation may replay from the latest snapshot instead of from the start.
    last_audit_event_id bigint      NULL,
    source              text        NOT NULL,

    CONSTRAINT inventory_snapshots_source_valid CHECK (source IN ('SCHEDULED', 'ON_DEMAND')),
    CONSTRAINT inventory_snapshots_counters_non_negative
      CHECK (on_hand >= 0 AND reserved >= 0 AND allocated >= 0 AND available >= 0 AND version >= 0),
    CONSTRAINT inventory_snapshots_available_derived CHECK (available = on_hand - reserved - allocated)
  )`,
  `COMMENT ON TABLE inventory_snapshots IS 'History of inventory counters, taken on a schedule or on demand; pruned by retention.'`,
  // ListAvailabilitySnapshots for a SKU, newest first, keyset-paginated.
  `CREATE INDEX inventory_snapshots_sku_taken_idx ON inventory_snapshots (sku_code, taken_at DESC, id DESC)`,
  // Retention: DELETE FROM inventory_snapshots WHERE taken_at < $cutoff.
  `CREATE INDEX inventory_snapshots_taken_at_idx ON inventory_snapshots (taken_at)`,

  // ---------------------------------------------------------------------------------
  // reconciliation_runs: each check / repair run and what it found.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE reconciliation_runs (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    mode            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'RUNNING',
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz NULL,
    triggered_by    text        NOT NULL,   -- 'schedule' or the principal that asked
    worker_id       text        NOT NULL,   -- which worker replica ran it
    sku_filter      text[]      NULL,       -- NULL = every SKU
    skus_checked    integer     NOT NULL DEFAULT 0,
    issues_found    integer     NOT NULL DEFAULT 0,
    issues_repaired integer     NOT NULL DEFAULT 0,
    findings        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error           text        NULL,

    CONSTRAINT reconciliation_runs_mode_valid CHECK (mode IN ('CHECK', 'REPAIR')),
    CONSTRAINT reconciliation_runs_status_valid CHECK (status IN ('RUNNING', 'OK', 'ISSUES', 'FAILED')),
    -- A run is finished exactly when it has left RUNNING.
    CONSTRAINT reconciliation_runs_finished_iff_done CHECK ((status = 'RUNNING') = (finished_at IS NULL)),
    CONSTRAINT reconciliation_runs_finished_after_start CHECK (finished_at >= started_at),
    CONSTRAINT reconciliation_runs_failed_has_error CHECK (status <> 'FAILED' OR error IS NOT NULL),
    CONSTRAINT reconciliation_runs_counts_non_negative
      CHECK (skus_checked >= 0 AND issues_found >= 0 AND issues_repaired >= 0),
    -- Check mode never writes; repair cannot fix more than it found.
    CONSTRAINT reconciliation_runs_repairs_bounded
      CHECK (issues_repaired <= issues_found AND (mode = 'REPAIR' OR issues_repaired = 0)),
    CONSTRAINT reconciliation_runs_findings_is_array CHECK (jsonb_typeof(findings) = 'array')
  )`,
  `COMMENT ON TABLE reconciliation_runs IS 'Reconciliation runs (check or repair) with their findings.'`,
  // ListReconciliationRuns, newest first, keyset-paginated.
  `CREATE INDEX reconciliation_runs_started_idx ON reconciliation_runs (started_at DESC, id DESC)`,

  // ---------------------------------------------------------------------------------
  // waitlist_entries: the FIFO queue of customers waiting for stock to return.
  // ---------------------------------------------------------------------------------
  `
  CREATE TABLE waitlist_entries (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Arrival order, the FIFO key. Assigned at INSERT: two joins in concurrent
    -- transactions may commit in the opposite order of their seq, so a promoter can
    -- only serve the head among committed entries; callers that need strict order
    -- serialize joins and promotions for a SKU on its inventory row lock.
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    sku_code         text        NOT NULL REFERENCES skus (code),
    customer_id      text        NOT NULL,
    quantity         integer     NOT NULL,
    status           text        NOT NULL DEFAULT 'WAITING',
    caller           text        NOT NULL,
    request_id       text        NULL,
    -- The hold created by the promotion.
    reservation_id   uuid        NULL REFERENCES reservations (id),
    -- TTL of the hold to create on promotion (NULL = the SKU's / server's default).
    hold_ttl_seconds integer     NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    promoted_at      timestamptz NULL,
    closed_at        timestamptz NULL,

    CONSTRAINT waitlist_entries_status_valid CHECK (status IN ('WAITING', 'PROMOTED', 'CANCELLED', 'EXPIRED')),
    CONSTRAINT waitlist_entries_quantity_positive CHECK (quantity > 0),
    CONSTRAINT waitlist_entries_hold_ttl_positive CHECK (hold_ttl_seconds > 0),
    CONSTRAINT waitlist_entries_customer_id_length CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    CONSTRAINT waitlist_entries_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 256),
    -- A waiting entry has no hold and is not closed.
    CONSTRAINT waitlist_entries_waiting_is_open CHECK (
      status <> 'WAITING' OR (reservation_id IS NULL AND promoted_at IS NULL AND closed_at IS NULL)
    ),
    -- PROMOTED, and EXPIRED (the promoted hold expired: the turn is lost), have a hold.
    CONSTRAINT waitlist_entries_promoted_has_hold CHECK (
      status NOT IN ('PROMOTED', 'EXPIRED') OR (reservation_id IS NOT NULL AND promoted_at IS NOT NULL)
    ),
    CONSTRAINT waitlist_entries_closed_has_closed_at CHECK (
      status NOT IN ('CANCELLED', 'EXPIRED') OR closed_at IS NOT NULL
    ),
    -- Idempotent JoinWaitlist per caller (NULL request ids are distinct).
    CONSTRAINT waitlist_entries_caller_request_id_key UNIQUE (caller, request_id)
  )`,
  `COMMENT ON TABLE waitlist_entries IS 'FIFO waitlist per SKU (seq = arrival order); the head is promoted to a hold when stock returns.'`,
  // Head of the queue and positions: WHERE sku_code = $1 AND status = 'WAITING'
  // ORDER BY seq. Partial, so it only holds the people still waiting.
  `CREATE INDEX waitlist_entries_waiting_sku_seq_idx ON waitlist_entries (sku_code, seq) WHERE status = 'WAITING'`,
  // One waiting entry per customer per SKU: a second JoinWaitlist cannot jump the
  // queue or double a customer's claim; enforced even under concurrent joins.
  `CREATE UNIQUE INDEX waitlist_entries_one_waiting_per_customer
     ON waitlist_entries (sku_code, customer_id) WHERE status = 'WAITING'`,
  // WatchWaitlist(customer) and listing a customer's entries.
  `CREATE INDEX waitlist_entries_customer_created_idx ON waitlist_entries (customer_id, created_at)`,
  // From a hold back to its entry (when a promoted hold expires, the entry becomes EXPIRED).
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
    CONSTRAINT idempotency_records_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 256),
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
  `DROP TABLE reconciliation_runs`,
  `DROP TABLE inventory_snapshots`,
  // Dropping the table drops its trigger; the function is dropped afterwards.
  `DROP TABLE audit_events`,
  `DROP FUNCTION audit_events_reject_rewrite()`,
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
