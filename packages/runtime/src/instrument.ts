import { randomUUID } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ErrorReason } from "@holdfast/contracts";
import { ErrorInfoSchema, RequestInfoSchema } from "@holdfast/contracts/rpc";
import { isServerFault, rpcError, toConnectError } from "./errors.js";
import type { Metrics } from "./metrics.js";
import type { Admission } from "./admission.js";

/** Canonical gRPC status names, indexed by code, as they appear in logs and metrics. */
const STATUS_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
] as const;

export function statusName(code: number): string {
  return STATUS_NAMES[code] ?? String(code);
}

/** Refusals that are normal answers, not incidents: logged at debug like successes. */
const BUSINESS_OUTCOMES = new Set<Code>([Code.FailedPrecondition, Code.NotFound, Code.AlreadyExists]);

/** Header that correlates a call across client, both transports and the logs. */
export const REQUEST_ID_HEADER = "x-request-id";

/**
 * Yields from `source` until `stopping` aborts, then ends it and throws
 * UNAVAILABLE. One abort listener per stream, removed when the stream ends,
 * and a fresh wait per message: nothing accumulates on a long-lived stream.
 */
async function* untilStopping<T>(source: AsyncIterable<T>, stopping: AbortSignal): AsyncGenerator<T> {
  const shuttingDown = () => rpcError(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "the server is shutting down; reconnect");
  if (stopping.aborted) throw shuttingDown();
  const iterator = source[Symbol.asyncIterator]();
  let interrupt: (() => void) | undefined;
  const onStop = () => interrupt?.();
  stopping.addEventListener("abort", onStop, { once: true });
  try {
    for (;;) {
      const next = await new Promise<IteratorResult<T> | "stopped">((resolve, reject) => {
        interrupt = () => resolve("stopped");
        iterator.next().then(resolve, reject);
      });
      interrupt = undefined;
      if (next === "stopped") throw shuttingDown();
      if (next.done) return;
      yield next.value;
    }
  } finally {
    stopping.removeEventListener("abort", onStop);
    // Not awaited: a generator parked on its next event would hold the stop up.
    // It also sees its context signal abort once the call completes.
    void iterator.return?.()?.catch(() => undefined);
  }
}

/**
 * The error as sent. A call whose deadline passed or whose client went away
 * ends with the context's reason (DEADLINE_EXCEEDED / CANCELLED), not with
 * whatever the abort made the implementation throw. A server-side failure
 * (INTERNAL, UNAVAILABLE, ...) also carries google.rpc.RequestInfo with the
 * request id, to quote in a report and find in the logs (errors.proto).
 */
function asSent(err: unknown, requestId: string, context: HandlerContext): ConnectError {
  const error = (!(err instanceof ConnectError) && abortOf(context)) || toConnectError(err);
  if (!isServerFault(error.code) && error.code !== Code.Unavailable) return error;
  // A copy: the thrown error may be shared (a cached or replayed outcome).
  const sent = new ConnectError(error.rawMessage, error.code, error.metadata, undefined, error.cause);
  sent.details = [...error.details, { desc: RequestInfoSchema, value: { requestId } }];
  return sent;
}

/**
 * Why the call was aborted, if it was: DEADLINE_EXCEEDED when its deadline
 * has passed (the client usually cancels at its deadline a moment before the
 * server's own timer fires, so "cancelled" with no time left is a deadline),
 * CANCELLED otherwise.
 */
function abortOf(context: HandlerContext): ConnectError | undefined {
  if (!context.signal.aborted) return undefined;
  const remaining = context.timeoutMs();
  if (remaining !== undefined && remaining <= 50) return new ConnectError("the deadline passed before the call finished", Code.DeadlineExceeded);
  return ConnectError.from(context.signal.reason, Code.Canceled);
}

type AnyMethod = (request: unknown, context: HandlerContext) => unknown;

/**
 * Wraps every method of an implementation with what each RPC needs whichever
 * transport called it: a request id (taken from `x-request-id` or made up, and
 * echoed back), one log line with method, status, reason and duration, the
 * duration histogram, and the mapping of thrown errors to ConnectErrors (so a
 * database hiccup is UNAVAILABLE, never a leaked stack trace).
 *
 * Successful calls log at debug (a flash sale makes thousands a second), and so
 * do the business outcomes a flash sale produces by the thousand (out of stock,
 * unknown id, already exists: FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS;
 * the metrics count them all). Other refusals (bad input, conflicts, lock
 * timeouts, overload...) log at info, server faults at error; whenever an error has a cause
 * (a database error behind UNAVAILABLE or ABORTED, say) the cause is logged.
 *
 * With `admission`, a unary call first takes a slot of the process's bound on
 * calls in flight (admission.ts), before anything else is done for it (not even
 * token verification): refused at once with UNAVAILABLE / OVERLOADED when none
 * can be had, and given up when its caller goes while it waits. Those refusals
 * log at debug (the admission control summarises them). Server streams are not
 * admitted here: they live for minutes, mostly idle, and have their own bound
 * per caller (MAX_STREAMS_PER_*, authorizeService).
 *
 * When `stopping` aborts, server streams end with UNAVAILABLE (reason
 * SHUTTING_DOWN) so that clients reconnect to another replica, while unary
 * calls in flight are left to finish: that is the drain.
 */
export function instrumentService<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  deps: { logger: Logger; metrics: Metrics; stopping: AbortSignal; admission?: Admission },
): ServiceImpl<S> {
  const methods = impl as unknown as Record<string, AnyMethod>;
  const wrapped: Record<string, AnyMethod> = {};
  for (const method of service.methods) {
    const fn = methods[method.localName].bind(impl);
    const name = `${service.name}/${method.name}`;
    const begin = (context: HandlerContext) => {
      const requestId = context.requestHeader.get(REQUEST_ID_HEADER) ?? randomUUID();
      context.responseHeader.set(REQUEST_ID_HEADER, requestId);
      return { requestId, startedAt: performance.now() };
    };
    const finish = (context: HandlerContext, requestId: string, startedAt: number, error?: ConnectError, quiet = false) => {
      const code = error?.code ?? 0;
      const durationMs = performance.now() - startedAt;
      deps.metrics.rpcDuration.observe({ method: name, protocol: context.protocolName, code: statusName(code) }, durationMs / 1000);
      const fields = {
        requestId,
        method: name,
        protocol: context.protocolName,
        status: statusName(code),
        durationMs: Math.round(durationMs * 100) / 100,
      };
      if (error === undefined) {
        deps.logger.debug(fields, "rpc ok");
        return;
      }
      const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
      const cause = error.cause instanceof Error ? { err: error.cause } : {};
      if (isServerFault(error.code)) deps.logger.error({ ...fields, reason, ...cause }, "rpc failed");
      else if (quiet || BUSINESS_OUTCOMES.has(error.code)) deps.logger.debug({ ...fields, reason, message: error.rawMessage }, "rpc refused");
      else deps.logger.info({ ...fields, reason, message: error.rawMessage, ...cause }, "rpc refused");
    };

    if (method.methodKind === "unary") {
      wrapped[method.localName] = async (request, context) => {
        const { requestId, startedAt } = begin(context);
        let release: (() => void) | undefined;
        try {
          if (deps.admission !== undefined) release = await deps.admission.enter(name, context.signal);
          const response = await fn(request, context);
          // Finished, but for nobody if the caller gave up meanwhile.
          finish(context, requestId, startedAt, abortOf(context));
          return response;
        } catch (err) {
          const error = asSent(err, requestId, context);
          // Never admitted (shed, or its caller went while it waited): summarised by the admission control.
          finish(context, requestId, startedAt, error, deps.admission !== undefined && release === undefined);
          throw error;
        } finally {
          release?.();
        }
      };
    } else {
      wrapped[method.localName] = async function* (request, context) {
        const { requestId, startedAt } = begin(context);
        // Still "open" in `finally` means the consumer stopped iterating: the client went away.
        let outcome: ConnectError | "ok" | "open" = "open";
        try {
          yield* untilStopping(fn(request, context) as AsyncIterable<unknown>, deps.stopping);
          outcome = abortOf(context) ?? "ok";
        } catch (err) {
          outcome = asSent(err, requestId, context);
          throw outcome;
        } finally {
          const error =
            outcome === "ok" ? undefined : outcome === "open" ? new ConnectError("the client cancelled the stream", Code.Canceled) : outcome;
          finish(context, requestId, startedAt, error);
        }
      };
    }
  }
  return wrapped as unknown as ServiceImpl<S>;
}
