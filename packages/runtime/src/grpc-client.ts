import * as grpc from "@grpc/grpc-js";
import type {
  DescMethodServerStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { grpcServiceDefinition } from "./grpc-service.js";
import { connectErrorFromGrpc } from "./grpc-status.js";

export interface GrpcCallOptions {
  /** Request metadata, e.g. `{ authorization: "Bearer ..." }`. */
  headers?: Record<string, string>;
  /** Relative deadline in milliseconds. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A promise-based grpc-js client typed from a protobuf-es service descriptor. */
export type GrpcJsClient<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: GrpcCallOptions) => Promise<MessageShape<O>>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? (request: MessageInitShape<I>, options?: GrpcCallOptions) => AsyncIterable<MessageShape<O>>
      : never;
} & { readonly raw: grpc.Client; close(): void };

/** Cancels `call` when `signal` aborts (or already has); returns the clean-up. */
function cancelOnAbort(call: { cancel(): void }, signal: AbortSignal | undefined): () => void {
  if (signal === undefined) return () => undefined;
  if (signal.aborted) {
    call.cancel();
    return () => undefined;
  }
  const cancel = () => call.cancel();
  signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

function callArgs(options: GrpcCallOptions = {}): { metadata: grpc.Metadata; callOptions: grpc.CallOptions } {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(options.headers ?? {})) metadata.set(key, value);
  const callOptions: grpc.CallOptions = {};
  if (options.timeoutMs !== undefined) callOptions.deadline = Date.now() + options.timeoutMs;
  return { metadata, callOptions };
}

/**
 * A real grpc-js client (HTTP/2, the same stack order/checkout services use)
 * for any Holdfast service. Errors are rethrown as ConnectErrors with the
 * `grpc-status-details-bin` details decoded, so callers read reasons the same
 * way on both transports.
 */
export function createGrpcJsClient<S extends DescService>(
  service: S,
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  /** Channel options, and client options such as `interceptors`. */
  channelOptions: grpc.ClientOptions = {},
): GrpcJsClient<S> {
  const Constructor = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.typeName);
  const raw = new Constructor(address, credentials, channelOptions) as unknown as grpc.Client &
    Record<string, (...args: unknown[]) => unknown>;
  const client: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const method of service.methods) {
    const rpc = raw[method.localName].bind(raw);
    if (method.methodKind === "unary") {
      client[method.localName] = (request: unknown, options?: GrpcCallOptions) =>
        new Promise((resolve, reject) => {
          const { metadata, callOptions } = callArgs(options);
          let release = () => undefined as void;
          const call = rpc(request, metadata, callOptions, (err: grpc.ServiceError | null, response: unknown) => {
            release();
            if (err) reject(connectErrorFromGrpc(err));
            else resolve(response);
          }) as grpc.ClientUnaryCall;
          release = cancelOnAbort(call, options?.signal);
        });
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (request: unknown, options?: GrpcCallOptions) => ({
        async *[Symbol.asyncIterator]() {
          const { metadata, callOptions } = callArgs(options);
          const call = rpc(request, metadata, callOptions) as grpc.ClientReadableStream<unknown>;
          const release = cancelOnAbort(call, options?.signal);
          try {
            for await (const message of call) yield message;
          } catch (err) {
            throw typeof err === "object" && err !== null && "code" in err ? connectErrorFromGrpc(err as grpc.ServiceError) : err;
          } finally {
            release();
            call.cancel();
          }
        },
      });
    }
  }
  return client as GrpcJsClient<S>;
}
