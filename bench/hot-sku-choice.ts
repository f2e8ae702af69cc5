#!/usr/bin/env node
// Choosing a hot-SKU mode by measuring (issue 8, "The moonshot"): the database alone,
// no service, the SQL shape of a whole single-unit hold on ONE hot SKU, three ways:
//
//   single-row   one statement per hold (idempotency record, reservation, line,
//                guarded counter UPDATE, ledger event), autocommit: the single-row
//                ceiling; and the service's shape (BEGIN, claim, insert + record,
//                counter + ledger, COMMIT: the row is locked for one statement + commit)
//   group K      one transaction makes K holds: claims K records, inserts K
//                reservations + K lines + records K responses (one statement), ONE
//                counter UPDATE with K ledger events (one statement), COMMIT; `leaders`
//                connections do this concurrently (a leader per SKU per replica)
//   bucketed N   the SKU's stock over N rows, each hold the one-statement shape on a
//                random bucket row
//
// Holds/s for each, in the same run, durable commits (synchronous_commit on).
//
//   node bench/dist/hot-sku-choice.js [--seconds 5] [--clients 16,64]
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { ensureDatabase, freePort, startEmbeddedPostgres } from "@holdfast/dev-stack";
import { createKnex, migrateLatest } from "@holdfast/schema";

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

async function drive(workers: number, one: (worker: number) => Promise<number>): Promise<{ holdsPerSecond: number; txPerSecond: number; p50Ms: number; p99Ms: number }> {
  const deadline = performance.now() + seconds * 1000;
  const latencies: number[] = [];
  let holds = 0;
  let tx = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        const n = await one(w);
        holds += n;
        tx++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! * 10) / 10;
  return { holdsPerSecond: Math.round(holds / elapsed), txPerSecond: Math.round(tx / elapsed), p50Ms: q(0.5), p99Ms: q(0.99) };
}

let seq = 0;
const rid = () => `b${++seq}`;

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), "holdfast-hot-"));
  const cluster = await startEmbeddedPostgres({ dataDir: path.join(root, "data"), port: await freePort(), persistent: false });
  try {
    await ensureDatabase(cluster.url("postgres"), "bench");
    const url = cluster.url("bench");
    const knex = createKnex({ url, poolMax: 2 });
    await migrateLatest(knex);
    const maxBuckets = Math.max(...list(values.buckets));
    const codes = ["HOT", ...Array.from({ length: maxBuckets }, (_, b) => `HOT-B${b}`)];
    await knex("skus").insert(codes.map((code) => ({ code, name: code })));
    await knex("inventory").insert(codes.map((sku_code) => ({ sku_code, on_hand: 1_000_000_000 })));
    await knex.destroy();
    const results: Record<string, unknown>[] = [];
    const report = (row: Record<string, unknown>) => {
      results.push(row);
      console.log(JSON.stringify(row));
    };

    for (const clients of list(values.clients)) {
      const pool = new pg.Pool({ connectionString: url, max: clients });
      report({ shape: "single-row, one statement", clients, ...(await drive(clients, async () => (await pool.query(ONE_STATEMENT_HOLD, ["bench", rid(), "HOT", randomUUID()]), 1))) });
      report({
        shape: "single-row, service shape (5 round trips)",
        clients,
        ...(await drive(clients, async () => {
          const c = await pool.connect();
          try {
            const r = rid();
            const id = randomUUID();
            await c.query("BEGIN");
            await c.query(CLAIM, ["bench", [r]]);
            await c.query(INSERT_AND_RECORD, ["bench", [id], [r], "HOT"]);
            await c.query(COUNTER_AND_LEDGER, ["bench", "HOT", [id], [r]]);
            await c.query("COMMIT");
          } finally {
            c.release();
          }
          return 1;
        })),
      });
      for (const n of list(values.buckets)) {
        report({ shape: `bucketed N=${n}, one statement`, clients, ...(await drive(clients, async () => (await pool.query(ONE_STATEMENT_HOLD, ["bench", rid(), `HOT-B${Math.floor(Math.random() * n)}`, randomUUID()]), 1))) });
      }
      await pool.end();
    }
    for (const leaders of list(values.leaders)) {
      const pool = new pg.Pool({ connectionString: url, max: leaders });
      for (const k of list(values.batches)) {
        report({
          shape: `group commit K=${k}`,
          leaders,
          ...(await drive(leaders, async () => {
            const c = await pool.connect();
            try {
              const ids = Array.from({ length: k }, () => randomUUID());
              const rs = ids.map(() => rid());
              await c.query("BEGIN");
              await c.query(CLAIM, ["bench", rs]);
              await c.query(INSERT_AND_RECORD, ["bench", ids, rs, "HOT"]);
              await c.query(COUNTER_AND_LEDGER, ["bench", "HOT", ids, rs]);
              await c.query("COMMIT");
            } finally {
              c.release();
            }
            return k;
          })),
        });
      }
      await pool.end();
    }
  } finally {
    await cluster.stop();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
