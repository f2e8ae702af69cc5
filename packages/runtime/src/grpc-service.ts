import * as grpc from "@grpc/grpc-js";
import { once } from "node:events";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { grpcStatusFromConnectError } from "./grpc-status.js";
import { toConnectError, undecodableRequest } from "./errors.js";

/**
 * A request the server could not decode. grpc-js answers INTERNAL when a
 * request deserializer throws; decoding is the caller's mistake, so the
 * deserializer returns this marker instead and the handler answers
 * INVALID_ARGUMENT, as connect-node does for the same bytes.
 */
class UndecodableRequest {
  constructor(readonly reason: string) {}
}

function decodeRequest(method: DescMethod, bytes: Buffer): object {
  try {
    return fromBinary(method.input, bytes);
  } catch (err) {
    return new UndecodableRequest(err instanceof Error ? err.message : String(err));
  }
}


/**
 * A grpc-js service definition built from a protobuf-es service descriptor:
 * the wire paths are the standard `/package.Service/Method`, and messages are
 * (de)serialized by protobuf-es. Used by the server adapter and by clients.
 */
export function grpcServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (value: object) => Buffer.from(toBinary(method.input, create(method.input, value as MessageInitShape<DescMessage>))),
      requestDeserialize: (bytes: Buffer) => decodeRequest(method, bytes),
      responseSerialize: (value: object) => Buffer.from(toBinary(method.output, create(method.output, value as MessageInitShape<DescMessage>))),
      responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
    };
  }
  return definition;
}

/** What every grpc-js server call has (grpc-js does not export this type). */
type ServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function headersFromMetadata(metadata: grpc.Metadata): Headers {
  const headers = new Headers();
  for (const [key, value] of Object.entries(metadata.toHttp2Headers())) {
    if (key.endsWith("-bin")) continue;
    for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined) headers.append(key, String(v));
  }
  return headers;
}

function timeoutOf(call: ServerCall): number | undefined {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

/** The reason a call's signal gives once the call is over (one error for all: creating one per call costs). */
const CALL_ENDED = new ConnectError("the call has ended", Code.Canceled);

/**
 * The HandlerContext of a call (as connect-node's createHandlerContext makes it, with
 * one AbortController instead of three linked ones and without copying the headers),
 * and `end`, to call once the call is over: it stops the deadline timer and aborts the
 * signal. The signal aborts with DEADLINE_EXCEEDED when the deadline passes, and with
 * CANCELLED when the client cancels. grpc-js emits "cancelled" at the end of every
 * call, answered or not, so `end` removes that listener first: only a cancellation
 * while the call is still running makes a ConnectError.
 */
function contextFor(service: DescService, method: DescMethod, call: ServerCall): { context: HandlerContext; end: () => void } {
  const controller = new AbortController();
  const timeoutMs = timeoutOf(call);
  const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  let timer: NodeJS.Timeout | undefined;
  if (timeoutMs !== undefined) {
    const expire = () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    if (timeoutMs <= 0) expire();
    else timer = setTimeout(expire, timeoutMs);
  }
  const onCancelled = () => controller.abort(new ConnectError("the client cancelled the call", Code.Canceled));
  call.once("cancelled", onCancelled);
  const context: HandlerContext = {
    service,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `/${service.typeName}/${method.name}`,
    signal: controller.signal,
    timeoutMs: () => (deadline === undefined ? undefined : deadline - Date.now()),
    requestHeader: headersFromMetadata(call.metadata),
    responseHeader: new Headers(),
    responseTrailer: new Headers(),
    values: createContextValues(),
  };
  const end = () => {
    clearTimeout(timer);
    call.removeListener("cancelled", onCancelled);
    controller.abort(CALL_ENDED);
  };
  return { context, end };
}

function responseMetadata(context: HandlerContext, into = new grpc.Metadata()): grpc.Metadata {
  context.responseHeader.forEach((value, key) => into.set(key, value));
  return into;
}

/** The status for a failed call, with the response headers (x-request-id) in its trailers. */
function failure(err: unknown, context: HandlerContext): Partial<grpc.StatusObject> {
  const status = grpcStatusFromConnectError(toConnectError(err));
  return { ...status, metadata: responseMetadata(context, status.metadata) };
}

/**
 * Serves a Connect `ServiceImpl` on a grpc-js server. This is the only place
 * that knows grpc-js call objects: the implementation receives the same typed
 * request and HandlerContext (deadline, cancellation signal, headers) as under
 * connect-node, so one implementation serves both ports.
 */
export function addServiceImpl<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
): void {
  const handlers: grpc.UntypedServiceImplementation = {};
  const methods = impl as unknown as Record<string, (req: unknown, ctx: HandlerContext) => unknown>;
  for (const method of service.methods) {
    const fn = methods[method.localName];
    if (method.methodKind === "unary") {
      handlers[method.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const { context, end } = contextFor(service, method, call);
        Promise.resolve()
          .then(() => {
            if (call.request instanceof UndecodableRequest) throw undecodableRequest(call.request.reason);
            return fn.call(impl, call.request, context);
          })
          .then(
            (response) => {
              call.sendMetadata(responseMetadata(context));
              callback(null, response);
            },
            (err: unknown) => callback(failure(err, context)),
          )
          .finally(end);
      };
    } else if (method.methodKind === "server_streaming") {
      handlers[method.localName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const { context, end } = contextFor(service, method, call);
        (async () => {
          if (call.request instanceof UndecodableRequest) throw undecodableRequest(call.request.reason);
          let headersSent = false;
          for await (const message of fn.call(impl, call.request, context) as AsyncIterable<unknown>) {
            if (call.cancelled) break;
            if (!headersSent) {
              call.sendMetadata(responseMetadata(context));
              headersSent = true;
            }
            if (!call.write(message)) await once(call, "drain", { signal: context.signal });
          }
          if (!call.cancelled) call.end();
        })()
          .catch((err: unknown) => {
            if (!call.cancelled) call.emit("error", failure(err, context));
          })
          .finally(end);
      };
    } else {
      throw new Error(`${service.typeName}.${method.name}: ${method.methodKind} methods are not supported by the gRPC adapter`);
    }
  }
  server.addService(grpcServiceDefinition(service), handlers);
}
