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

/** One call: who makes it and when it stops mattering. */
export interface Call {
  principal: Principal;
  /** Aborts when the caller's deadline passes or it goes away. */
  signal: AbortSignal;
}
