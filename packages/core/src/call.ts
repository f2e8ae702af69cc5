import type { HandlerContext } from "@connectrpc/connect";
import { principalOf, type Principal } from "./auth.js";

export type { Principal } from "./auth.js";

/** One call: who makes it and when it stops mattering. */
export interface Call {
  /** The authenticated caller (see auth.ts). */
  principal: Principal;
  /** Aborts when the caller's deadline passes or it goes away. */
  signal: AbortSignal;
  /** When the caller stops waiting (Date.now() milliseconds), if it set a deadline. */
  deadline?: number;
}

/**
 * The Call of an RPC, from its HandlerContext: the only place the logic below
 * the transports learns who called. The service must have been wrapped with
 * `authorizeService`, otherwise this throws (fails closed).
 */
export function callOf(context: HandlerContext): Call {
  const remaining = context.timeoutMs();
  return { principal: principalOf(context), signal: context.signal, deadline: remaining === undefined ? undefined : Date.now() + remaining };
}
