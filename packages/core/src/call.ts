import type { HandlerContext } from "@connectrpc/connect";
import { principalOf, type Principal } from "./auth.js";

export type { Principal } from "./auth.js";

/** One call: who makes it and when it stops mattering. */
export interface Call {
  /** The authenticated caller (see auth.ts). */
  principal: Principal;
  /** Aborts when the caller's deadline passes or it goes away. */
  signal: AbortSignal;
}

/**
 * The Call of an RPC, from its HandlerContext: the only place the logic below
 * the transports learns who called. The service must have been wrapped with
 * `authorizeService`, otherwise this throws (fails closed).
 */
export function callOf(context: HandlerContext): Call {
  return { principal: principalOf(context), signal: context.signal };
}
