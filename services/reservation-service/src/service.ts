import type { ServiceImpl } from "@connectrpc/connect";
import { InventoryReservationService } from "@holdfast/contracts";
import { unimplementedService } from "@holdfast/runtime";
import { callOf } from "@holdfast/core";
import type { Deps } from "./core/context.js";
import * as catalog from "./core/catalog.js";
import * as consistency from "./core/consistency.js";
import * as lifecycle from "./core/lifecycle.js";
import * as reads from "./core/reads.js";
import * as report from "./core/report.js";
import * as reserve from "./core/reserve.js";
import * as waitlist from "./core/waitlist.js";
import * as watch from "./core/watch.js";
import * as waitlistWatch from "./core/waitlist-watch.js";

export type { Deps as ReservationDeps } from "./core/context.js";

/**
 * The InventoryReservationService implementation, the same for every
 * transport: it only turns a HandlerContext into a Call and delegates to the
 * reservation logic in core/, which does not know which transport called it.
 * RPCs whose behaviour lands with a later issue answer UNIMPLEMENTED.
 */
export function createInventoryReservationService(deps: Deps): ServiceImpl<typeof InventoryReservationService> {
  return {
    ...unimplementedService(InventoryReservationService),
    createSku: (req, ctx) => catalog.createSku(deps, callOf(ctx), req),
    getSku: (req, ctx) => catalog.getSku(deps, callOf(ctx), req),
    listSkus: (req, ctx) => catalog.listSkus(deps, callOf(ctx), req),
    updateSku: (req, ctx) => catalog.updateSku(deps, callOf(ctx), req),
    adjustStock: (req, ctx) => catalog.adjustStock(deps, callOf(ctx), req),
    createHold: (req, ctx) => reserve.createHold(deps, callOf(ctx), req),
    createAllocation: (req, ctx) => reserve.createAllocation(deps, callOf(ctx), req),
    extendHold: (req, ctx) => lifecycle.extendHold(deps, callOf(ctx), req),
    confirmHold: (req, ctx) => lifecycle.confirmHold(deps, callOf(ctx), req),
    releaseHold: (req, ctx) => lifecycle.releaseHold(deps, callOf(ctx), req),
    fulfillAllocation: (req, ctx) => lifecycle.fulfillAllocation(deps, callOf(ctx), req),
    cancelAllocation: (req, ctx) => lifecycle.cancelAllocation(deps, callOf(ctx), req),
    getReservation: (req, ctx) => reads.getReservation(deps, callOf(ctx), req),
    listReservations: (req, ctx) => reads.listReservations(deps, callOf(ctx), req),
    getAvailability: (req, ctx) => reads.getAvailability(deps, callOf(ctx), req),
    listAuditEvents: (req, ctx) => reads.listAuditEvents(deps, callOf(ctx), req),
    listAvailabilitySnapshots: (req, ctx) => reads.listAvailabilitySnapshots(deps, callOf(ctx), req),
    checkConsistency: (req, ctx) => consistency.checkConsistency(deps, callOf(ctx), req),
    watchAvailability: (req, ctx) => watch.watchAvailability(deps, callOf(ctx), req),
    joinWaitlist: (req, ctx) => waitlist.joinWaitlist(deps, callOf(ctx), req),
    leaveWaitlist: (req, ctx) => waitlist.leaveWaitlist(deps, callOf(ctx), req),
    getWaitlistEntry: (req, ctx) => waitlist.getWaitlistEntry(deps, callOf(ctx), req),
    listWaitlistEntries: (req, ctx) => waitlist.listWaitlistEntries(deps, callOf(ctx), req),
    watchWaitlist: (req, ctx) => waitlistWatch.watchWaitlist(deps, callOf(ctx), req),
    getFlashSaleReport: (req, ctx) => report.getFlashSaleReport(deps, callOf(ctx), req),
  };
}
