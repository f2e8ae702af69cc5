import * as grpc from "@grpc/grpc-js";

/**
 * Statuses grpc-js itself sends as INTERNAL although the caller sent something
 * wrong: a `grpc-timeout` header it cannot read, and a compressed message
 * (`grpc-encoding: gzip` / `deflate`) that does not inflate. Neither reaches a
 * handler; INTERNAL would tell the caller "a bug on the server" and page whoever
 * watches the INTERNAL rate.
 */
const CLIENT_MISTAKES = [/^Invalid grpc-timeout value/, /^Failed to decompress message/];

interface StatusSender {
  sendStatus(status: Partial<grpc.StatusObject> & { code: grpc.status; details: string }): void;
}

/**
 * A grpc-js server interceptor answering those requests INVALID_ARGUMENT (same
 * message) instead. grpc-js sends them from its base call object, below every
 * interceptor, so this wraps that object's `sendStatus` (grpc-js's own code calls
 * it as a method, so the wrapper is seen); it must therefore come first in the
 * server's `interceptors`. Everything else passes through untouched.
 */
export function clientMistakesAsInvalidArgument(): grpc.ServerInterceptor {
  return (_method, call) => {
    const base = call as unknown as StatusSender;
    const sendStatus = base.sendStatus.bind(base);
    base.sendStatus = (status) => {
      const mistaken = status.code === grpc.status.INTERNAL && CLIENT_MISTAKES.some((re) => re.test(status.details ?? ""));
      sendStatus(mistaken ? { ...status, code: grpc.status.INVALID_ARGUMENT } : status);
    };
    return new grpc.ServerInterceptingCall(call);
  };
}
