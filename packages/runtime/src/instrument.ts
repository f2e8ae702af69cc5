import { randomUUID } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ErrorReason } from "@holdfast/contracts";
import { ErrorInfoSchema, RequestInfoSchema } from "@holdfast/contracts/rpc";
import { isServerFault, rpcError, toConnectError } from "./errors.js";
import type { Metrics } from "./metrics.js";

/** Canonical gRPC status names, indexed by code, as they appear in logs and metrics. */
const STATUS_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
] as const;

export function statusName(code: number): string {
  return STATUS_NAMES[code] ?? String(code);
}

/** Header that correlates a call across client, both transports and the logs. */
export const REQUEST_ID_HEADER = "x-request-id";

/** Yields from `source` until `stopping` aborts, then ends it and throws UNAVAILABLE. */
async function* untilStopping<T>(source: AsyncIterable<T>, stopping: AbortSignal): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  const stopped = new Promise<"stopped">((resolve) => {
    if (stopping.aborted) resolve("stopped");
    else stopping.addEventListener("abort", () => resolve("stopped"), { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), stopped]);
      if (next === "stopped") throw rpcError(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "the server is shutting down; reconnect");
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // Not awaited: a generator parked on its next event would hold the stop up.
    // It also sees its context signal abort once the call completes.
    void iterator.return?.()?.catch(() => undefined);
  }
}

/**
 * The error as sent: a server-side failure (INTERNAL, UNAVAILABLE, ...) also
 * carries google.rpc.RequestInfo with the request id, to quote in a report
 * and find in the logs (errors.proto).
 */
function asSent(err: unknown, requestId: string, aborted: boolean): ConnectError {
  const error = aborted && !(err instanceof ConnectError) ? new ConnectError("cancelled", Code.Canceled) : toConnectError(err);
  if (isServerFault(error.code) || error.code === Code.Unavailable) {
    error.details.push({ desc: RequestInfoSchema, value: { requestId } });
  }
  return error;
}

type AnyMethod = (request: unknown, context: HandlerContext) => unknown;

/**
 * Wraps every method of an implementation with what each RPC needs whichever
 * transport called it: a request id (taken from `x-request-id` or made up, and
 * echoed back), one log line with method, status, reason and duration, the
 * duration histogram, and the mapping of thrown errors to ConnectErrors (so a
 * database hiccup is UNAVAILABLE, never a leaked stack trace).
 *
 * Successful calls log at debug (a flash sale makes thousands a second),
 * refusals at info, server faults at error with the cause.
 *
 * When `stopping` aborts, server streams end with UNAVAILABLE (reason
 * SHUTTING_DOWN) so that clients reconnect to another replica, while unary
 * calls in flight are left to finish: that is the drain.
 */
export function instrumentService<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  deps: { logger: Logger; metrics: Metrics; stopping: AbortSignal },
): ServiceImpl<S> {
  const methods = impl as unknown as Record<string, AnyMethod>;
  const wrapped: Record<string, AnyMethod> = {};
  for (const method of service.methods) {
    const fn = methods[method.localName].bind(impl);
    const name = `${service.name}/${method.name}`;
    const finish = (context: HandlerContext, requestId: string, startedAt: number, error?: ConnectError) => {
      const code = error?.code ?? 0;
      const durationMs = performance.now() - startedAt;
      deps.metrics.rpcDuration.observe(
        { method: name, protocol: context.protocolName, code: statusName(code) },
        durationMs / 1000,
      );
      const fields = {
        requestId,
        method: name,
        protocol: context.protocolName,
        status: statusName(code),
        durationMs: Math.round(durationMs * 100) / 100,
      };
      if (error === undefined) {
        deps.logger.debug(fields, "rpc ok");
      } else {
        const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
        if (isServerFault(error.code)) deps.logger.error({ ...fields, reason, err: error.cause ?? error }, "rpc failed");
        else deps.logger.info({ ...fields, reason, message: error.rawMessage }, "rpc refused");
      }
    };
    const begin = (context: HandlerContext) => {
      const requestId = context.requestHeader.get(REQUEST_ID_HEADER) ?? randomUUID();
      context.responseHeader.set(REQUEST_ID_HEADER, requestId);
      return { requestId, startedAt: performance.now() };
    };

    if (method.methodKind === "unary") {
      wrapped[method.localName] = async (request, context) => {
        const { requestId, startedAt } = begin(context);
        try {
          const response = await fn(request, context);
          finish(context, requestId, startedAt);
          return response;
        } catch (err) {
          const error = asSent(err, requestId, false);
          finish(context, requestId, startedAt, error);
          throw error;
        }
      };
    } else {
      wrapped[method.localName] = async function* (request, context) {
        const { requestId, startedAt } = begin(context);
        try {
          yield* untilStopping(fn(request, context) as AsyncIterable<unknown>, deps.stopping);
          finish(context, requestId, startedAt);
        } catch (err) {
          const error = asSent(err, requestId, context.signal.aborted);
          finish(context, requestId, startedAt, error);
          throw error;
        }
      };
    }
  }
  return wrapped as unknown as ServiceImpl<S>;
}
