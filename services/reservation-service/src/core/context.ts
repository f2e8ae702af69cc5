import type { Knex } from "knex";
import type { Logger } from "@holdfast/runtime";
import type { ReservationSettings } from "./settings.js";

/**
 * The authenticated caller. Idempotency keys are scoped per principal, and it is
 * the ledger's actor ("<role>:<subject>").
 */
export interface Principal {
  role: "admin" | "service" | "customer";
  subject: string;
  /** "<role>:<subject>". */
  id: string;
}

/**
 * Until authentication lands (bearer JWTs, see the contract's AUTHENTICATION),
 * every caller is this one principal, which may do everything an admin may.
 * Only the transport layer resolves principals; the logic below takes one.
 */
export const ANONYMOUS_PRINCIPAL: Principal = { role: "admin", subject: "anonymous", id: "admin:anonymous" };

/** What every operation of the reservation logic runs with. */
export interface Deps {
  db: Knex;
  settings: ReservationSettings;
  logger: Logger;
}

/** One call: who makes it and when it stops mattering. */
export interface Call {
  principal: Principal;
  /** Aborts when the caller's deadline passes or it goes away. */
  signal: AbortSignal;
}
