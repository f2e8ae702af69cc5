import * as grpc from "@grpc/grpc-js";
import { readFile } from "node:fs/promises";
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { addServiceImpl } from "./grpc-service.js";
import { addReflection, ReflectionIndex } from "./reflection.js";
import { Health } from "@holdfast/contracts/health";
import { healthService, HealthStatus, ServingStatus } from "./health.js";
import { DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS, requestReceiveDeadline } from "./limits.js";
import { clientMistakesAsInvalidArgument } from "./grpc-protocol-errors.js";

const HEALTH_SERVICE = "grpc.health.v1.Health";
const REFLECTION_SERVICES = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

export interface ServiceBinding {
  service: DescService;
  // The implementation type is checked where the binding is made (see `bind`).
  impl: ServiceImpl<DescService>;
}

/** Pairs a service with its implementation, checking the implementation's type. */
export function bind<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceBinding {
  return { service, impl: impl as unknown as ServiceImpl<DescService> };
}

export interface GrpcServerOptions {
  host: string;
  port: number;
  services: ServiceBinding[];
  /** Serve grpc.reflection v1 and v1alpha for grpcurl / buf curl. */
  reflection: boolean;
  /** PEM files; without them the port speaks HTTP/2 cleartext. */
  tls?: { certFile: string; keyFile: string };
  maxMessageBytes: number;
  /** Calls one connection may have open at once; HTTP/2 clients queue (or see REFUSED_STREAM for) more. Default 100. */
  maxConcurrentStreams?: number;
  /** A call whose request has not arrived whole this long after its headers is cut off (DEADLINE_EXCEEDED). Default 10 s. */
  requestReceiveTimeoutMs?: number;
  logger: Logger;
}

export interface RunningGrpcServer {
  /** The bound port (useful when 0 was asked for). */
  port: number;
  /** Marks every service NOT_SERVING, lets in-flight calls finish for up to `graceMs`, then cancels the rest. */
  stop(graceMs: number): Promise<void>;
}

/**
 * One gRPC port serving the given services, `grpc.health.v1` and (optionally)
 * server reflection, on grpc-js: the HTTP/2 stack any gRPC client expects.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    "grpc.max_send_message_length": options.maxMessageBytes,
    // Keep idle streams (WatchAvailability) alive through proxies and detect dead peers.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    // Bounded resources (docs/security.md): streams per connection, and time to receive a request.
    "grpc.max_concurrent_streams": options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS,
    // No channelz service is served, so its per-call bookkeeping would only cost CPU.
    "grpc.enable_channelz": 0,
    interceptors: [
      clientMistakesAsInvalidArgument(),
      requestReceiveDeadline(options.requestReceiveTimeoutMs ?? DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS, options.logger),
    ],
  });
  const serviceNames = options.services.map((s) => s.service.typeName);
  for (const { service, impl } of options.services) addServiceImpl(server, service, impl);

  const health = new HealthStatus();
  for (const name of ["", ...serviceNames]) health.set(name, ServingStatus.NOT_SERVING);
  const healthStopping = new AbortController();
  addServiceImpl(server, Health, healthService(health, healthStopping.signal));
  if (options.reflection) addReflection(server, await ReflectionIndex.load([...serviceNames, HEALTH_SERVICE, ...REFLECTION_SERVICES]));

  const credentials = options.tls
    ? grpc.ServerCredentials.createSsl(null, [
        { cert_chain: await readFile(options.tls.certFile), private_key: await readFile(options.tls.keyFile) },
      ])
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${options.host}:${options.port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
  );
  for (const name of ["", ...serviceNames]) health.set(name, ServingStatus.SERVING);

  return {
    port,
    async stop(graceMs) {
      for (const name of ["", ...serviceNames]) health.set(name, ServingStatus.NOT_SERVING);
      healthStopping.abort();
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      const timer = setTimeout(() => {
        options.logger.warn({ graceMs }, "gRPC drain timed out: cancelling remaining calls");
        server.forceShutdown();
      }, graceMs);
      await drained;
      clearTimeout(timer);
    },
  };
}
