/**
 * Signing tokens locally: the key `npm start`'s services verify with (the
 * AUTH_* variables, else the development secret file), and the tokens the
 * stack prints at start-up and `npm run token` mints.
 */
import path from "node:path";
import { z } from "zod";
import { authEnv, authSettings, loadConfig, type AuthSettings } from "@holdfast/runtime";
import { developmentSecret, mintToken, type RoleName } from "@holdfast/core";

const environment = z.object({ NODE_ENV: z.string().default("development"), ...authEnv }).transform((env) => authSettings(env));

/**
 * The environment with the development secret kept in the stack's data folder
 * (HOLDFAST_DATA_DIR, default .holdfast), unless AUTH_DEV_SECRET_FILE says otherwise.
 */
export function withLocalSecretFile(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env.AUTH_DEV_SECRET_FILE) return env;
  return { ...env, AUTH_DEV_SECRET_FILE: path.join(env.HOLDFAST_DATA_DIR || ".holdfast", "dev-jwt-secret") };
}

/** The auth settings the services will derive from this environment. */
export function localAuthSettings(env: NodeJS.ProcessEnv = process.env): AuthSettings {
  return loadConfig(environment, withLocalSecretFile(env));
}

/**
 * The HS256 secret tokens can be signed with here, or undefined when the
 * services verify with a public key (their tokens come from the identity provider).
 */
export function localSigningSecret(settings: AuthSettings): string | undefined {
  switch (settings.key.kind) {
    case "secret":
      return settings.key.secret;
    case "development-secret-file":
      return developmentSecret(settings.key.file);
    default:
      return undefined;
  }
}

export function mintLocalToken(settings: AuthSettings, secret: string, role: RoleName, subject: string, ttlSeconds: number): Promise<string> {
  return mintToken(secret, { role, subject, issuer: settings.issuer, audience: settings.audience, ttlSeconds });
}
