// The bench's services verify tokens with a secret made for this run; its
// clients act with a role each RPC allows (@holdfast/dev-stack's callers).
import { randomBytes } from "node:crypto";
import { grpcCaller, mintCallerTokens } from "@holdfast/dev-stack";

const secret = randomBytes(32).toString("base64url");

/** Environment for every service process the bench starts. */
export const BENCH_AUTH_ENV = { AUTH_JWT_SECRET: secret, AUTH_ISSUER: "holdfast-bench", AUTH_AUDIENCE: "holdfast-bench" };

/** grpc-js client options: createGrpcJsClient(service, address, undefined, benchCaller). */
export const benchCaller = grpcCaller(await mintCallerTokens(secret, { issuer: "holdfast-bench", audience: "holdfast-bench", ttlSeconds: 24 * 3600 }));
