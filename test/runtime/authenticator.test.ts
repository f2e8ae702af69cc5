// Token verification with each kind of key (issue 5: HS256 shared secret, PEM
// public key, JWKS file), including the classic attacks on JWT verifiers.
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import * as jose from "jose";
import { Authenticator, developmentSecret, mintToken } from "@holdfast/core";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";

const ISSUER = "https://idp.example";
const AUDIENCE = "holdfast";

async function reasonOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    const error = ConnectError.from(err);
    expect(error.code).to.equal(Code.Unauthenticated);
    return error.findDetails(ErrorInfoSchema)[0]!.reason;
  }
  throw new Error("expected the token to be refused");
}

function signed(key: jose.CryptoKey | Uint8Array, alg: string, claims: jose.JWTPayload, kid?: string): Promise<string> {
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg, kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(key);
}

describe("Authenticator: keys and attacks", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "holdfast-auth-"));

  it("a PEM public key verifies its private key's tokens, and an HS256 token signed with the public key text is refused (algorithm confusion)", async () => {
    const { publicKey, privateKey } = await jose.generateKeyPair("ES256", { extractable: true });
    const pem = await jose.exportSPKI(publicKey);
    const file = path.join(dir, "public.pem");
    writeFileSync(file, pem);
    const auth = Authenticator.create({ key: { kind: "public-key-file", file }, issuer: ISSUER, audience: AUDIENCE, clockToleranceS: 0 });
    expect(await auth.authenticate(`Bearer ${await signed(privateKey, "ES256", { role: "service", sub: "checkout" })}`)).to.deep.equal({
      role: "service",
      subject: "checkout",
      id: "service:checkout",
    });
    const confused = await signed(new TextEncoder().encode(pem), "HS256", { role: "admin", sub: "mallory" });
    expect(await reasonOf(auth.authenticate(`Bearer ${confused}`))).to.equal("TOKEN_INVALID");
    const other = await jose.generateKeyPair("ES256");
    expect(await reasonOf(auth.authenticate(`Bearer ${await signed(other.privateKey, "ES256", { role: "admin", sub: "mallory" })}`))).to.equal("TOKEN_INVALID");
  });

  it("a JWKS file verifies tokens by key id; an unknown key id is refused", async () => {
    const { publicKey, privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
    const jwk = { ...(await jose.exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    const file = path.join(dir, "jwks.json");
    writeFileSync(file, JSON.stringify({ keys: [jwk] }));
    const auth = Authenticator.create({ key: { kind: "jwks-file", file }, issuer: ISSUER, audience: AUDIENCE, clockToleranceS: 0 });
    expect((await auth.authenticate(`Bearer ${await signed(privateKey, "RS256", { role: "customer", sub: "alice" }, "k1")}`)).id).to.equal("customer:alice");
    expect(await reasonOf(auth.authenticate(`Bearer ${await signed(privateKey, "RS256", { role: "customer", sub: "alice" }, "k2")}`))).to.equal("TOKEN_INVALID");
  });

  it("an HS256 secret: exp, iss, aud and the role and subject claims are all required", async () => {
    const secret = "s".repeat(32);
    const key = new TextEncoder().encode(secret);
    const auth = Authenticator.create({ key: { kind: "secret", secret }, issuer: ISSUER, audience: AUDIENCE, clockToleranceS: 0 });
    const noExp = await new jose.SignJWT({ role: "admin" }).setProtectedHeader({ alg: "HS256" }).setSubject("ops").setIssuer(ISSUER).setAudience(AUDIENCE).sign(key);
    expect(await reasonOf(auth.authenticate(`Bearer ${noExp}`))).to.equal("TOKEN_INVALID");
    expect(await reasonOf(auth.authenticate(`Bearer ${await signed(key, "HS256", { sub: "ops" })}`))).to.equal("TOKEN_INVALID");
    expect(await reasonOf(auth.authenticate(`Bearer ${await signed(key, "HS256", { role: "admin" })}`))).to.equal("TOKEN_INVALID");
    expect(await reasonOf(auth.authenticate(`Bearer ${await signed(key, "HS384", { role: "admin", sub: "ops" })}`))).to.equal("TOKEN_INVALID");
    const minted = await mintToken(secret, { role: "admin", subject: "ops", issuer: ISSUER, audience: AUDIENCE });
    expect((await auth.authenticate(`bearer ${minted}`)).id).to.equal("admin:ops");
  });

  it("the development secret is created once, 32 random bytes, readable only by its owner, and then reused", () => {
    const file = path.join(dir, "nested", "dev-jwt-secret");
    const first = developmentSecret(file);
    expect(Buffer.from(first, "base64url")).to.have.length(32);
    expect(statSync(file).mode & 0o777).to.equal(0o600);
    expect(developmentSecret(file)).to.equal(first);
  });
});
