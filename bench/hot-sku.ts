#!/usr/bin/env node
// How the hot-SKU mode was chosen (issue 8, "The moonshot"): the database alone, no
// service, the SQL shape of a whole single-unit hold (idempotency record,
// reservation, line, guarded counter UPDATE, ledger event) on ONE hot SKU, three ways:
//   single-row   one statement per hold, autocommit: the single-row ceiling; and the
//                service's shape (BEGIN, claim, insert + record, counter + ledger,
//                COMMIT: the row is locked for one statement + commit)
//   group K      one transaction makes K holds: claims K records, inserts K
//                reservations + K lines + records K responses (one statement), ONE
//                counter UPDATE with K ledger events (one statement), COMMIT; `leaders`
//                connections do this concurrently (a leader per SKU per replica)
//   bucketed N   the SKU's stock over N rows, each hold the one-statement shape on a
//                random bucket row (no rebalancing, no reader summing N rows: a bound)
//
// The mode through the service (HOT_SKU_MODE_GROUP_COMMIT over gRPC, against the
// ceiling of the same run) is a scenario of `npm run bench` (hot-group-commit).
// Durable commits (synchronous_commit on). Machines here are shared: compare ratios.
//
//   npm run bench:hot-sku -- [--seconds 5] [--clients 16,64] [--batches 8,32,64] [--leaders 1,2,4] [--buckets 4,16]
import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { createKnex } from "@holdfast/schema";
import { drive, type Driven } from "./lib/drive.js";
import { startBenchCluster } from "./lib/stack.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    clients: { type: "string", default: "16,64" },
    batches: { type: "string", default: "8,32,64" },
    leaders: { type: "string", default: "1,2,4" },
    buckets: { type: "string", default: "4,16" },
  },
});
const seconds = Number(values.seconds);
const list = (s: string) => s.split(",").map(Number);

const ONE_STATEMENT_HOLD = `
WITH u AS (
  UPDATE inventory SET reserved = reserved + 1, version = version + 1, updated_at = now()
   WHERE sku_code = $3 AND available >= 1
  RETURNING sku_code, on_hand, reserved, allocated, version
), rec AS (
  INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, status_code, response, completed_at, expires_at)
  SELECT $1, $2, 'CreateHold', 'h', 'COMPLETED', 0, '\\x00'::bytea, now(), now() + interval '1 day' FROM u
), h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
  SELECT $4::uuid, 'HOLD', 'HELD', 'c', $1, $2, 'PESSIMISTIC', now() + interval '1 hour', now() + interval '1 hour' FROM u
  RETURNING id, expires_at, created_at
), l AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, $3, 1, 'HELD', h.expires_at, h.created_at FROM h
)
INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved, on_hand_before, reserved_before, allocated_before,
                          on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
SELECT 'HOLD_CREATED', sku_code, $4::uuid, 1, on_hand, reserved - 1, allocated, on_hand, reserved, allocated, version, $1, $2 FROM u`;

const CLAIM = `INSERT INTO idempotency_records (caller, request_id, method, request_hash, state, expires_at)
               SELECT $1, r, 'CreateHold', 'h', 'IN_FLIGHT', now() + interval '1 day' FROM unnest($2::text[]) AS r
               ON CONFLICT DO NOTHING RETURNING request_id, now() AS now`;

const INSERT_AND_RECORD = `
WITH h AS (
  INSERT INTO reservations (id, type, status, customer_id, caller, request_id, locking_strategy, expires_at, max_expires_at)
  SELECT id, 'HOLD', 'HELD', 'c', $1, r, 'PESSIMISTIC', now() + interval '1 hour', now() + interval '1 hour'
    FROM unnest($2::uuid[], $3::text[]) AS t(id, r)
  RETURNING id, expires_at, created_at
), l AS (
  INSERT INTO reservation_items (reservation_id, sku_code, quantity, status, expires_at, created_at)
  SELECT h.id, $4, 1, 'HELD', h.expires_at, h.created_at FROM h
)
UPDATE idempotency_records SET state = 'COMPLETED', status_code = 0, response = '\\x00'::bytea, completed_at = now()
 WHERE caller = $1 AND request_id = ANY($3::text[])`;

const COUNTER_AND_LEDGER = `
WITH ch AS (SELECT * FROM unnest($3::uuid[], $4::text[]) WITH ORDINALITY AS t(reservation_id, request_id, ord)),
u AS (
  UPDATE inventory SET reserved = reserved + (SELECT count(*) FROM ch), version = version + (SELECT count(*) FROM ch), updated_at = now()
   WHERE sku_code = $2 AND available >= (SELECT count(*) FROM ch)
  RETURNING sku_code, on_hand, reserved, allocated, version
)
INSERT INTO audit_events (operation, sku_code, reservation_id, delta_reserved, on_hand_before, reserved_before, allocated_before,
                          on_hand_after, reserved_after, allocated_after, version_after, actor, request_id)
SELECT 'HOLD_CREATED', u.sku_code, ch.reservation_id, 1, u.on_hand,
       u.reserved - (SELECT count(*) FROM ch) + ch.ord - 1, u.allocated, u.on_hand,
       u.reserved - (SELECT count(*) FROM ch) + ch.ord, u.allocated, u.version - (SELECT count(*) FROM ch) + ch.ord, $1, ch.request_id
  FROM ch, u ORDER BY ch.ord`;

/** Holds per second of `workers` loops, each transaction making `holdsPerTx` holds. */
async function measure(workers: number, holdsPerTx: number, tx: () => Promise<unknown>): Promise<Driven & { holdsPerSecond: number }> {
  const driven = await drive({ concurrency: workers, seconds, warmupSeconds: 0.5 }, async () => {
    await tx();
    return "OK";
  });
  return { ...driven, holdsPerSecond: driven.perSecond * holdsPerTx };
}

let seq = 0;
const rid = () => `b${++seq}`;

/** One transaction on a pooled connection: BEGIN, the statements, COMMIT. */
async function transaction(pool: pg.Pool, statements: (c: pg.PoolClient) => Promise<void>): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    await statements(c);
    await c.query("COMMIT");
  } finally {
    c.release();
  }
}

/** `k` holds on `sku` in one transaction: claims, reservations + lines + records, one counter update with k events. */
const holds = (k: number, sku: string) => async (c: pg.PoolClient) => {
  const ids = Array.from({ length: k }, () => randomUUID());
  const rs = ids.map(() => rid());
  await c.query(CLAIM, ["bench", rs]);
  await c.query(INSERT_AND_RECORD, ["bench", ids, rs, sku]);
  await c.query(COUNTER_AND_LEDGER, ["bench", sku, ids, rs]);
};

async function choice(url: string, report: (row: Record<string, unknown>) => void): Promise<void> {
  for (const clients of list(values.clients)) {
    const pool = new pg.Pool({ connectionString: url, max: clients });
    const oneStatement = (sku: () => string) => measure(clients, 1, () => pool.query(ONE_STATEMENT_HOLD, ["bench", rid(), sku(), randomUUID()]));
    report({ shape: "single-row, one statement", clients, ...(await oneStatement(() => "HOT")) });
    report({ shape: "single-row, service shape (5 round trips)", clients, ...(await measure(clients, 1, () => transaction(pool, holds(1, "HOT")))) });
    for (const n of list(values.buckets)) {
      report({ shape: `bucketed N=${n}, one statement`, clients, ...(await oneStatement(() => `HOT-B${Math.floor(Math.random() * n)}`)) });
    }
    await pool.end();
  }
  for (const leaders of list(values.leaders)) {
    const pool = new pg.Pool({ connectionString: url, max: leaders });
    for (const k of list(values.batches)) {
      report({ shape: `group commit K=${k}`, leaders, ...(await measure(leaders, k, () => transaction(pool, holds(k, "HOT")))) });
    }
    await pool.end();
  }
}

async function main(): Promise<void> {
  const cluster = await startBenchCluster();
  try {
    const url = await cluster.migrated("bench");
    const knex = createKnex({ url, poolMax: 2 });
    const codes = ["HOT", ...Array.from({ length: Math.max(...list(values.buckets)) }, (_, b) => `HOT-B${b}`)];
    await knex("skus").insert(codes.map((code) => ({ code, name: code })));
    await knex("inventory").insert(codes.map((sku_code) => ({ sku_code, on_hand: 1_000_000_000 })));
    await knex.destroy();
    const rows: Record<string, unknown>[] = [];
    await choice(url, (row) => {
      rows.push(row);
      console.log(JSON.stringify(row));
    });
    const out = fileURLToPath(new URL("../results/hot-sku.json", import.meta.url));
    await mkdir(path.dirname(out), { recursive: true });
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), seconds, choice: rows }, null, 2)}\n`);
    console.log(`written ${path.relative(process.cwd(), out)}`);
  } finally {
    await cluster.stop();
  }
}

await main();
