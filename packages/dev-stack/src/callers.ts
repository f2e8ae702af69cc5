/**
 * Clients that act with "the right role for each RPC": tooling (tests,
 * benchmarks, scripts) that is about something else than authorization
 * holds one token per role and sends, on each call, the token of a role the
 * RPC's `access` option allows (admin first, then service, then customer).
 * A call that sets `authorization` itself keeps it.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ExpiryWorkerService, InventoryReservationService } from "@holdfast/contracts";
import { ROLE_NAMES, allowedRoles, mintToken, type RoleName } from "@holdfast/core";

export type CallerTokens = Record<RoleName, string>;

/** One token per role, for `subjects` (default "dev-<role>"). */
export async function mintCallerTokens(
  secret: string,
  claims: { issuer: string; audience: string; ttlSeconds?: number },
  subjects: Partial<Record<RoleName, string>> = {},
): Promise<CallerTokens> {
  const entries = await Promise.all(
    ROLE_NAMES.map(async (role) => [role, await mintToken(secret, { ...claims, role, subject: subjects[role] ?? `dev-${role}` })] as const),
  );
  return Object.fromEntries(entries) as CallerTokens;
}

const roles = new WeakMap<DescMethod, RoleName>();

/** The role such a client uses for `method` (read from the contract once per method). */
export function callerRole(method: DescMethod): RoleName {
  let role = roles.get(method);
  if (role === undefined) {
    const allowed = allowedRoles(method);
    role = ROLE_NAMES.find((r) => allowed.includes(r))!;
    roles.set(method, role);
  }
  return role;
}

const methodsByPath = new Map<string, DescMethod>(
  [InventoryReservationService, ExpiryWorkerService].flatMap((s) => s.methods.map((m) => [`/${s.typeName}/${m.name}`, m] as const)),
);

/** grpc-js client options (for createGrpcJsClient's last argument). */
export function grpcCaller(tokens: CallerTokens): grpc.ClientOptions {
  return {
    interceptors: [
      (options, nextCall) =>
        new grpc.InterceptingCall(nextCall(options), {
          start(metadata, listener, next) {
            const method = methodsByPath.get(options.method_definition.path);
            if (method !== undefined && metadata.get("authorization").length === 0) metadata.set("authorization", `Bearer ${tokens[callerRole(method)]}`);
            next(metadata, listener);
          },
        }),
    ],
  };
}

/** The same for Connect transports (`interceptors: [connectCaller(tokens)]`). */
export function connectCaller(tokens: CallerTokens): Interceptor {
  return (next) => async (req) => {
    if (!req.header.has("authorization")) req.header.set("authorization", `Bearer ${tokens[callerRole(req.method)]}`);
    return next(req);
  };
}
