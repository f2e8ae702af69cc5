import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { Code } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/contracts/health";
import { createGrpcJsClient } from "@holdfast/runtime";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { rpcFailureOf } from "../support/assertions.js";

const fixture = (name: string) => fileURLToPath(new URL(`../../fixtures/tls/${name}`, import.meta.url));

describe("reservation-service: TLS on the gRPC port", () => {
  let db: TestDatabase;
  let svc: ServiceProcess;

  before(async () => {
    db = await createTestDatabase("tls");
    svc = await startService("reservation-service", db.url, {
      GRPC_TLS_CERT_FILE: fixture("cert.pem"),
      GRPC_TLS_KEY_FILE: fixture("key.pem"),
    });
  });
  after(async () => {
    await svc?.stop();
    await db?.drop();
  });

  it("serves gRPC over TLS to a client that trusts the certificate", async () => {
    const port = svc.grpcAddress.split(":")[1];
    const health = createGrpcJsClient(Health, `localhost:${port}`, grpc.credentials.createSsl(readFileSync(fixture("cert.pem"))));
    try {
      expect((await health.check({ service: "" })).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
    }
  });

  it("does not speak plaintext on a TLS port", async () => {
    const health = createGrpcJsClient(Health, svc.grpcAddress);
    try {
      expect((await rpcFailureOf(health.check({ service: "" }, { timeoutMs: 3000 }))).code).to.be.oneOf([Code.Unavailable, Code.DeadlineExceeded]);
    } finally {
      health.close();
    }
  });
});
