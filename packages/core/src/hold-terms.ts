/**
 * The hold-TTL settings, read the same way by both services: the reservation-service
 * gives holds their terms, and the expiry-worker gives the holds of the waitlist
 * promotions it makes the same terms (docs/waitlist.md). Same names, defaults and
 * checks on both, so that the two cannot disagree by construction of their loaders
 * (operators must still set them alike).
 */
import { envVar } from "@holdfast/runtime";
import {
  DEFAULT_HOLD_TTL_DEFAULT_MS,
  HOLD_TTL_MAX_DEFAULT_MS,
  HOLD_TTL_MIN_DEFAULT_MS,
  MAX_HOLD_LIFETIME_DEFAULT_MS,
  MAX_HOLD_LIFETIME_MAX_MS,
  type HoldTermSettings,
} from "@holdfast/schema";

export const holdTermsEnv = {
  HOLD_TTL_MIN_MS: envVar.positiveInt(HOLD_TTL_MIN_DEFAULT_MS, MAX_HOLD_LIFETIME_MAX_MS),
  HOLD_TTL_MAX_MS: envVar.positiveInt(HOLD_TTL_MAX_DEFAULT_MS, MAX_HOLD_LIFETIME_MAX_MS),
  DEFAULT_HOLD_TTL_MS: envVar.positiveInt(DEFAULT_HOLD_TTL_DEFAULT_MS, MAX_HOLD_LIFETIME_MAX_MS),
  MAX_HOLD_LIFETIME_MS: envVar.positiveInt(MAX_HOLD_LIFETIME_DEFAULT_MS, MAX_HOLD_LIFETIME_MAX_MS),
};

type HoldTermsEnv = { [K in keyof typeof holdTermsEnv]: number };

/** The settings' relations (zod superRefine context). */
export function checkHoldTermsEnv(env: HoldTermsEnv, ctx: { addIssue(issue: { code: "custom"; path: string[]; message: string }): void }): void {
  if (env.HOLD_TTL_MIN_MS > env.HOLD_TTL_MAX_MS) ctx.addIssue({ code: "custom", path: ["HOLD_TTL_MIN_MS"], message: "must not exceed HOLD_TTL_MAX_MS" });
  if (env.HOLD_TTL_MAX_MS > env.MAX_HOLD_LIFETIME_MS) ctx.addIssue({ code: "custom", path: ["HOLD_TTL_MAX_MS"], message: "must not exceed MAX_HOLD_LIFETIME_MS" });
}

export function holdTermSettings(env: HoldTermsEnv): HoldTermSettings {
  return {
    holdTtlMinMs: env.HOLD_TTL_MIN_MS,
    holdTtlMaxMs: env.HOLD_TTL_MAX_MS,
    // The default is capped at the maximum (contract: "itself capped at the effective max_hold_ttl").
    defaultHoldTtlMs: Math.min(env.DEFAULT_HOLD_TTL_MS, env.HOLD_TTL_MAX_MS),
    maxHoldLifetimeMs: env.MAX_HOLD_LIFETIME_MS,
  };
}
