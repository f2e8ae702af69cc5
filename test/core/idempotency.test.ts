// The statements a hot SKU's batch (services/reservation-service/src/core/group-commit.ts)
// records its members' outcomes with (packages/core/src/idempotency.ts), against a real
// PostgreSQL: what they write, and that they find the claimed records through the
// primary key even on a table whose statistics say it is empty (a new database, the
// first minute of a sale), where a generic plan (query.ts) is made once and kept.
import { expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { CreateHoldResponseSchema } from "@holdfast/contracts";
import { claimKeys, insufficientStock, recordOutcomesInline, type IdempotencyKey } from "@holdfast/core";
import { commitWith, query, transaction } from "@holdfast/schema";
import { databaseFixture } from "../support/database.js";

const WINDOW_MS = 60_000;
const key = (requestId: string): IdempotencyKey => ({ caller: "service:checkout", requestId, method: "test/CreateHold", hash: `h-${requestId}` });

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Subplan Name"?: string;
  "Conflict Arbiter Indexes"?: string[];
  Plans?: PlanNode[];
}
const nodesOf = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodesOf)];

describe("core: a batch's recorded outcomes", () => {
  const fx = databaseFixture("idempotency", 1);

  it("are found through the primary key on a table that looks empty: no plan that reads every record", async () => {
    const [table] = await query<{ reltuples: number }>(fx.knex, "SELECT reltuples FROM pg_class WHERE relname = 'idempotency_records'");
    expect(table!.reltuples, "never analyzed, as in a new database").to.equal(-1);
    const { sql } = recordOutcomesInline([], [], WINDOW_MS);
    let n = 0;
    const text = `WITH ${sql} SELECT 1`.replace(/\?/g, () => `$${++n}`);
    // Unprepared (knex.raw without bindings): EXPLAIN (GENERIC_PLAN) plans it as a prepared statement would be.
    const { rows } = await fx.knex.raw<{ rows: { "QUERY PLAN": { Plan: PlanNode }[] }[] }>(`EXPLAIN (GENERIC_PLAN, FORMAT JSON) ${text}`);
    const row = rows[0];
    const recorded = nodesOf(row!["QUERY PLAN"][0]!.Plan).find((node) => node["Subplan Name"] === "CTE recorded");
    expect(recorded, "the plan of the recorded CTE").to.not.equal(undefined);
    const nodes = nodesOf(recorded!);
    expect(nodes.filter((node) => node["Node Type"] === "Seq Scan").map((node) => node["Relation Name"])).to.deep.equal([]);
    expect(nodes.find((node) => node["Node Type"] === "ModifyTable")?.["Conflict Arbiter Indexes"]).to.deep.equal(["idempotency_records_pkey"]);
  });

  it("complete the records the claim wrote, responses and refusals, and forget the released ones", async () => {
    const [granted, refused, handedBack] = [key("rec-1"), key("rec-2"), key("rec-3")];
    const response = create(CreateHoldResponseSchema, { reservation: { id: "4f7a1c9e-5b8d-4e21-9a3f-0c6d2b7e8a15" } });
    await transaction(fx.knex, async (trx) => {
      const { claims } = await claimKeys(trx, [granted, refused, handedBack], WINDOW_MS);
      expect(claims.map((c) => c.claimed)).to.deep.equal([true, true, true]);
      const record = recordOutcomesInline(
        [
          { key: granted, schema: CreateHoldResponseSchema, response },
          { key: refused, refusal: insufficientStock([{ sku: "S-1", requested: 2, available: 1 }]) },
        ],
        [handedBack],
        WINDOW_MS,
      );
      await commitWith(trx, `WITH ${record.sql} SELECT 1`, record.params);
    });
    const rows = await query<{ request_id: string; state: string; status_code: number; method: string; request_hash: string; has_response: boolean; window_ms: number }>(
      fx.knex,
      `SELECT request_id, state, status_code, method, request_hash, response IS NOT NULL AS has_response,
              round(extract(epoch FROM expires_at - created_at) * 1000)::int AS window_ms
         FROM idempotency_records WHERE request_id LIKE 'rec-%' ORDER BY request_id`,
    );
    expect(rows).to.deep.equal([
      { request_id: "rec-1", state: "COMPLETED", status_code: 0, method: "test/CreateHold", request_hash: "h-rec-1", has_response: true, window_ms: WINDOW_MS },
      // FAILED_PRECONDITION (INSUFFICIENT_STOCK), replayed as recorded.
      { request_id: "rec-2", state: "COMPLETED", status_code: 9, method: "test/CreateHold", request_hash: "h-rec-2", has_response: true, window_ms: WINDOW_MS },
    ]);
  });
});
