import { expect } from "chai";
import type { Knex } from "knex";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";
import { toConnectError } from "@holdfast/runtime";
import { CounterChangeRefused, PREPARED_PER_CONNECTION, applyCounterChanges, commitWith, createKnex, isStalePlan, query, transaction, type PgTransaction } from "@holdfast/schema";
import { databaseFixture } from "../support/database.js";
import { rejectionOf } from "../support/assertions.js";
import { range } from "../support/calls.js";
import { untilALockWait } from "../support/wait.js";

// query() / transaction() send every statement as a named prepared statement, and a
// transaction's statements run on generic plans (issue 8: re-parsing and re-planning
// were a third of PostgreSQL's CPU per hold). One pooled connection here, so every
// call below lands on the connection whose prepared statements it inspects.
describe("shared schema: statements are prepared once per connection", () => {
  const fx = databaseFixture("query", 1);
  let knex: Knex;
  before(() => (knex = fx.knex));

  interface Prepared {
    name: string;
    generic_plans: string;
    custom_plans: string;
  }
  const preparedAs = (text: string) =>
    query<Prepared>(knex, `SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = ?`, [text]);

  it("parses a transaction's statement once and runs it on one generic plan", async () => {
    for (let i = 0; i < 8; i++) await transaction(knex, (trx) => query(trx, "SELECT code FROM skus WHERE code = ANY(?::text[])", [[`S-${i}`]]));
    const [prepared] = await preparedAs("SELECT code FROM skus WHERE code = ANY($1::text[])");
    expect(prepared, "prepared on the connection").to.not.equal(undefined);
    expect(prepared!.name).to.match(/^hf\d+_/);
    // Left to choose, PostgreSQL would plan this one afresh each time (an array parameter).
    expect(Number(prepared!.custom_plans)).to.equal(0);
    expect(Number(prepared!.generic_plans)).to.be.at.least(8);
  });

  it("leaves statements outside a transaction to PostgreSQL's own choice of plan", async () => {
    await transaction(knex, (trx) => query(trx, "SELECT 1 AS one"));
    const [mode] = await query<{ plan_cache_mode: string }>(knex, "SHOW plan_cache_mode");
    expect(mode!.plan_cache_mode).to.equal("auto");
  });

  it("recovers from a migration that changed a prepared statement's result: retryable in a transaction, retried outside one", async () => {
    await knex.raw("CREATE TABLE query_probe (id int PRIMARY KEY, label text)");
    const read = "SELECT label FROM query_probe WHERE id = ?";
    await query(knex, "INSERT INTO query_probe VALUES (1, 'one')");
    expect(await transaction(knex, (trx) => query(trx, read, [1]))).to.deep.equal([{ label: "one" }]);
    // A column added elsewhere: PostgreSQL re-plans the statement by itself.
    await knex.raw("ALTER TABLE query_probe ADD COLUMN extra int");
    expect(await transaction(knex, (trx) => query(trx, read, [1]))).to.deep.equal([{ label: "one" }]);
    // The result's type changed: PostgreSQL refuses the prepared statement. In a
    // transaction that is the transaction's end (a retryable error, ABORTED for the
    // caller); the retry prepares it afresh.
    await knex.raw("ALTER TABLE query_probe ALTER COLUMN label TYPE varchar(10)");
    const stale = await rejectionOf(transaction(knex, (trx) => query(trx, read, [1])));
    expect(isStalePlan(stale), String(stale)).to.equal(true);
    const mapped = toConnectError(stale);
    expect([mapped.code, mapped.findDetails(ErrorInfoSchema)[0]?.reason]).to.deep.equal([Code.Aborted, "TRANSACTION_ABORTED"]);
    expect(await transaction(knex, (trx) => query(trx, read, [1]))).to.deep.equal([{ label: "one" }]);
    // Outside a transaction nothing has run yet when it is refused: retried at once.
    await knex.raw("ALTER TABLE query_probe ALTER COLUMN label TYPE text");
    expect(await query(knex, read, [1])).to.deep.equal([{ label: "one" }]);
  });

  it("after a migration, every pooled connection prepares afresh: a column's new type, and statements on several connections", async () => {
    const pool = createKnex({ url: fx.db.url, poolMax: 3 });
    try {
      await pool.raw("CREATE TABLE query_types (id text PRIMARY KEY, label text)");
      await pool.raw("INSERT INTO query_types VALUES ('5b0d8c36-2f9f-4b8e-9a57-6c1c1f1e0a01', 'a')");
      const read = "SELECT label FROM query_types WHERE id = ?";
      const id = "5b0d8c36-2f9f-4b8e-9a57-6c1c1f1e0a01";
      // Prepared on all three connections at once (each transaction holds its own).
      const held = await Promise.all(range(3).map(() => transaction(pool, async (trx) => {
        const rows = await query(trx, read, [id]);
        await query(trx, "SELECT pg_sleep(0.05)");
        return rows;
      })));
      expect(held).to.deep.equal(range(3).map(() => [{ label: "a" }]));
      // Its parameter was parsed as text; the column is uuid now (a type error for the
      // old statement, not a stale plan), and the result type changes too.
      await pool.raw("ALTER TABLE query_types ALTER COLUMN id TYPE uuid USING id::uuid, ALTER COLUMN label TYPE varchar(10)");
      // Outside transactions: every call answers, whichever connection it lands on.
      for (const _ of range(6)) expect(await query(pool, read, [id])).to.deep.equal([{ label: "a" }]);
      // And in transactions, at once and afterwards.
      const after = await Promise.all(range(3).map(() => transaction(pool, (trx) => query(trx, read, [id]))));
      expect(after).to.deep.equal(range(3).map(() => [{ label: "a" }]));
    } finally {
      await pool.destroy();
    }
  });

  it("drops a connection whose statement failed on the client's side, so the next call on it is not left with a closed statement", async () => {
    const insert = "INSERT INTO query_probe (id, label) VALUES (?, ?)";
    // node-postgres cannot serialize this value (a BigInt inside an object): it fails before the statement runs.
    const unserializable = await rejectionOf(query(knex, insert, [9, { n: 1n }]));
    expect(String(unserializable)).to.match(/BigInt/);
    await query(knex, insert, [9, "nine"]);
    expect(await query(knex, "SELECT label FROM query_probe WHERE id = ?", [9])).to.deep.equal([{ label: "nine" }]);
  });

  it("keeps a prepared statement usable after its transaction failed and rolled back", async () => {
    const insert = "INSERT INTO query_probe (id, label) VALUES (?, ?)";
    const duplicate = await rejectionOf(transaction(knex, (trx) => query(trx, insert, [1, "again"])));
    expect(String(duplicate)).to.match(/query_probe_pkey/);
    await transaction(knex, (trx) => query(trx, insert, [2, "two"]));
    expect(await query(knex, "SELECT count(*)::int AS n FROM query_probe WHERE id IN (1, 2)")).to.deep.equal([{ n: 2 }]);
  });

  it(`prepares at most ${PREPARED_PER_CONNECTION} statements on a connection and sends the rest unnamed`, async () => {
    for (let i = 0; i <= PREPARED_PER_CONNECTION; i++) {
      const [row] = await query<{ n: number }>(knex, `SELECT ?::int + ${i} AS n`, [1]);
      expect(row!.n).to.equal(i + 1);
    }
    const [count] = await query<{ n: number }>(knex, "SELECT count(*)::int AS n FROM pg_prepared_statements");
    expect(count!.n).to.equal(PREPARED_PER_CONNECTION);
  });
});

// transaction() sends BEGIN with the first statement, and commitWith() a last statement
// with the COMMIT (issue 8: two round trips per RPC instead of four, and no round trip
// through the service while a hot row is locked). The COMMIT goes out before the
// statement's outcome is known, so nothing of a transaction may be committed when that
// statement failed, wherever it failed.
describe("shared schema: a transaction's round trips", () => {
  const fx = databaseFixture("round-trips", 1);
  let knex: Knex;
  before(async () => {
    knex = fx.knex;
    await query(knex, "CREATE TABLE trip_probe (id int PRIMARY KEY, label text)");
  });

  const labels = async () => (await query<{ id: number }>(knex, "SELECT id FROM trip_probe ORDER BY id")).map((r) => r.id);
  const insert = "INSERT INTO trip_probe (id, label) VALUES (?, ?)";

  /**
   * What the pooled connection writes and reads, in order: "w:<message type>" per
   * protocol message written ("Q" a simple query such as BEGIN or COMMIT, "P"/"B"/"E"
   * parse, bind, execute of a statement), "r" per read. pg's socket is not part of its
   * API; this test reads it to see the round trips themselves.
   */
  async function wire<T>(run: () => Promise<T>): Promise<{ result: T; log: string[] }> {
    const client = knex.client as { acquireConnection(): Promise<unknown>; releaseConnection(c: unknown): Promise<void> };
    const connection = (await client.acquireConnection()) as { connection: { stream: NodeJS.WritableStream & NodeJS.EventEmitter } };
    await client.releaseConnection(connection);
    const stream = connection.connection.stream;
    const log: string[] = [];
    const write = stream.write;
    stream.write = function (this: unknown, chunk: Buffer, ...rest: unknown[]) {
      // A corked write may carry several messages: one entry per message.
      for (let at = 0; at < chunk.length; at += 1 + chunk.readUInt32BE(at + 1)) log.push(`w:${String.fromCharCode(chunk[at]!)}`);
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof stream.write;
    const onData = () => log.push("r");
    stream.on("data", onData);
    try {
      return { result: await run(), log };
    } finally {
      stream.write = write;
      stream.off("data", onData);
    }
  }
  /** The messages written before each read: one group per round trip. */
  const roundTrips = (log: string[]) => log.join(" ").split(" r").map((g) => g.trim()).filter((g) => g !== "" && g !== "r");

  it("sends BEGIN with the first statement and COMMIT with the last: two statements, two round trips", async () => {
    const { log } = await wire(() =>
      transaction(knex, async (trx) => {
        await query(trx, "SELECT ?::int AS one", [1]);
        await commitWith(trx, insert, [1, "one"]);
      }),
    );
    const trips = roundTrips(log);
    // BEGIN (Q) and the first statement before the first read; the last statement and COMMIT (Q) before the next.
    expect(trips[0]).to.match(/^w:Q w:P w:B w:D w:E w:S/);
    expect(trips[1]).to.match(/w:B .*w:S w:Q$/);
    expect(trips.length, log.join(" ")).to.be.at.most(3); // the two answers may come in more than one read
    expect(await labels()).to.deep.equal([1]);
  });

  it("keeps nothing of the transaction when its last statement fails in the database: the COMMIT behind it ends it as a ROLLBACK", async () => {
    const failure = await rejectionOf(
      transaction(knex, async (trx) => {
        await query(trx, insert, [2, "two"]);
        await commitWith(trx, insert, [1, "again"]); // a duplicate key
      }),
    );
    expect(String(failure)).to.match(/trip_probe_pkey/);
    expect(await labels()).to.deep.equal([1]);
    // The connection goes on with the next transaction.
    await transaction(knex, (trx) => commitWith(trx, insert, [3, "three"]));
    expect(await labels()).to.deep.equal([1, 3]);
  });

  it("sends no COMMIT behind a last statement node-postgres could not send, and rolls back", async () => {
    const failure = await rejectionOf(
      transaction(knex, async (trx) => {
        await query(trx, insert, [4, "four"]);
        await commitWith(trx, insert, [5, { n: 1n }]); // a BigInt inside an object: not serializable
      }),
    );
    expect(String(failure)).to.match(/BigInt/);
    expect(await labels()).to.deep.equal([1, 3]);
  });

  it("does not commit once its signal is aborted, with or without a last statement", async () => {
    const gone = new AbortController();
    const withLast = await rejectionOf(
      transaction(
        knex,
        async (trx) => {
          await query(trx, insert, [6, "six"]);
          gone.abort(new Error("caller left"));
          await commitWith(trx, insert, [7, "seven"]);
        },
        gone.signal,
      ),
    );
    expect(String(withLast)).to.match(/caller left/);
    const left = new AbortController();
    const withoutLast = await rejectionOf(
      transaction(
        knex,
        async (trx) => {
          await query(trx, insert, [8, "eight"]);
          left.abort(new Error("caller left too"));
        },
        left.signal,
      ),
    );
    expect(String(withoutLast)).to.match(/caller left too/);
    expect(await labels()).to.deep.equal([1, 3]);
    // Aborted once the last statement and its COMMIT have gone out: that commit stands, and is answered.
    const late = new AbortController();
    const committed = await transaction(
      knex,
      async (trx) => {
        const rows = await commitWith(trx, `${insert} RETURNING id`, [9, "nine"]);
        late.abort(new Error("left after the commit"));
        return rows;
      },
      late.signal,
    );
    expect(committed).to.deep.equal([{ id: 9 }]);
    expect(await labels()).to.deep.equal([1, 3, 9]);
  });

  describe("a counter change sent with the COMMIT (applyCounterChanges' finish)", () => {
    before(async () => {
      await query(knex, "INSERT INTO skus (code, name) VALUES ('TRIP-A', 'Trip A')");
      await query(knex, "INSERT INTO inventory (sku_code, on_hand) VALUES ('TRIP-A', 1)");
    });
    const counters = () => query(knex, "SELECT on_hand, version FROM inventory WHERE sku_code = 'TRIP-A'");
    const events = async () => (await query<{ n: number }>(knex, "SELECT count(*)::int AS n FROM audit_events WHERE sku_code = 'TRIP-A'"))[0]!.n;
    const take = (trx: PgTransaction, id: number, units: number, aliveForMs: number | null) =>
      applyCounterChanges(trx, [{ sku: "TRIP-A", operation: "STOCK_ADJUSTED", onHand: -units }], { actor: "test", requestId: `r-${id}` }, {
        alongside: { ctes: "probe AS (INSERT INTO trip_probe (id, label) VALUES (?, 'alongside') RETURNING id), written AS (SELECT * FROM probe)", params: [id] },
        finish: { aliveForMs },
      });

    it("fails the statement when the guard refuses it: the rows written alongside and before it are not kept", async () => {
      const before = await counters();
      const refused = await rejectionOf(
        transaction(knex, async (trx) => {
          await query(trx, insert, [10, "before"]);
          await take(trx, 11, 2, null); // 2 of the 1 on hand
        }),
      );
      expect(refused).to.be.instanceOf(CounterChangeRefused);
      expect((refused as CounterChangeRefused).reason).to.equal("refused");
      expect(await counters()).to.deep.equal(before);
      expect(await labels()).to.deep.equal([1, 3, 9]);
      expect(await events()).to.equal(0);
    });

    it("fails the statement when it ends later than aliveForMs after the transaction began", async () => {
      const before = await counters();
      const late = await rejectionOf(transaction(knex, (trx) => take(trx, 12, 1, 0)));
      expect((late as CounterChangeRefused).reason).to.equal("late");
      expect(await counters()).to.deep.equal(before);
      expect(await labels()).to.deep.equal([1, 3, 9]);
    });

    it("writes the rows alongside before it locks the counter's row, so the row is locked for the UPDATE, the event and the commit only", async () => {
      // The alongside insert waits for another transaction's uncommitted row with its
      // key: while it waits, the counter's row must not be locked yet. (PostgreSQL
      // would run the CTEs after the UPDATE, the row locked all along, but for the
      // one-time filter that reads `written`.) A change of 0 units: it locks the row all
      // the same, and leaves the stock to the tests after it.
      const others = createKnex({ url: fx.db.url, poolMax: 3 });
      const [before] = (await counters()) as { version: number }[];
      try {
        const other = await others.transaction();
        let change: Promise<unknown> | undefined;
        try {
          await query(other, insert, [14, "other"]);
          change = transaction(knex, (trx) => take(trx, 14, 0, 60_000));
          change.catch(() => undefined);
          await untilALockWait(others, "the alongside insert waiting for the other transaction's row");
          const probe = await others.transaction();
          try {
            // Fails with 55P03 (lock_not_available) if the UPDATE came first.
            expect(await query(probe, "SELECT on_hand FROM inventory WHERE sku_code = 'TRIP-A' FOR NO KEY UPDATE NOWAIT")).to.have.length(1);
          } finally {
            await probe.rollback();
          }
        } finally {
          await other.rollback();
        }
        await change;
      } finally {
        await others.destroy();
      }
      expect(await counters()).to.deep.equal([{ on_hand: 1, version: before!.version + 1 }]);
      expect(await labels()).to.include(14);
    });

    it("commits the change, its event and the rows alongside when the guard lets it through in time", async () => {
      const [before] = (await counters()) as { version: number }[];
      const eventsBefore = await events();
      await transaction(knex, (trx) => take(trx, 13, 1, 60_000));
      expect(await counters()).to.deep.equal([{ on_hand: 0, version: before!.version + 1 }]);
      expect(await events()).to.equal(eventsBefore + 1);
      expect(await labels()).to.deep.equal([1, 3, 9, 13, 14]);
    });
  });
});
