import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { unimplementedService } from "@holdfast/runtime";
import { ANONYMOUS_PRINCIPAL, type Call, type Deps } from "./core/context.js";
import * as lifecycle from "./core/lifecycle.js";
import * as reserve from "./core/reserve.js";

export type { Deps as ReservationDeps } from "./core/context.js";

/** The caller of one RPC, resolved by the transport layer (authentication lands with its issue). */
function callOf(context: HandlerContext): Call {
  return { principal: ANONYMOUS_PRINCIPAL, signal: context.signal };
}

/**
 * The InventoryReservationService implementation, the same for every
 * transport: it only turns a HandlerContext into a Call and delegates to the
 * reservation logic in core/, which does not know which transport called it.
 * RPCs whose behaviour lands with a later issue answer UNIMPLEMENTED.
 */
export function createInventoryReservationService(deps: Deps): ServiceImpl<typeof InventoryReservationService> {
  return {
    ...unimplementedService(InventoryReservationService),
    createHold: (req, ctx) => reserve.createHold(deps, callOf(ctx), req),
    createAllocation: (req, ctx) => reserve.createAllocation(deps, callOf(ctx), req),
    extendHold: (req, ctx) => lifecycle.extendHold(deps, callOf(ctx), req),
    confirmHold: (req, ctx) => lifecycle.confirmHold(deps, callOf(ctx), req),
    releaseHold: (req, ctx) => lifecycle.releaseHold(deps, callOf(ctx), req),
    fulfillAllocation: (req, ctx) => lifecycle.fulfillAllocation(deps, callOf(ctx), req),
    cancelAllocation: (req, ctx) => lifecycle.cancelAllocation(deps, callOf(ctx), req),
  };
}
