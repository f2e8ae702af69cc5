import { expect } from "chai";
import type { Knex } from "knex";
import { createKnex, migrateDown, migrateLatest, migrateRollbackAll, migrationStatus } from "@holdfast/schema";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { rejectionOf, sqlStateOf } from "../support/assertions.js";

const CORE_TABLES = [
  "audit_events",
  "idempotency_records",
  "inventory",
  "inventory_snapshots",
  "reconciliation_runs",
  "reservation_items",
  "reservations",
  "skus",
  "waitlist_entries",
];

describe("shared schema: migrations", () => {
  let db: TestDatabase;
  let knex: Knex;

  before(async () => {
    db = await createTestDatabase("migrations", { migrate: false });
    knex = createKnex({ url: db.url, poolMax: 2 });
  });
  after(async () => {
    await knex?.destroy();
    await db?.drop();
  });

  async function userTables(): Promise<string[]> {
    const rows = await knex("information_schema.tables")
      .select("table_name")
      .where({ table_schema: "public", table_type: "BASE TABLE" })
      .whereNotIn("table_name", ["holdfast_migrations", "holdfast_migrations_lock"]);
    return rows.map((r: { table_name: string }) => r.table_name).sort();
  }

  async function userFunctions(): Promise<string[]> {
    const { rows } = await knex.raw<{ rows: { proname: string }[] }>(
      "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
    );
    return rows.map((r) => r.proname);
  }

  it("migrates an empty database up to the latest schema", async () => {
    expect(await userTables()).to.deep.equal([]);
    await migrateLatest(knex);
    expect(await userTables()).to.include.members(CORE_TABLES);
    const status = await migrationStatus(knex);
    expect(status.pending).to.deep.equal([]);
    expect(status.applied.length).to.be.greaterThan(0);
  });

  it("refuses an oversold or negative counter in the database itself", async () => {
    await knex("skus").insert({ code: "MIG-1", name: "Migration test" });
    await knex("inventory").insert({ sku_code: "MIG-1", on_hand: 10, reserved: 0, allocated: 0 });
    const oversell = knex("inventory").where({ sku_code: "MIG-1" }).update({ reserved: 8, allocated: 3 });
    expect(await sqlStateOf(oversell)).to.equal("23514");
    const negative = knex("inventory").where({ sku_code: "MIG-1" }).update({ on_hand: -1 });
    expect(await sqlStateOf(negative)).to.equal("23514");
    const row = await knex("inventory").where({ sku_code: "MIG-1" }).first();
    expect(row).to.include({ on_hand: 10, reserved: 0, allocated: 0, available: 10 });
  });

  it("refuses malformed identifiers in the database itself, at the limits the contract states (0006's checks)", async () => {
    const sku = (code: string) => knex("skus").insert({ code, name: "Format test" });
    const record = (requestId: string) => knex("idempotency_records").insert({ caller: "test", request_id: requestId, method: "m", request_hash: "h" });
    // Accepted: the longest allowed, every allowed character.
    await sku(`F${"x".repeat(63)}`);
    await sku("a.b_c-9");
    await record("r".repeat(128));
    await record("Az09._:-");
    // Refused with check_violation: one too long, empty, a first character that may not
    // start a SKU code, a character outside the class (a space, '/', '@' in a request id).
    for (const bad of [`G${"x".repeat(64)}`, "", "-abc", ".abc", "a b", "a/b", "a:b"]) expect(await sqlStateOf(sku(bad)), `SKU code ${JSON.stringify(bad)}`).to.equal("23514");
    for (const bad of ["r".repeat(129), "", "a b", "a/b", "a@b", "é"]) expect(await sqlStateOf(record(bad)), `request id ${JSON.stringify(bad)}`).to.equal("23514");
    expect(await knex("skus").where("name", "Format test").count({ n: "*" }).first()).to.deep.equal({ n: 2 });
    await knex("idempotency_records").where({ caller: "test" }).delete();
    await knex("skus").where("name", "Format test").delete();
  });

  it("keeps the audit ledger append-only", async () => {
    const [event] = await knex("audit_events")
      .insert({
        operation: "STOCK_ADJUSTED",
        sku_code: "MIG-1",
        delta_on_hand: 10,
        on_hand_before: 0,
        reserved_before: 0,
        allocated_before: 0,
        on_hand_after: 10,
        reserved_after: 0,
        allocated_after: 0,
        version_after: 2,
        actor: "test",
      })
      .returning("id");
    expect(String(await rejectionOf(knex.raw("UPDATE audit_events SET reason = 'rewritten' WHERE id = ?", [event.id])))).to.match(/append-only/i);
    expect(String(await rejectionOf(knex.raw("DELETE FROM audit_events WHERE id = ?", [event.id])))).to.match(/append-only/i);
    // A ledger row whose before + delta != after is refused.
    const inconsistent = knex("audit_events").insert({
      operation: "STOCK_ADJUSTED",
      sku_code: "MIG-1",
      delta_on_hand: 5,
      on_hand_before: 10,
      reserved_before: 0,
      allocated_before: 0,
      on_hand_after: 99,
      reserved_after: 0,
      allocated_after: 0,
      version_after: 3,
      actor: "test",
    });
    expect(await sqlStateOf(inconsistent)).to.equal("23514");
  });

  it("judges every ledger row as 0001's CASE did, now that a function evaluates the delta shape (0007)", async () => {
    // Every operation (and one that is none), every sign of each delta, a SKU_CREATED
    // from zero or not: 12 × 27 × 2 rows, judged by the CHECK's expression as it stands.
    const verdicts = async (): Promise<string> => {
      const [constraint] = await knex("pg_constraint").select(knex.raw("pg_get_constraintdef(oid) AS def")).where({ conname: "audit_events_delta_shape" });
      const expression = (constraint as { def: string }).def.replace(/^CHECK \((.*)\)$/s, "$1");
      const { rows } = await knex.raw<{ rows: { ok: boolean | null }[] }>(
        `SELECT ${expression} AS ok
           FROM unnest(ARRAY['SKU_CREATED', 'STOCK_ADJUSTED', 'HOLD_CREATED', 'WAITLIST_PROMOTED', 'HOLD_CONFIRMED', 'HOLD_RELEASED',
                             'HOLD_EXPIRED', 'ALLOCATION_CREATED', 'ALLOCATION_FULFILLED', 'ALLOCATION_CANCELLED', 'RECONCILIATION_REPAIR', 'NONE']) AS operation,
                LATERAL (SELECT a::bigint AS delta_on_hand FROM generate_series(-1, 1) a) d1,
                LATERAL (SELECT b::bigint AS delta_reserved FROM generate_series(-1, 1) b) d2,
                LATERAL (SELECT c::bigint AS delta_allocated FROM generate_series(-1, 1) c) d3,
                LATERAL (SELECT o::bigint AS on_hand_before, 0::bigint AS reserved_before, 0::bigint AS allocated_before FROM unnest(ARRAY[0, 5]) o) b
          ORDER BY operation, delta_on_hand, delta_reserved, delta_allocated, on_hand_before`,
      );
      return rows.map((r) => (r.ok === null ? "n" : r.ok ? "1" : "0")).join("");
    };
    const byFunction = await verdicts();
    expect((await knex("pg_constraint").where({ conname: "audit_events_delta_shape" }).select(knex.raw("pg_get_constraintdef(oid) AS def")).first()).def).to.include(
      "holdfast_delta_shape_ok",
    );
    expect(byFunction).to.have.length(648);
    // Not a vacuous comparison: the rule accepts some rows and refuses most.
    expect(byFunction.split("1").length - 1).to.be.within(20, 200);
    // Down to before 0007 (the migrations after it first), where 0001's CASE is back.
    while ((await migrationStatus(knex)).applied.some((m) => m.name === "0007_ledger_delta_shape")) await migrateDown(knex);
    expect((await knex("pg_constraint").where({ conname: "audit_events_delta_shape" }).select(knex.raw("pg_get_constraintdef(oid) AS def")).first()).def).to.not.include(
      "holdfast_delta_shape_ok",
    );
    const byCase = await verdicts();
    expect(byCase).to.equal(byFunction);
    await migrateLatest(knex);
  });

  it("migrates down one step at a time to nothing, then up again", async () => {
    const { applied } = await migrationStatus(knex);
    for (let i = applied.length; i > 0; i--) {
      await migrateDown(knex);
      expect((await migrationStatus(knex)).applied).to.have.length(i - 1);
    }
    expect(await userTables()).to.deep.equal([]);
    expect(await userFunctions()).to.deep.equal([]);
    await migrateLatest(knex);
    expect(await userTables()).to.include.members(CORE_TABLES);
    await migrateRollbackAll(knex);
    expect(await userTables()).to.deep.equal([]);
    await migrateLatest(knex);
    expect((await migrationStatus(knex)).pending).to.deep.equal([]);
  });
});
