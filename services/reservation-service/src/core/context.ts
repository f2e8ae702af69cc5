import type { Knex } from "knex";
import type { Logger } from "@holdfast/runtime";
import type { ExpiryAnnouncer, InventoryAnnouncer } from "./announcers.js";
import type { AttemptLog } from "./attempts.js";
import type { GroupCommit } from "./group-commit.js";
import type { AvailabilityHub } from "./watch.js";
import type { WaitlistHub } from "./waitlist-watch.js";
import type { ReservationSettings } from "./settings.js";
import type { RateLimitHints } from "./fairness-controls.js";

export type { Call, Principal } from "@holdfast/core";

/** What every operation of the reservation logic runs with. */
export interface Deps {
  db: Knex;
  settings: ReservationSettings;
  logger: Logger;
  /** Wakes the expiry-worker for holds that expire sooner than it planned for. */
  expiry: ExpiryAnnouncer;
  /** Tells every replica's watchers which SKUs' availability changed (after commit). */
  inventory: InventoryAnnouncer;
  /** Which SKUs had an attempt rate limit when this process last read them (a hint: fairness-controls.ts). */
  rateLimits: RateLimitHints;
  /** The request log of CreateHold attempts (written in batches, after the answers). */
  attempts: AttemptLog;
  /** This process's feed of availability changes, for WatchAvailability. */
  hub: AvailabilityHub;
  /** This process's feed of waitlist changes, for WatchWaitlist (fed by `hub`). */
  waitlistHub: WaitlistHub;
  /** This process's batches of hot-SKU holds (HOT_SKU_MODE_GROUP_COMMIT). */
  hotSku: GroupCommit;
}
