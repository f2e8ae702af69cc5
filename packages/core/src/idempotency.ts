/**
 * Idempotency by (caller, request_id), the rules of errors.proto (IDEMPOTENCY):
 *
 * - The record is claimed by the first statement of the call's transaction:
 *   INSERT ... ON CONFLICT DO NOTHING on the primary key (caller, request_id). A
 *   duplicate that arrives while the first is in flight blocks on that key until the
 *   first commits or rolls back (bounded by lock_timeout, then REQUEST_IN_PROGRESS);
 *   it then finds the COMPLETED record and replays it. The work and its record commit
 *   together, so duplicates execute once and a crash leaves nothing half-recorded.
 * - Successes and business refusals (FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS)
 *   are recorded and replayed; anything else (ABORTED, UNAVAILABLE, INVALID_ARGUMENT,
 *   ...) rolls back with the claim, so the client may retry with the same id.
 * - Same id, different request (another method or other fields): the request hash
 *   differs, INVALID_ARGUMENT / IDEMPOTENCY_KEY_REUSED, nothing recorded.
 * - Records live for the configured window. A record past it is taken over by the
 *   next claim (ON CONFLICT ... DO UPDATE ... WHERE expires_at <= now()), so an old
 *   id is executed again as new, as the contract says, except that ids attached to
 *   reservations stay taken: the claim looks for one (and the reservations' unique
 *   key is the backstop, see reserve.ts). Waitlist entries join that rule with the
 *   waitlist.
 */
import { createHash } from "node:crypto";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { AnySchema, anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, StatusSchema } from "@holdfast/contracts/rpc";
import { isLockTimeout } from "@holdfast/runtime";
import { builtOnce, commitWith, query, transaction, type Db, type PgTransaction } from "@holdfast/schema";
import type { Knex } from "knex";
import { idempotencyKeyReused, lockTimeout, requestInProgress } from "./errors.js";

export interface IdempotencyKey {
  caller: string;
  requestId: string;
  /** Fully qualified method, e.g. "holdfast.inventory.v1.InventoryReservationService/CreateHold". */
  method: string;
  /** sha256 of the method and the request's binary encoding. */
  hash: string;
}

export function idempotencyKey<D extends DescMessage>(caller: string, method: string, schema: D, request: MessageShape<D> & { requestId: string }): IdempotencyKey {
  const hash = createHash("sha256").update(method).update("\0").update(toBinary(schema, request)).digest("hex");
  return { caller, requestId: request.requestId, method, hash };
}

/** A business refusal to record and commit together with the work's other changes. */
export class Refusal {
  constructor(readonly error: ConnectError) {}
}

/** Outcomes recorded for replay (errors.proto, IDEMPOTENCY). */
export function isRecordedRefusal(err: unknown): err is ConnectError {
  return err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.NotFound || err.code === Code.AlreadyExists);
}


type Record = {
  method: string;
  request_hash: string;
  state: "IN_FLIGHT" | "COMPLETED";
  status_code: number | null;
  response: Buffer | null;
};

/**
 * A read to run in the claim's own statement (a round trip saved): `sql` is a SELECT
 * with `?` parameters; its column names must not start with `claim_`. Its snapshot is
 * the claim statement's, taken before the claim waits for a duplicate in flight (if it
 * has to): it may miss what committed during that wait, so it must only serve
 * decisions that a later statement re-checks, or for which any moment of the request's
 * lifetime is a valid one (a plain read).
 */
export interface ClaimRead<Row> {
  sql: string;
  params: unknown[];
  /**
   * Runs on the rows inside the transaction, right after the claim, whether it won the
   * request id or found it taken (before `work` and before a replay); what it throws
   * rolls the transaction back (the claim too) and is thrown by `run`.
   */
  check?: (rows: Row[]) => void;
}

/** What `work` gets once the request id is claimed. */
export interface Claimed<R, Row = never> {
  /** The transaction's clock (now(), the time of every row it writes), read by the claim. */
  now: Date;
  /**
   * The caller's deadline as milliseconds after `now` (the time it had left when the
   * claim was sent), or null without one. statement_timeout cancels each statement
   * that long after the statement starts, so a last statement sent with its COMMIT
   * that began late may outlive the deadline: it checks this itself
   * (ApplyOptions.finish), so that nothing is committed for a caller who has gone.
   */
  deadlineMs: number | null;
  /** The rows of the ClaimRead given to `run` (none without one). */
  rows: Row[];
  /** Records the response now, in its own statement (e.g. before touching hot rows). */
  record(response: R): Promise<void>;
  /**
   * Records the response as part of the caller's next statement: a data-modifying
   * statement (with RETURNING) to put in its WITH clause, with its parameters (saves
   * a round trip).
   */
  recordInline(response: R): { sql: string; params: unknown[] };
}

/** The work of one request, run once its request id is claimed. */
export type Work<R, Row = never> = (trx: PgTransaction, claimed: Claimed<R, Row>) => Promise<R | Refusal>;

/**
 * The rest of the claim's transaction is bounded by the caller's deadline: a select-list
 * item of the claim that sets statement_timeout for the transaction (SET LOCAL; the
 * claim itself is already running) to the milliseconds left, or keeps the configured
 * one if that is shorter (least() skips the NULL of "0 = none configured"). No deadline
 * (NULL): nothing changes. Parameters: the milliseconds left, twice.
 */
const DEADLINE_BOUND = `CASE WHEN ?::int IS NULL THEN NULL ELSE set_config('statement_timeout',
    least(?::int, nullif(extract(epoch FROM current_setting('statement_timeout')::interval) * 1000, 0)::int)::text, true) END AS claim_deadline_bound`;

const COMPLETE = `UPDATE idempotency_records SET state = 'COMPLETED', status_code = ?, response = ?, completed_at = now()
                   WHERE caller = ? AND request_id = ?`;
/**
 * COMPLETE as a CTE of the caller's statement (Claimed.recordInline): RETURNING, so
 * that the statement can read it, and so write it when it chooses (before the hot
 * row's lock: ledger.ts, `alongside`).
 */
const COMPLETE_INLINE = `${COMPLETE}
                   RETURNING 1`;
const completeParams = (key: IdempotencyKey, statusCode: number, response: Uint8Array) => [statusCode, Buffer.from(response), key.caller, key.requestId];

export class Idempotency {
  /**
   * @param call the call's signal and deadline. Once the signal aborts (deadline passed,
   *   client gone) no new transaction starts (nor its work, if it aborted while the call
   *   waited for a connection), and one in progress rolls back instead of committing, so
   *   nobody's abandoned request takes stock. A commit that races the abort stands and
   *   is replayed to a retry with the same request id; so does a last statement sent with
   *   its COMMIT (commitWith) that was still running when the caller left without a
   *   deadline (with one, the statement itself is cancelled at it, below, or refuses
   *   to commit past it: Claimed.deadlineMs). With a deadline, the transaction's
   *   statements after the claim (lock waits included) are cancelled when it passes
   *   (statement_timeout, never above the configured one; counted from each
   *   statement's start), so a call whose caller has gone does not keep its
   *   connection waiting for a row lock.
   */
  constructor(
    private readonly db: Knex,
    private readonly windowMs: number,
    private readonly call?: { signal: AbortSignal; deadline?: number },
  ) {}

  private get signal(): AbortSignal | undefined {
    return this.call?.signal;
  }

  /**
   * Runs `work` at most once per key and returns its response, or the recorded
   * outcome of an earlier identical request (`replayed` set / ErrorInfo metadata
   * "replayed"). Throws refusals, and transient errors without recording them.
   */
  async run<D extends DescMessage, Row = never>(key: IdempotencyKey, schema: D, work: Work<MessageShape<D>, Row>, read?: ClaimRead<Row>): Promise<MessageShape<D>> {
    type R = MessageShape<D>;
    for (let attempt = 0; ; attempt++) {
      this.signal?.throwIfAborted();
      let outcome: { kind: "done"; value: R | Refusal } | { kind: "exists" };
      try {
        outcome = await transaction(this.db, async (trx) => {
          // The caller may have gone while this call waited for a pooled connection:
          // then nothing of its work runs (the empty transaction is rolled back).
          this.signal?.throwIfAborted();
          const claim = await this.claim(trx, key, null, read);
          read?.check?.(claim.rows);
          if (!claim.claimed) return { kind: "exists" } as const;
          const { now } = claim;
          let recorded = false;
          const claimed: Claimed<R, Row> = {
            now,
            deadlineMs: claim.deadlineMs,
            rows: claim.rows,
            record: async (response) => {
              await query(trx, COMPLETE, completeParams(key, 0, toBinary(schema, response)));
              recorded = true;
            },
            recordInline: (response) => {
              recorded = true;
              return { sql: COMPLETE_INLINE, params: completeParams(key, 0, toBinary(schema, response)) };
            },
          };
          const value = await work(trx, claimed);
          // The outcome's record goes with the COMMIT, unless the work committed with its
          // last statement (commitWith), the record in it. The caller gave up while we
          // worked: `transaction` rolls back (the signal) rather than commit for nobody.
          if (!trx.settled) {
            if (value instanceof Refusal) await commitWith(trx, COMPLETE, completeParams(key, value.error.code, encodeError(value.error)));
            else if (!recorded) await commitWith(trx, COMPLETE, completeParams(key, 0, toBinary(schema, value)));
          }
          return { kind: "done", value } as const;
        }, this.signal);
      } catch (err) {
        // Refused before anything changed (rolled back): record the refusal on its own.
        if (isRecordedRefusal(err)) {
          if (await this.recordAlone(key, err)) throw err;
          outcome = { kind: "exists" };
        } else {
          throw err;
        }
      }
      if (outcome.kind === "done") {
        if (outcome.value instanceof Refusal) throw outcome.value.error;
        return outcome.value;
      }
      const replay = await this.replay(key, schema);
      if (replay !== undefined) return replay;
      // The record vanished between our claim and our read (pruned, or taken over as
      // expired): claim again. Bounded, although each retry needs a new race to lose.
      if (attempt >= 3) throw requestInProgress(key.requestId);
    }
  }

  /**
   * For work that is not one transaction (an expiry sweep commits a transaction per
   * batch): the record is claimed and COMMITTED first, IN_FLIGHT with a lease, then
   * `work` runs, then its response is recorded. A duplicate meanwhile is told
   * REQUEST_IN_PROGRESS; a duplicate after the response replays it. If the work
   * fails, the record is removed so the client may retry with the same id; if the
   * process dies, the record is taken over once its lease has run out. `work` calls
   * `renew()` now and then to keep the lease while it runs. The work must be safe to
   * run again after a crash (each of its transactions stands on its own).
   */
  async runLeased<D extends DescMessage>(
    key: IdempotencyKey,
    schema: D,
    leaseMs: number,
    work: (renew: () => Promise<void>) => Promise<MessageShape<D>>,
  ): Promise<MessageShape<D>> {
    const claimed = await transaction(this.db, (trx) => this.claim(trx, key, leaseMs));
    if (!claimed.claimed) {
      const replay = await this.replay(key, schema);
      if (replay !== undefined) return replay;
      throw requestInProgress(key.requestId);
    }
    // Only OUR claim (created_at, to the microsecond, is the claim's token): a claim
    // that took the record over after our lease ran out owns it now, and neither our
    // renewal, nor our outcome, nor our clean-up may touch it.
    const ours = `caller = ? AND request_id = ? AND state = 'IN_FLIGHT' AND created_at = ?::timestamptz`;
    const mine = [key.caller, key.requestId, claimed.token];
    let response: MessageShape<D>;
    try {
      response = await work(async () => {
        await query(this.db, `UPDATE idempotency_records SET lease_expires_at = now() + ? * interval '1 millisecond' WHERE ${ours}`, [leaseMs, ...mine]);
      });
    } catch (err) {
      await query(this.db, `DELETE FROM idempotency_records WHERE ${ours}`, mine).catch(() => undefined);
      throw err;
    }
    await query(
      this.db,
      `UPDATE idempotency_records SET state = 'COMPLETED', status_code = 0, response = ?, completed_at = now(), lease_expires_at = NULL WHERE ${ours}`,
      [Buffer.from(toBinary(schema, response)), ...mine],
    );
    return response;
  }

  /**
   * `claimed` if this call now owns the record (new, or taken over after its window).
   * A request id attached to a reservation or a waitlist entry stays taken forever
   * (errors.proto): if one holds it, the claim is refused with IDEMPOTENCY_KEY_REUSED naming it, whatever
   * the RPC (the record may have passed its window or been pruned). Same statement
   * (claimKeys): the lookup costs no extra round trip, nor does `read`.
   */
  private async claim<Row>(
    trx: PgTransaction,
    key: IdempotencyKey,
    leaseMs: number | null = null,
    read?: ClaimRead<Row>,
  ): Promise<{ claimed: boolean; now: Date; token: string; rows: Row[]; deadlineMs: number | null }> {
    try {
      const deadlineMs = this.deadlineLeftMs();
      const { now, claims, rows } = await claimKeys(trx, [key], this.windowMs, leaseMs, deadlineMs, read);
      const claim = claims[0]!;
      if (claim.claimed && claim.reservationId !== null) throw idempotencyKeyReused(key.requestId, { reservationId: claim.reservationId });
      if (claim.claimed && claim.waitlistEntryId !== null) throw idempotencyKeyReused(key.requestId, { waitlistEntryId: claim.waitlistEntryId });
      return { claimed: claim.claimed, now, token: claim.token!, rows, deadlineMs };
    } catch (err) {
      // Waited lock_timeout for a duplicate still in flight.
      if (isLockTimeout(err)) throw requestInProgress(key.requestId);
      throw err;
    }
  }

  /** The milliseconds left to the caller's deadline (at least 1), or null: DEADLINE_BOUND's parameter. */
  private deadlineLeftMs(): number | null {
    return this.call?.deadline === undefined ? null : Math.max(1, Math.floor(this.call.deadline - Date.now()));
  }

  /** Records a refusal in its own transaction; false if another request got the key first. */
  private async recordAlone(key: IdempotencyKey, error: ConnectError): Promise<boolean> {
    return transaction(this.db, async (trx) => {
      if (!(await this.claim(trx, key)).claimed) return false;
      await query(trx, COMPLETE, completeParams(key, error.code, encodeError(error)));
      return true;
    });
  }

  private async replay<D extends DescMessage>(key: IdempotencyKey, schema: D): Promise<MessageShape<D> | undefined> {
    const [record] = await query<Record>(
      this.db,
      `SELECT method, request_hash, state, status_code, response FROM idempotency_records WHERE caller = ? AND request_id = ?`,
      [key.caller, key.requestId],
    );
    if (record === undefined) return undefined;
    if (record.request_hash !== key.hash) throw idempotencyKeyReused(key.requestId, { originalMethod: record.method });
    if (record.state !== "COMPLETED" || record.response === null) throw requestInProgress(key.requestId);
    if (record.status_code === 0) {
      const response = fromBinary(schema, record.response) as MessageShape<D> & { replayed?: boolean };
      if ("replayed" in response) response.replayed = true;
      return response;
    }
    const replayed = decodeError(record.response);
    REPLAYED.add(replayed);
    throw replayed;
  }
}

/** What claiming one key found (claimKeys). */
export interface KeyClaim {
  /** This transaction now owns the record (new, or taken over after its window). */
  claimed: boolean;
  /** The claim's token (created_at, to the microsecond), when claimed. */
  token: string | null;
  /** A reservation / waitlist entry that holds the request id forever (IDEMPOTENCY_KEY_REUSED if claimed). */
  reservationId: string | null;
  waitlistEntryId: string | null;
}

/*
 * The claim of errors.proto's IDEMPOTENCY rules, for one key or many (a hot SKU's
 * group commit claims every hold of its batch in one statement). Keys are inserted in
 * (caller, request_id) order, so two transactions claiming overlapping sets lock the
 * records in one order and cannot deadlock. The keys of one call must be distinct
 * (ON CONFLICT cannot touch a row twice in one statement). The lookups of the ids that
 * stay taken forever are part of the statement: they cost no round trip. Its result
 * columns are named claim_* (a ClaimRead's rows are joined to them). Parameters: the
 * keys' four arrays, the window, the lease, DEADLINE_BOUND's two.
 */
const CLAIM_KEYS = `
WITH k AS (
  SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY AS k(caller, request_id, method, request_hash, ord)
), claim AS (
  INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, expires_at, lease_expires_at)
  SELECT caller, request_id, method, request_hash, 'IN_FLIGHT', now() + ? * interval '1 millisecond', now() + ? * interval '1 millisecond'
    FROM k ORDER BY caller COLLATE "C", request_id COLLATE "C"
  ON CONFLICT (caller, request_id) DO UPDATE
     SET method = EXCLUDED.method, request_hash = EXCLUDED.request_hash, state = 'IN_FLIGHT',
         response = NULL, status_code = NULL, created_at = now(), completed_at = NULL,
         expires_at = EXCLUDED.expires_at, lease_expires_at = EXCLUDED.lease_expires_at
   -- A record committed ahead of its work (runLeased) is taken over only once
   -- its lease ran out (the process that claimed it died), whatever its
   -- window; any other record once it is past its window.
   WHERE CASE WHEN idempotency_records.state = 'IN_FLIGHT' AND idempotency_records.lease_expires_at IS NOT NULL
              THEN idempotency_records.lease_expires_at < now()
              ELSE idempotency_records.expires_at <= now() END
  RETURNING caller, request_id, created_at::text AS token
), c AS (
  SELECT k.ord AS claim_ord, won.token AS claim_token, won.request_id IS NOT NULL AS claim_claimed,
         (SELECT id FROM reservations r WHERE r.caller = k.caller AND r.request_id = k.request_id) AS claim_reservation_id,
         (SELECT id FROM waitlist_entries w WHERE w.caller = k.caller AND w.request_id = k.request_id ORDER BY seq LIMIT 1) AS claim_waitlist_entry_id,
         now() AS claim_now, ${DEADLINE_BOUND}
    FROM k LEFT JOIN claim won ON won.caller = k.caller AND won.request_id = k.request_id
)
`;

/** The claim statement's text, without a read or with one (a ClaimRead's text is a constant: the same string each time). */
const CLAIM_ALONE = `${CLAIM_KEYS}SELECT * FROM c ORDER BY claim_ord`;
// The read's rows are joined to the first key's row (a read that finds nothing still leaves it).
const claimWithRead = builtOnce(
  (readSql) => `${CLAIM_KEYS}SELECT * FROM c LEFT JOIN LATERAL (SELECT true AS claim_read_row, x.* FROM (${readSql}) x) r ON c.claim_ord = 1 ORDER BY c.claim_ord`,
);

/**
 * Claims `keys` (distinct) in one statement of `trx`: what each claim found, in the
 * order of `keys`, the transaction's now(), and the rows of `read` (a ClaimRead run in
 * the same statement; none without one). A key held by another transaction in flight
 * makes the statement wait for it (at most lock_timeout). Used by `Idempotency` for
 * one key, and by the hot-SKU group commit for a batch. `deadlineLeftMs` (one
 * caller's): the rest of the transaction is bounded by it (DEADLINE_BOUND).
 */
export async function claimKeys<Row = never>(
  trx: Db,
  keys: readonly IdempotencyKey[],
  windowMs: number,
  leaseMs: number | null = null,
  deadlineLeftMs: number | null = null,
  read?: Pick<ClaimRead<Row>, "sql" | "params">,
): Promise<{ now: Date; claims: KeyClaim[]; rows: Row[] }> {
  type ClaimRow = {
    claim_ord: string;
    claim_token: string | null;
    claim_claimed: boolean;
    claim_reservation_id: string | null;
    claim_waitlist_entry_id: string | null;
    claim_now: Date;
    claim_read_row?: boolean | null;
  };
  const rows = await query<ClaimRow>(trx, read === undefined ? CLAIM_ALONE : claimWithRead(read.sql), [
    keys.map((k) => k.caller),
    keys.map((k) => k.requestId),
    keys.map((k) => k.method),
    keys.map((k) => k.hash),
    windowMs,
    leaseMs,
    deadlineLeftMs,
    deadlineLeftMs,
    ...(read?.params ?? []),
  ]);
  // One row per key, in order; the first key's repeated once per row of the read.
  const claims: KeyClaim[] = [];
  let last: string | undefined;
  for (const r of rows) {
    if (r.claim_ord === last) continue;
    last = r.claim_ord;
    claims.push({ claimed: r.claim_claimed, token: r.claim_token, reservationId: r.claim_reservation_id, waitlistEntryId: r.claim_waitlist_entry_id });
  }
  return {
    now: rows[0]!.claim_now,
    claims,
    rows: read === undefined ? [] : (rows.filter((r) => r.claim_read_row === true) as unknown as Row[]),
  };
}

/** An outcome to record: a response (status 0) or a recorded refusal. */
export type KeyOutcome<D extends DescMessage> = { key: IdempotencyKey; schema: D; response: MessageShape<D> } | { key: IdempotencyKey; refusal: ConnectError };

/**
 * Records the outcomes of keys claimed by this transaction (claimKeys), and forgets
 * the claims of `released` (handed to another path, which claims them again), as
 * part of the caller's next statement: data-modifying statements to put in its WITH
 * clause (`recorded`, a row per outcome, and `released`), with their parameters.
 * `windowMs`: the claim's window (claimKeys).
 *
 * The outcomes are written by an upsert through the primary key, not by an UPDATE
 * joined to the keys' arrays. The claim wrote every one of these rows in this
 * transaction and holds their locks, so DO UPDATE always applies (were a row somehow
 * gone, the completed record would be written afresh, which is also right). What
 * the form buys: ON CONFLICT finds each row through its arbiter index, whatever the
 * table's statistics say. An UPDATE … FROM unnest is planned from statistics, and
 * its generic plan (query.ts: once per connection) made while the table looked
 * empty, as in a new database or after retention emptied it, is a hash join over a
 * sequential scan of every record, kept until autovacuum's ANALYZE invalidates it:
 * issue 8's bench read ~80 records per hold that way, more as the sale went on.
 * (`released` keeps the join: it is empty but for batches that hand holds back.)
 */
export function recordOutcomesInline<D extends DescMessage>(
  outcomes: readonly KeyOutcome<D>[],
  released: readonly IdempotencyKey[],
  windowMs: number,
): { sql: string; params: unknown[] } {
  const encoded = outcomes.map((o) =>
    "refusal" in o ? { key: o.key, code: o.refusal.code, bytes: encodeError(o.refusal) } : { key: o.key, code: 0, bytes: toBinary(o.schema, o.response) },
  );
  return {
    sql: `recorded AS (
            INSERT INTO idempotency_records AS r (caller, request_id, method, request_hash, state, status_code, response, completed_at, expires_at)
            SELECT o.caller, o.request_id, o.method, o.request_hash, 'COMPLETED', o.status_code, o.response, now(), now() + ? * interval '1 millisecond'
              FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::int[], ?::bytea[]) AS o(caller, request_id, method, request_hash, status_code, response)
            ON CONFLICT (caller, request_id) DO UPDATE
               SET state = 'COMPLETED', status_code = EXCLUDED.status_code, response = EXCLUDED.response, completed_at = EXCLUDED.completed_at
            RETURNING 1
          ), released AS (
            DELETE FROM idempotency_records r USING unnest(?::text[], ?::text[]) AS x(caller, request_id)
             WHERE r.caller = x.caller AND r.request_id = x.request_id
          )`,
    params: [
      windowMs,
      encoded.map((e) => e.key.caller),
      encoded.map((e) => e.key.requestId),
      encoded.map((e) => e.key.method),
      encoded.map((e) => e.key.hash),
      encoded.map((e) => e.code),
      encoded.map((e) => Buffer.from(e.bytes)),
      released.map((k) => k.caller),
      released.map((k) => k.requestId),
    ],
  };
}

/** A refusal as a binary google.rpc.Status (code, message, every detail). */
function encodeError(error: ConnectError): Uint8Array {
  const details = error.details.map((d) =>
    "desc" in d ? anyPack(d.desc, create(d.desc, d.value)) : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  return toBinary(StatusSchema, create(StatusSchema, { code: error.code, message: error.rawMessage, details }));
}

/** The recorded refusal, marked as a replay in its ErrorInfo (metadata "replayed" = "true"). */
function decodeError(bytes: Uint8Array): ConnectError {
  const status = fromBinary(StatusSchema, bytes);
  const error = new ConnectError(status.message, status.code as Code);
  error.details = status.details.map((any) => {
    const type = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
    if (type !== ErrorInfoSchema.typeName) return { type, value: any.value };
    const info = fromBinary(ErrorInfoSchema, any.value);
    info.metadata.replayed = "true";
    return { desc: ErrorInfoSchema, value: info };
  });
  return error;
}

/**
 * What a failed write that took a request id and row locks means for its caller:
 * a unique violation on a request id attached to a reservation or waitlist entry (a
 * race the claim's own lookup did not see; the id stays taken forever, errors.proto
 * IDEMPOTENCY) is IDEMPOTENCY_KEY_REUSED naming what holds it; a lock wait past
 * lock_timeout is LOCK_TIMEOUT naming `skus`. Any other error is returned as it is.
 */
export async function explainWriteError(db: Db, err: unknown, key: Pick<IdempotencyKey, "caller" | "requestId">, skus: readonly string[]): Promise<unknown> {
  const pg = err as { code?: string; constraint?: string };
  if (pg.code === "23505" && pg.constraint === "reservations_caller_request_id_key") {
    const [existing] = await query<{ id: string }>(db, `SELECT id FROM reservations WHERE caller = ? AND request_id = ?`, [key.caller, key.requestId]);
    return idempotencyKeyReused(key.requestId, { reservationId: existing?.id });
  }
  if (pg.code === "23505" && pg.constraint === "waitlist_entries_caller_request_id_sku_key") {
    const [existing] = await query<{ id: string }>(db, `SELECT id FROM waitlist_entries WHERE caller = ? AND request_id = ? ORDER BY seq LIMIT 1`, [key.caller, key.requestId]);
    return idempotencyKeyReused(key.requestId, { waitlistEntryId: existing?.id });
  }
  if (isLockTimeout(err)) return lockTimeout({ skus: [...skus] }, err);
  return err;
}

const REPLAYED = new WeakSet<ConnectError>();

/** True for an error answered from an idempotency record (a replayed refusal), not decided now. */
export function wasReplayed(err: unknown): boolean {
  return err instanceof ConnectError && REPLAYED.has(err);
}
