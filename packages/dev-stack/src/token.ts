#!/usr/bin/env node
// `npm run token -- --role <admin|service|customer> [--sub <id>] [--ttl 1h]`:
// prints a bearer token the local services accept (signed with AUTH_JWT_SECRET,
// or the development secret `npm start` uses). Only the token goes to stdout:
//   TOKEN=$(npm run -s token -- --role customer --sub alice)
import { parseArgs } from "node:util";
import { ConfigError } from "@holdfast/runtime";
import { ROLE_NAMES, type RoleName } from "@holdfast/core";
import { CUSTOMER_ID_MAX_LENGTH, isValidCustomerId } from "@holdfast/schema";
import { localAuthSettings, localSigningSecret, mintLocalToken } from "./tokens.js";

const USAGE = "usage: npm run token -- --role <admin|service|customer> [--sub <id>] [--ttl <seconds, or 30m, 12h, 7d>]";
const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function seconds(value: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(value);
  if (match === null || Number(match[1]) === 0) fail(`--ttl: "${value}" is not a positive duration`);
  return Number(match[1]) * UNITS[match[2] || "s"];
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({ options: { role: { type: "string" }, sub: { type: "string" }, ttl: { type: "string", default: "12h" } } }));
  } catch (err) {
    fail((err as Error).message);
  }
  const role = values.role as RoleName | undefined;
  if (role === undefined || !ROLE_NAMES.includes(role)) fail(`--role must be one of ${ROLE_NAMES.join(", ")}`);
  const subject = values.sub ?? `dev-${role}`;
  if (!isValidCustomerId(subject)) fail(`--sub: "${subject}" is not a valid subject (1-${CUSTOMER_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : @ -)`);
  const settings = localAuthSettings();
  const secret = localSigningSecret(settings);
  if (secret === undefined) fail("the services verify tokens with a public key (AUTH_JWT_PUBLIC_KEY_FILE / AUTH_JWKS_FILE): tokens come from your identity provider");
  process.stdout.write(`${await mintLocalToken(settings, secret, role, subject, seconds(values.ttl!))}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(err instanceof ConfigError ? `${err.message}\n` : `${String(err)}\n`);
  process.exit(1);
});
