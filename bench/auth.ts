// The bench's services verify tokens with a secret made for this run; its
// clients act with a role each RPC allows (@holdfast/dev-stack's callers).
// Processes the bench spawns to make calls (bench/load-generator.ts) get the
// secret through BENCH_CLIENT_ENV and so mint the same tokens.
import { randomBytes } from "node:crypto";
import { grpcCaller, mintCallerTokens } from "@holdfast/dev-stack";

const SECRET_VARIABLE = "HOLDFAST_BENCH_JWT_SECRET";
const secret = process.env[SECRET_VARIABLE] ?? randomBytes(32).toString("base64url");

/** Environment for every service process the bench starts. */
export const BENCH_AUTH_ENV = { AUTH_JWT_SECRET: secret, AUTH_ISSUER: "holdfast-bench", AUTH_AUDIENCE: "holdfast-bench" };

/** Environment for a client process the bench starts (its benchCaller then matches the services'). */
export const BENCH_CLIENT_ENV = { [SECRET_VARIABLE]: secret };

/** A token per role, as the services of the bench accept them. */
export const benchTokens = await mintCallerTokens(secret, { issuer: "holdfast-bench", audience: "holdfast-bench", ttlSeconds: 24 * 3600 });

/** grpc-js client options: createGrpcJsClient(service, address, undefined, benchCaller). */
export const benchCaller = grpcCaller(benchTokens);
