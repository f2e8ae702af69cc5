import http from "node:http";
import type { AddressInfo } from "node:net";
import cors from "cors";
import { cors as connectCors } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { REQUEST_ID_HEADER } from "./instrument.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface HttpServerOptions {
  host: string;
  port: number;
  logger: Logger;
  registry: Registry;
  /** True while the process should receive traffic (`GET /healthz` answers 200, else 503). */
  isServing: () => boolean;
  /** Everything that is not /healthz or /metrics, e.g. the connect-node adapter. */
  handler?: Handler;
  /**
   * Origins allowed to call `handler` from a browser. The page's own origin
   * (same host and port) is always allowed; `*` allows any origin.
   */
  allowedOrigins?: readonly string[];
}

export interface RunningHttpServer {
  port: number;
  /** Stops accepting, waits up to `graceMs` for requests in flight, then closes what is left. */
  stop(graceMs: number): Promise<void>;
}

function corsMiddleware(allowedOrigins: readonly string[]) {
  const allowAny = allowedOrigins.includes("*");
  const options = {
    methods: [...connectCors.allowedMethods],
    allowedHeaders: [...connectCors.allowedHeaders, "Authorization", REQUEST_ID_HEADER],
    exposedHeaders: [...connectCors.exposedHeaders, REQUEST_ID_HEADER],
    maxAge: 7200,
  };
  const isAllowed = (req: http.IncomingMessage, origin: string) =>
    allowAny || allowedOrigins.includes(origin) || origin === `http://${req.headers.host}` || origin === `https://${req.headers.host}`;
  return { isAllowed, handle: cors<http.IncomingMessage>((req, cb) => cb(null, { ...options, origin: isAllowed(req, req.headers.origin ?? "") })) };
}

/**
 * The HTTP/1.1 port: `GET /healthz`, `GET /metrics` (Prometheus text format)
 * and, when given, the Connect / gRPC-Web handler behind CORS. A preflight from
 * an origin that is not allowed is answered 403 so the refusal is explicit.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<RunningHttpServer> {
  const policy = corsMiddleware(options.allowedOrigins ?? []);
  let stopping = false;
  const server = http.createServer((req, res) => {
    // While draining, finish this request but close its keep-alive connection
    // after it, so the drain ends when the last request does (not at the grace
    // deadline, which is when idle keep-alive connections would otherwise go).
    if (stopping) res.setHeader("Connection", "close");
    res.once("finish", () => {
      if (stopping) server.closeIdleConnections();
    });
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/healthz") {
      const serving = options.isServing();
      res.writeHead(serving ? 200 : 503, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: serving ? "SERVING" : "NOT_SERVING" }));
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      options.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": options.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          options.logger.error({ err }, "metrics collection failed");
          res.writeHead(500).end();
        },
      );
      return;
    }
    const handler = options.handler;
    if (handler === undefined) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    const origin = req.headers.origin;
    if (req.method === "OPTIONS" && origin !== undefined && !policy.isAllowed(req, origin)) {
      options.logger.info({ origin, path }, "CORS preflight refused: origin not allowed");
      res.writeHead(403, { "content-type": "text/plain" }).end("origin not allowed\n");
      return;
    }
    policy.handle(req, res, () => handler(req, res));
  });
  server.keepAliveTimeout = 65_000;
  // Bound slow clients: a request must arrive whole within this time.
  server.requestTimeout = 300_000;
  server.headersTimeout = 20_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    async stop(graceMs) {
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
    },
  };
}
