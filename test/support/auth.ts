/**
 * Bearer tokens for tests. Every service a test starts verifies tokens with
 * TEST_AUTH_ENV's secret (processes.ts adds it); tests mint tokens for any
 * role and subject with `token`, and `testCaller` / `testCallerInterceptor`
 * let a test that is about something else than authorization act, on each
 * RPC, with a role it allows (@holdfast/dev-stack's callers).
 */
import { mintToken, type RoleName } from "@holdfast/core";
import { connectCaller, grpcCaller, mintCallerTokens } from "@holdfast/dev-stack";

export const TEST_JWT_SECRET = "holdfast-test-secret-0123456789-abcdefghijklmnop";
export const TEST_ISSUER = "holdfast-test";
export const TEST_AUDIENCE = "holdfast-test-audience";

/** What every test service is started with (processes.ts). */
export const TEST_AUTH_ENV: NodeJS.ProcessEnv = {
  AUTH_JWT_SECRET: TEST_JWT_SECRET,
  AUTH_ISSUER: TEST_ISSUER,
  AUTH_AUDIENCE: TEST_AUDIENCE,
  AUTH_CLOCK_TOLERANCE_S: "0",
};

/** A token for `role`/`subject`, valid for a day unless overridden. */
export function token(
  role: RoleName,
  subject = `test-${role}`,
  overrides: { secret?: string; issuer?: string; audience?: string; ttlSeconds?: number; issuedAt?: number; notBefore?: number } = {},
): Promise<string> {
  return mintToken(overrides.secret ?? TEST_JWT_SECRET, {
    role,
    subject,
    issuer: overrides.issuer ?? TEST_ISSUER,
    audience: overrides.audience ?? TEST_AUDIENCE,
    ttlSeconds: overrides.ttlSeconds ?? 24 * 3600,
    issuedAt: overrides.issuedAt,
    notBefore: overrides.notBefore,
  });
}

/** Metadata / headers carrying `jwt`. */
export const bearer = (jwt: string) => ({ authorization: `Bearer ${jwt}` });

/** The subjects of testCaller's tokens: ledger actors read "admin:test-admin", "service:test-checkout". */
export const TEST_CALLERS = { admin: "test-admin", service: "test-checkout", customer: "test-customer" } as const;

const callerTokens = await mintCallerTokens(TEST_JWT_SECRET, { issuer: TEST_ISSUER, audience: TEST_AUDIENCE, ttlSeconds: 24 * 3600 }, TEST_CALLERS);

/** grpc-js client options: createGrpcJsClient(service, address, undefined, testCaller). */
export const testCaller = grpcCaller(callerTokens);

/** For Connect transports: `interceptors: [testCallerInterceptor]`. */
export const testCallerInterceptor = connectCaller(callerTokens);
