import type { Knex } from "knex";
import type { Logger } from "@holdfast/runtime";
import type { ReservationSettings } from "./settings.js";

export type { Call, Principal } from "@holdfast/core";

/** What every operation of the reservation logic runs with. */
export interface Deps {
  db: Knex;
  settings: ReservationSettings;
  logger: Logger;
}
