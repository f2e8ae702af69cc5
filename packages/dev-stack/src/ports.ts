import net from "node:net";

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Every listener of both services on loopback, on a port the OS picks (tests and benchmarks). */
export const EPHEMERAL_LOOPBACK_PORTS = {
  GRPC_HOST: "127.0.0.1",
  GRPC_PORT: "0",
  HTTP_HOST: "127.0.0.1",
  HTTP_PORT: "0",
  WORKER_GRPC_HOST: "127.0.0.1",
  WORKER_GRPC_PORT: "0",
  WORKER_HTTP_HOST: "127.0.0.1",
  WORKER_HTTP_PORT: "0",
};
