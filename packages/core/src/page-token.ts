/**
 * Keyset page tokens (AIP-158): the sort key of the last row returned, plus a
 * fingerprint of the request's filters so that a token cannot be replayed against a
 * different query. Opaque to clients (base64url JSON), never trusted: every value
 * read back is type-checked and used only as a bound parameter.
 */
import { createHash } from "node:crypto";
import { UUID_PATTERN } from "@holdfast/schema";
import { invalidPageToken } from "./errors.js";

type KeyPart = string | number;

function fingerprint(filters: unknown): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

export function encodePageToken(filters: unknown, key: readonly KeyPart[]): string {
  return Buffer.from(JSON.stringify({ v: 1, f: fingerprint(filters), k: key })).toString("base64url");
}

/**
 * The keyset of a token, checked against the shape `kinds` ("string" / "number" per
 * part); undefined for an empty token (first page). INVALID_ARGUMENT /
 * INVALID_PAGE_TOKEN for anything malformed or minted for other filters.
 */
export function decodePageToken(token: string, filters: unknown, kinds: readonly ("string" | "number")[]): KeyPart[] | undefined {
  if (token === "") return undefined;
  let parsed: unknown;
  try {
    if (token.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(token)) throw new Error("not base64url");
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidPageToken("is not a token issued by this server");
  }
  const t = parsed as { v?: unknown; f?: unknown; k?: unknown };
  if (t === null || typeof t !== "object" || t.v !== 1 || typeof t.f !== "string" || !Array.isArray(t.k) || t.k.length !== kinds.length) {
    throw invalidPageToken("is not a token issued by this server");
  }
  const key = t.k as unknown[];
  if (!key.every((part, i) => typeof part === kinds[i] && (typeof part !== "number" || Number.isSafeInteger(part)))) {
    throw invalidPageToken("is not a token issued by this server");
  }
  if (t.f !== fingerprint(filters)) throw invalidPageToken("was issued for a request with different filters");
  return key as KeyPart[];
}

/** A token's key part that must be a UUID (tokens are not signed: never let a crafted one reach a cast). */
export function keyUuid(value: string): string {
  if (!UUID_PATTERN.test(value)) throw invalidPageToken("is not a token issued by this server");
  return value;
}

/** Page of `limit` rows from `limit + 1` fetched: the rows, and whether more follow. */
export function splitPage<T>(rows: T[], limit: number): { page: T[]; more: boolean } {
  return rows.length > limit ? { page: rows.slice(0, limit), more: true } : { page: rows, more: false };
}

/*
 * Timestamps in a key are PostgreSQL's microseconds, not JavaScript's milliseconds: a
 * millisecond key would skip or repeat rows that share a millisecond.
 */

/**
 * The exact microsecond value of a timestamptz column, for a page token (numeric in
 * PostgreSQL 14+, so no float rounding; a safe integer in JavaScript until 2255).
 */
export const micros = (column: string): string => `(extract(epoch from ${column}) * 1000000)::bigint`;

/**
 * Microseconds since the epoch as an ISO 8601 UTC literal with six fractional digits,
 * bound as `?::timestamptz`. Exact (a float conversion such as to_timestamp() is not
 * at today's magnitudes), and ISO input with "Z" reads the same whatever the
 * session's DateStyle and TimeZone.
 */
export function isoMicros(us: bigint | number): string {
  const micros = BigInt(us);
  let ms = micros / 1000n;
  if (micros < 0n && ms * 1000n !== micros) ms -= 1n; // floor, not truncation
  const iso = new Date(Number(ms)).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, -1)}${String(micros - ms * 1000n).padStart(3, "0")}Z`;
}
