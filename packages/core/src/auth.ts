/**
 * Who is calling, and may they: bearer JWTs (verified with `jose`) and the
 * per-RPC `access` option of the contract (access.proto).
 *
 * - Authentication. The token comes in the `authorization` metadata/header as
 *   "Bearer <jwt>". Its signature, issuer, audience and expiry are checked
 *   against one configured key: an HS256 shared secret, a PEM public key, or a
 *   JWKS file (asymmetric keys only: a public key can never verify an HMAC
 *   token, so there is no algorithm confusion). Its "role" claim must be a
 *   Role and its subject a valid customer id (IDENTIFIERS): the principal is
 *   "<role>:<subject>". Failures are UNAUTHENTICATED with TOKEN_MISSING,
 *   TOKEN_EXPIRED or TOKEN_INVALID, and say nothing about which check failed.
 * - Authorization. Every RPC declares the roles that may call it; the wrapper
 *   below refuses the others with PERMISSION_DENIED / ROLE_NOT_PERMITTED before
 *   the request is even validated, and refuses to wrap a service with an RPC
 *   that declares none (nothing is open by omission). Per-resource rules (a
 *   customer acts only for itself) are the handlers' (see `customerScope`).
 *
 * Health and reflection are separate services, not wrapped: open by design.
 */
import { createHash, createPublicKey, randomBytes } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { getOption, hasOption, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, createContextKey, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as jose from "jose";
import { ErrorReason, Role, access } from "@holdfast/contracts";
import { rpcError, type AuthSettings, type Logger } from "@holdfast/runtime";
import { tooManyStreams } from "./errors.js";
import { isValidCustomerId } from "@holdfast/schema";

export type RoleName = "admin" | "service" | "customer";

export const ROLE_NAMES: readonly RoleName[] = ["admin", "service", "customer"];

const ROLE_OF: Record<Role, RoleName | undefined> = {
  [Role.UNSPECIFIED]: undefined,
  [Role.ADMIN]: "admin",
  [Role.SERVICE]: "service",
  [Role.CUSTOMER]: "customer",
};

/** The authenticated caller. Idempotency keys are scoped per principal, and it is the ledger's actor. */
export interface Principal {
  role: RoleName;
  /** The token's subject; for a customer, its customer id. */
  subject: string;
  /** "<role>:<subject>". */
  id: string;
}

/** The token claim that carries the role. */
const ROLE_CLAIM = "role";

/** Every asymmetric JWS algorithm; HS* only ever with a shared secret. */
const ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];

const tokenMissing = () =>
  rpcError(Code.Unauthenticated, ErrorReason.TOKEN_MISSING, 'a bearer token is required in the "authorization" header ("Bearer <jwt>")');
const tokenInvalid = () => rpcError(Code.Unauthenticated, ErrorReason.TOKEN_INVALID, "the bearer token is not valid");
const tokenExpired = () => rpcError(Code.Unauthenticated, ErrorReason.TOKEN_EXPIRED, "the bearer token has expired or is not valid yet");

function roleNotPermitted(principal: Principal, method: DescMethod, allowed: readonly RoleName[]) {
  return rpcError(Code.PermissionDenied, ErrorReason.ROLE_NOT_PERMITTED, `role ${principal.role} may not call ${method.name} (allowed: ${allowed.join(", ")})`, {
    metadata: { role: principal.role, allowed_roles: allowed.join(",") },
  });
}

/** A customer named someone else's customer_id. */
const customerIdMismatch = () =>
  rpcError(Code.PermissionDenied, ErrorReason.CUSTOMER_ID_MISMATCH, "a customer may only act for itself: customer_id must be empty or the token's subject");

/** A customer named a reservation or waitlist entry that is not theirs or does not exist (indistinguishable on purpose). */
const notResourceOwner = () => rpcError(Code.PermissionDenied, ErrorReason.NOT_RESOURCE_OWNER, "not found among the caller's own resources");

/** How many verified tokens are remembered (a service reuses one token for thousands of calls). */
const CACHE_LIMIT = 10_000;

export class Authenticator {
  /** sha256(token) → principal and its expiry (ms); checked again on every use. */
  private readonly cache = new Map<string, { principal: Principal; expiresAt: number }>();

  private constructor(
    private readonly key: jose.CryptoKey | jose.KeyObject | Uint8Array | jose.JWTVerifyGetKey,
    private readonly algorithms: string[],
    private readonly settings: AuthSettings,
  ) {}

  /** Loads the key once; a bad key file fails start-up, not the first call. */
  static create(settings: AuthSettings): Authenticator {
    const { key } = settings;
    switch (key.kind) {
      case "secret":
        return new Authenticator(new TextEncoder().encode(key.secret), ["HS256"], settings);
      case "development-secret-file":
        return new Authenticator(new TextEncoder().encode(developmentSecret(key.file)), ["HS256"], settings);
      case "public-key-file":
        return new Authenticator(createPublicKey(readFileSync(key.file, "utf8")), ASYMMETRIC_ALGORITHMS, settings);
      case "jwks-file":
        return new Authenticator(jose.createLocalJWKSet(JSON.parse(readFileSync(key.file, "utf8")) as jose.JSONWebKeySet), ASYMMETRIC_ALGORITHMS, settings);
    }
  }

  /** Drops expired entries, then, if still full, the oldest half (Map order is insertion order). */
  private evict(): void {
    const now = Date.now();
    for (const [key, entry] of this.cache) if (entry.expiresAt <= now) this.cache.delete(key);
    if (this.cache.size < CACHE_LIMIT) return;
    let drop = this.cache.size / 2;
    for (const key of this.cache.keys()) {
      if (drop-- <= 0) break;
      this.cache.delete(key);
    }
  }

  /** The principal of an `authorization` header value, or UNAUTHENTICATED. */
  async authenticate(authorization: string | null): Promise<Principal> {
    // "Bearer" without a token is a missing token too (and some stacks trim the trailing space).
    if (authorization === null || /^\s*(Bearer\s*)?$/i.test(authorization)) throw tokenMissing();
    const match = /^Bearer +([A-Za-z0-9_.~+/=-]+) *$/i.exec(authorization);
    if (match === null) throw tokenInvalid();
    const token = match[1];
    // Keyed by digest: a cache entry costs 64 bytes of key however long the token.
    const cacheKey = createHash("sha256").update(token).digest("hex");
    const cached = this.cache.get(cacheKey);
    if (cached !== undefined && cached.expiresAt > Date.now() - this.settings.clockToleranceS * 1000) return cached.principal;

    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, this.key as Uint8Array, {
        algorithms: this.algorithms,
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        clockTolerance: this.settings.clockToleranceS,
        requiredClaims: ["exp", "sub"],
      }));
    } catch (err) {
      if (err instanceof jose.errors.JWTExpired) throw tokenExpired();
      if (err instanceof jose.errors.JWTClaimValidationFailed && err.claim === "nbf") throw tokenExpired();
      throw tokenInvalid();
    }
    const role = payload[ROLE_CLAIM];
    const subject = payload.sub;
    if (typeof role !== "string" || !ROLE_NAMES.includes(role as RoleName) || subject === undefined || !isValidCustomerId(subject)) throw tokenInvalid();
    const principal: Principal = { role: role as RoleName, subject, id: `${role}:${subject}` };
    if (this.cache.size >= CACHE_LIMIT) this.evict();
    this.cache.set(cacheKey, { principal, expiresAt: payload.exp! * 1000 });
    return principal;
  }
}

/** The service's Authenticator; says loudly when it uses the development secret. */
export function createAuthenticator(settings: AuthSettings, logger: Logger): Authenticator {
  const authenticator = Authenticator.create(settings);
  if (settings.key.kind === "development-secret-file") {
    logger.warn(
      { file: settings.key.file },
      "bearer tokens are verified with the development secret (no AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE); mint tokens with `npm run token`",
    );
  }
  return authenticator;
}

const PRINCIPAL = createContextKey<Principal | undefined>(undefined, { description: "the authenticated caller" });

/** The caller of a call that went through `authorizeService`. Fails closed if it did not. */
export function principalOf(context: HandlerContext): Principal {
  const principal = context.values.get(PRINCIPAL);
  if (principal === undefined) throw new Error(`${context.method.name}: no principal; the service was not wrapped with authorizeService`);
  return principal;
}

/** The roles an RPC's `access` option allows; throws if it declares none. */
export function allowedRoles(method: DescMethod): RoleName[] {
  const roles = hasOption(method, access) ? getOption(method, access).roles.map((r) => ROLE_OF[r]) : [];
  const names = roles.filter((r): r is RoleName => r !== undefined);
  if (names.length === 0) throw new Error(`${method.parent.typeName}.${method.name} declares no access roles (option (holdfast.inventory.v1.access))`);
  return names;
}

type AnyMethod = (request: unknown, context: HandlerContext) => unknown;

/** How many server streams (Watch*) one principal may hold open on one replica. */
export interface StreamLimits {
  perCustomer: number;
  /** For admin and service principals, which usually multiplex many users. */
  perCaller: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = { perCustomer: 4, perCaller: 100 };

/** Open streams per principal; refuses the one past the limit (TOO_MANY_STREAMS). */
class StreamCounter {
  private readonly open_ = new Map<string, number>();

  constructor(private readonly limits: StreamLimits) {}

  /** Counts a new stream for `principal` (call `close` once when it ends). */
  open(principal: Principal): void {
    const limit = principal.role === "customer" ? this.limits.perCustomer : this.limits.perCaller;
    const count = this.open_.get(principal.id) ?? 0;
    if (count >= limit) throw tooManyStreams(principal.role === "customer" ? `customer/${principal.subject}` : principal.id, limit);
    this.open_.set(principal.id, count + 1);
  }

  close(principal: Principal): void {
    const left = this.open_.get(principal.id)! - 1;
    if (left === 0) this.open_.delete(principal.id);
    else this.open_.set(principal.id, left);
  }
}

/**
 * Wraps every method of `impl`: authenticates the caller, checks its role
 * against the RPC's `access` option, and makes the principal available to the
 * implementation (`principalOf`). Goes outside request validation, so an
 * unauthenticated caller learns nothing about the request rules.
 */
export function authorizeService<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  authenticator: Authenticator,
  streamLimits: StreamLimits = DEFAULT_STREAM_LIMITS,
): ServiceImpl<S> {
  const methods = impl as unknown as Record<string, AnyMethod>;
  const wrapped: Record<string, AnyMethod> = {};
  const openStreams = new StreamCounter(streamLimits);
  for (const method of service.methods) {
    const fn = methods[method.localName].bind(impl);
    const allowed = allowedRoles(method);
    const admit = async (context: HandlerContext) => {
      const principal = await authenticator.authenticate(context.requestHeader.get("authorization"));
      if (!allowed.includes(principal.role)) throw roleNotPermitted(principal, method, allowed);
      context.values.set(PRINCIPAL, principal);
      return principal;
    };
    wrapped[method.localName] =
      method.methodKind === "unary"
        ? async (request, context) => {
            await admit(context);
            return fn(request, context);
          }
        : async function* (request, context) {
            const principal = await admit(context);
            openStreams.open(principal);
            try {
              yield* fn(request, context) as AsyncIterable<unknown>;
            } finally {
              openStreams.close(principal);
            }
          };
  }
  return wrapped as unknown as ServiceImpl<S>;
}

/**
 * The customer a call acts for, given the request's customer_id: a customer
 * caller acts only for itself (empty = itself, anything else is
 * CUSTOMER_ID_MISMATCH); other roles name whom they like (`requested`,
 * possibly empty).
 */
export function customerScope(principal: Principal, requested: string): string {
  if (principal.role !== "customer") return requested;
  if (requested !== "" && requested !== principal.subject) throw customerIdMismatch();
  return principal.subject;
}

/**
 * For a customer caller: refuses a resource it does not own, or that does not
 * exist, with the same NOT_RESOURCE_OWNER. Other roles pass (they get NOT_FOUND
 * from the handler for an unknown one).
 */
export function assertOwnResource(principal: Principal, ownerCustomerId: string | undefined): void {
  if (principal.role === "customer" && ownerCustomerId !== principal.subject) throw notResourceOwner();
}

// --- Tokens for development and tests -------------------------------------------

/** Signs an HS256 token as Holdfast's verifier expects it. */
export async function mintToken(
  secret: string,
  claims: { role: RoleName; subject: string; issuer: string; audience: string; ttlSeconds?: number; notBefore?: number; issuedAt?: number },
): Promise<string> {
  const issuedAt = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  let jwt = new jose.SignJWT({ [ROLE_CLAIM]: claims.role })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.subject)
    .setIssuer(claims.issuer)
    .setAudience(claims.audience)
    .setIssuedAt(issuedAt)
    .setExpirationTime(issuedAt + (claims.ttlSeconds ?? 3600));
  if (claims.notBefore !== undefined) jwt = jwt.setNotBefore(claims.notBefore);
  return jwt.sign(new TextEncoder().encode(secret));
}

/**
 * The development signing secret in `file`, created (random, mode 0600) if it
 * does not exist yet. Both services and `npm run token` read the same file, so
 * `npm start` works without configuration; production refuses to use it.
 */
export function developmentSecret(file: string): string {
  try {
    return readFileSync(file, "utf8").trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  mkdirSync(dirname(file), { recursive: true });
  // Written whole under a private name, then linked into place: link fails if another
  // process (the other service, started at the same moment) got there first, and then
  // theirs is used. Nobody ever reads a half-written file.
  const draft = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(draft, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 });
  try {
    linkSync(draft, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    unlinkSync(draft);
  }
  return readFileSync(file, "utf8").trim();
}
