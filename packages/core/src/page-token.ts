/**
 * Keyset page tokens (AIP-158): the sort key of the last row returned, plus a
 * fingerprint of the request's filters so that a token cannot be replayed against a
 * different query. Opaque to clients (base64url JSON), never trusted: every value
 * read back is type-checked and used only as a bound parameter.
 */
import { createHash } from "node:crypto";
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
