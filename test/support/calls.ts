// What concurrent tests need to fire many calls and look at what came back:
// each call settled into success or a described failure, and a seeded PRNG so a
// failing random run can be replayed.
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, PreconditionFailureSchema } from "@holdfast/contracts/rpc";

/** What a failed call told us: status, ErrorInfo and PreconditionFailure. */
export interface Failure {
  code: Code;
  /** "<CodeName>/<REASON>", e.g. "FailedPrecondition/INSUFFICIENT_STOCK". */
  key: string;
  reason: string | undefined;
  metadata: Record<string, string>;
  violations: { type: string; subject: string; description: string }[];
  message: string;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; failure: Failure };

export function failureOf(err: unknown): Failure {
  if (!(err instanceof ConnectError)) throw err;
  const info = err.findDetails(ErrorInfoSchema)[0];
  const violations = err.findDetails(PreconditionFailureSchema).flatMap((p) => p.violations.map(({ type, subject, description }) => ({ type, subject, description })));
  return {
    code: err.code,
    key: `${Code[err.code]}/${info?.reason ?? "-"}`,
    reason: info?.reason,
    metadata: { ...(info?.metadata ?? {}) },
    violations,
    message: err.rawMessage,
  };
}

/** Settles a call into success or a described failure (anything but a ConnectError rethrows). */
export async function outcome<T>(call: Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call };
  } catch (err) {
    return { ok: false, failure: failureOf(err) };
  }
}

export async function failure(call: Promise<unknown>): Promise<Failure> {
  const result = await outcome(call);
  if (result.ok) throw new Error("expected the call to fail, but it succeeded");
  return result.failure;
}


/** 0, 1, …, n − 1. */
export const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A small seeded PRNG, so a failing random run can be replayed with its seed. */
export { prng } from "@holdfast/core";
