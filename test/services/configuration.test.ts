import { readFileSync } from "node:fs";
import { expect } from "chai";
import { ConfigError, EXIT_CONFIG, SERVICE_NODE_OPTIONS } from "@holdfast/runtime";
import { loadReservationServiceConfig } from "@holdfast/reservation-service";
import { loadExpiryWorkerConfig } from "@holdfast/expiry-worker";
import { runServiceToExit } from "../support/processes.js";

const DATABASE_URL = "postgres://holdfast:secret@127.0.0.1:5432/holdfast";

function problemsOf(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("configuration", () => {
  it("has defaults for everything but the database", () => {
    const config = loadReservationServiceConfig({ DATABASE_URL });
    expect(config.grpc).to.deep.include({ port: 50051, reflection: true, tls: undefined });
    expect(config.http).to.deep.include({ port: 8080, allowedOrigins: [] });
    expect(config.database).to.deep.equal({ url: DATABASE_URL, poolMax: 10, connectTimeoutMs: 30_000, statementTimeoutMs: 30_000, lockTimeoutMs: 2_000 });
    expect(config.reservations).to.deep.include({ defaultLockingStrategy: "PESSIMISTIC", holdTtlMinMs: 1_000, holdTtlMaxMs: 3_600_000, defaultHoldTtlMs: 900_000 });
    expect(loadExpiryWorkerConfig({ DATABASE_URL }).grpc.port).to.equal(50052);
  });

  it("names every bad variable with the rule it breaks and the value given", () => {
    const problems = problemsOf(() =>
      loadReservationServiceConfig({
        DATABASE_URL: "mysql://nope",
        GRPC_PORT: "abc",
        HTTP_PORT: "70000",
        LOG_LEVEL: "loud",
        GRPC_REFLECTION: "maybe",
        CORS_ALLOWED_ORIGINS: "https://ok.example.com,not an origin",
      }),
    );
    const text = problems.join("\n");
    expect(problems).to.have.length(6);
    expect(text).to.match(/DATABASE_URL: must be a postgres:\/\/ or postgresql:\/\/ URL \(got "mysql:\/\/nope"\)/);
    expect(text).to.match(/GRPC_PORT: .*\(got "abc"\)/);
    expect(text).to.match(/HTTP_PORT: must be between 0 and 65535.*\(got "70000"\)/);
    expect(text).to.match(/LOG_LEVEL: must be one of/);
    expect(text).to.match(/GRPC_REFLECTION: must be true or false/);
    expect(text).to.match(/CORS_ALLOWED_ORIGINS: "not an origin" is not an origin/);
  });

  it("refuses hold TTL settings that contradict each other", () => {
    const ttl = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, HOLD_TTL_MIN_MS: "5000", HOLD_TTL_MAX_MS: "4000" }));
    expect(ttl.join("\n")).to.match(/HOLD_TTL_MIN_MS: must not exceed HOLD_TTL_MAX_MS/);
    const strategy = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, DEFAULT_LOCKING_STRATEGY: "magic" }));
    expect(strategy.join("\n")).to.match(/DEFAULT_LOCKING_STRATEGY: must be PESSIMISTIC or OPTIMISTIC/);
  });

  it("admission limits: twice the pool in flight (plus the hot-SKU batches in flight in the reservation-service) and twice that waiting unless set, bad values named", () => {
    expect(loadReservationServiceConfig({ DATABASE_URL }).admission).to.deep.equal({ maxInFlight: 532, maxWaiting: 1064, maxWaitMs: 500 });
    expect(loadReservationServiceConfig({ DATABASE_URL, DATABASE_POOL_MAX: "4", HOT_SKU_MAX_BATCH: "16" }).admission).to.deep.equal({ maxInFlight: 40, maxWaiting: 80, maxWaitMs: 500 });
    expect(loadReservationServiceConfig({ DATABASE_URL, DATABASE_POOL_MAX: "4", HOT_SKU_MAX_BATCH: "16", HOT_SKU_BATCHES_IN_FLIGHT: "1" }).admission).to.deep.equal({ maxInFlight: 24, maxWaiting: 48, maxWaitMs: 500 });
    expect(loadExpiryWorkerConfig({ DATABASE_URL }).admission).to.deep.equal({ maxInFlight: 20, maxWaiting: 40, maxWaitMs: 500 });
    expect(loadExpiryWorkerConfig({ DATABASE_URL, DATABASE_POOL_MAX: "3", MAX_CALLS_IN_FLIGHT: "5" }).admission).to.deep.equal({ maxInFlight: 5, maxWaiting: 10, maxWaitMs: 500 });
    expect(loadReservationServiceConfig({ DATABASE_URL, MAX_CALLS_IN_FLIGHT: "7", MAX_CALLS_WAITING: "0", MAX_CALL_WAIT_MS: "50" }).admission).to.deep.equal({
      maxInFlight: 7,
      maxWaiting: 0,
      maxWaitMs: 50,
    });
    const problems = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, MAX_CALLS_IN_FLIGHT: "0", MAX_CALLS_WAITING: "-1", MAX_CALL_WAIT_MS: "" }));
    const text = problems.join("\n");
    expect(problems).to.have.length(3);
    expect(text).to.match(/MAX_CALLS_IN_FLIGHT: must be at least 1 \(got "0"\)/);
    expect(text).to.match(/MAX_CALLS_WAITING: must be a whole number \(digits only\) \(got "-1"\)/);
    expect(text).to.match(/MAX_CALL_WAIT_MS: must be a whole number \(digits only\) \(got ""\)/);
  });

  it("the container and the services' executables start them with the node options every other launcher passes", () => {
    const root = new URL("../../../", import.meta.url);
    const dockerfile = readFileSync(new URL("Dockerfile", root), "utf8");
    const cmd = dockerfile.split("\n").find((line) => line.startsWith("CMD "));
    expect(cmd).to.include(`exec node ${SERVICE_NODE_OPTIONS.join(" ")} services/\${HOLDFAST_SERVICE}/dist/main.js`);
    // The packages' `bin` (npx holdfast-reservation-service): the shebang of main.js.
    for (const service of ["reservation-service", "expiry-worker"]) {
      const [shebang] = readFileSync(new URL(`services/${service}/dist/main.js`, root), "utf8").split("\n");
      expect(shebang, service).to.equal(`#!/usr/bin/env -S node ${SERVICE_NODE_OPTIONS.join(" ")}`);
    }
  });

  it("requires both TLS files, and files that exist", () => {
    const halfTls = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, GRPC_TLS_CERT_FILE: "/etc/hostname" }));
    expect(halfTls.join("\n")).to.match(/GRPC_TLS_KEY_FILE: must be set together/);
    const missing = problemsOf(() =>
      loadReservationServiceConfig({ DATABASE_URL, GRPC_TLS_CERT_FILE: "/no/such/cert.pem", GRPC_TLS_KEY_FILE: "/no/such/key.pem" }),
    );
    expect(missing.join("\n")).to.match(/GRPC_TLS_CERT_FILE: file does not exist/).and.match(/GRPC_TLS_KEY_FILE: file does not exist/);
  });

  it("bearer tokens: one key source at most, a long enough secret (never echoed), key files that exist", () => {
    const both = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, AUTH_JWT_SECRET: "x".repeat(40), AUTH_JWKS_FILE: "/etc/hostname" }));
    expect(both.join("\n")).to.match(/AUTH_JWKS_FILE: set only one of AUTH_JWT_SECRET, AUTH_JWKS_FILE/);
    const short = problemsOf(() => loadExpiryWorkerConfig({ DATABASE_URL, AUTH_JWT_SECRET: "hunter2-hunter2" }));
    expect(short.join("\n")).to.match(/AUTH_JWT_SECRET: must be at least 32 bytes/).and.not.include("hunter2");
    const missing = problemsOf(() => loadReservationServiceConfig({ DATABASE_URL, AUTH_JWT_PUBLIC_KEY_FILE: "/no/such/key.pem" }));
    expect(missing.join("\n")).to.match(/AUTH_JWT_PUBLIC_KEY_FILE: file does not exist/);
    // Outside production, no key means the development secret file.
    expect(loadReservationServiceConfig({ DATABASE_URL }).auth).to.deep.equal({
      key: { kind: "development-secret-file", file: ".holdfast/dev-jwt-secret" },
      issuer: "holdfast",
      audience: "holdfast",
      clockToleranceS: 30,
    });
  });

  for (const service of ["reservation-service", "expiry-worker"] as const) {
    it(`${service} refuses to start in production without a token verification key, and says which variables to set`, async () => {
      const result = await runServiceToExit(service, { NODE_ENV: "production", DATABASE_URL, GRPC_PORT: "0", HTTP_PORT: "0", WORKER_GRPC_PORT: "0", WORKER_HTTP_PORT: "0" });
      expect(result.code).to.equal(EXIT_CONFIG);
      expect(result.stderr).to.include("AUTH_JWT_SECRET: a token verification key is required when NODE_ENV=production");
      expect(result.stderr).to.include("AUTH_JWT_PUBLIC_KEY_FILE").and.include("AUTH_JWKS_FILE");
    });

    it(`${service} refuses to start on bad configuration, saying why, before touching anything`, async () => {
      const result = await runServiceToExit(service, { GRPC_PORT: "abc", WORKER_GRPC_PORT: "abc", LOG_LEVEL: "loud" });
      expect(result.code).to.equal(EXIT_CONFIG);
      expect(result.stderr).to.include(`${service}: invalid configuration`);
      expect(result.stderr).to.include("DATABASE_URL: is required");
      expect(result.stderr).to.include("LOG_LEVEL: must be one of");
      expect(result.stderr).to.match(service === "reservation-service" ? /GRPC_PORT/ : /WORKER_GRPC_PORT/);
    });
  }

  it("exits with a clear log line when the database cannot be reached", async () => {
    const result = await runServiceToExit(
      "reservation-service",
      { DATABASE_URL: "postgres://nobody:x@127.0.0.1:1/none", DATABASE_CONNECT_TIMEOUT_MS: "1500", GRPC_PORT: "0", HTTP_PORT: "0" },
      30_000,
    );
    expect(result.code).to.equal(1);
    expect(result.stdout).to.match(/database/i).and.match(/could not start/);
  });
});
