import { AssertionError } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@holdfast/contracts/rpc";

/** Awaits a promise that must reject, and returns what it rejected with. */
export async function rejectionOf(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new AssertionError("expected the promise to reject, but it resolved");
}

/** The SQLSTATE a database call failed with (e.g. 23514 for a CHECK violation). */
export async function sqlStateOf(promise: PromiseLike<unknown>): Promise<string | undefined> {
  const err = await rejectionOf(promise);
  return (err as { code?: string }).code;
}

/** The status code and ErrorInfo reason of a failed RPC, the same on every transport. */
export async function rpcFailureOf(promise: PromiseLike<unknown>): Promise<{ code: Code; codeName: string; reason?: string; message: string }> {
  const err = await rejectionOf(promise);
  if (!(err instanceof ConnectError)) throw new AssertionError(`expected a ConnectError, got ${String(err)}`);
  return { code: err.code, codeName: Code[err.code], reason: err.findDetails(ErrorInfoSchema)[0]?.reason, message: err.rawMessage };
}
