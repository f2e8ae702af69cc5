/**
 * Worker replicas known through the database (WorkerStatus.replicas): each replica
 * upserts its row at start, renews heartbeat_at every HEARTBEAT_INTERVAL_MS and
 * deletes its row on a clean stop. A replica that died without stopping drops out
 * of the listing a minute after its last heartbeat; retention deletes its row a day
 * later. Times are the database clock, so skewed hosts agree on who is live.
 */
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import { WorkerReplicaSchema, type WorkerReplica } from "@holdfast/contracts";
import { ts } from "@holdfast/core";
import { query, type WorkerReplicaRow } from "@holdfast/schema";
import { WORKER_VERSION, type WorkerDeps } from "./context.js";

/** This host's name (worker_replicas_host_length: 1-256 characters). */
const HOST = hostname().slice(0, 256) || "unknown";

/** This process's row; started_at is the process start, as in WorkerStatus.start_time. */
function self(deps: WorkerDeps): unknown[] {
  return [deps.settings.workerId, HOST, process.pid, WORKER_VERSION, deps.state.startedAt];
}

const UPSERT = (onConflict: string) => `
INSERT INTO worker_replicas (worker_id, host, pid, version, started_at, heartbeat_at)
VALUES (?, ?, ?, ?, ?, now())
ON CONFLICT (worker_id) DO UPDATE SET ${onConflict}`;

/**
 * At start. A row left by an earlier process with the same WORKER_ID (a restarted
 * pod keeps its name) is taken over whole.
 */
export async function register(deps: WorkerDeps): Promise<void> {
  await query(
    deps.db,
    UPSERT(`host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version, started_at = EXCLUDED.started_at, heartbeat_at = now()`),
    self(deps),
  );
}

/**
 * Every heartbeat interval. An upsert rather than an UPDATE, so that a row that
 * vanished (pruned after a long database outage, deleted by hand) comes back.
 */
export async function heartbeat(deps: WorkerDeps): Promise<void> {
  await query(deps.db, UPSERT(`heartbeat_at = now()`), self(deps));
}

/** On a clean stop: this process's row only (not a newer process's that took the id over). */
export async function deregister(deps: WorkerDeps): Promise<void> {
  await query(deps.db, `DELETE FROM worker_replicas WHERE worker_id = ? AND pid = ? AND host = ?`, [deps.settings.workerId, process.pid, HOST]);
}

/** Replicas with a heartbeat in the last minute (worker.proto), this one included (worker_replicas_heartbeat_at_idx). */
export async function liveReplicas(deps: WorkerDeps): Promise<WorkerReplica[]> {
  const rows = await query<WorkerReplicaRow>(
    deps.db,
    `SELECT worker_id, host, pid, version, started_at, heartbeat_at
       FROM worker_replicas
      WHERE heartbeat_at > now() - interval '1 minute'
      ORDER BY worker_id`,
  );
  return rows.map((r) =>
    create(WorkerReplicaSchema, { workerId: r.worker_id, host: `${r.host}/${r.pid}`, startTime: ts(r.started_at), lastHeartbeatTime: ts(r.heartbeat_at) }),
  );
}
