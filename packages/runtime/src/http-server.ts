import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import cors from "cors";
import { cors as connectCors } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { REQUEST_ID_HEADER } from "./instrument.js";
import { DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS } from "./limits.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface HttpServerOptions {
  host: string;
  port: number;
  logger: Logger;
  registry: Registry;
  /** True while the process should receive traffic (`GET /healthz` answers 200, else 503). */
  isServing: () => boolean;
  /**
   * Pages for browsers (the dashboard), asked first after /healthz and /metrics:
   * they answer, or call `next` to pass the request on to `handler`. Same-origin
   * static files, so not behind CORS.
   */
  pages?: (req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => void;
  /** Everything that is not /healthz, /metrics or a page, e.g. the connect-node adapter. */
  handler?: Handler;
  /**
   * Origins allowed to call `handler` from a browser. The page's own origin
   * (same host and port) is always allowed; `*` allows any origin.
   */
  allowedOrigins?: readonly string[];
  /**
   * How long a request may take to arrive, headers and body, counted from the
   * connection or from the end of the previous request on it. Only receiving is
   * bounded: a response (a server stream) may last. Default 10 s.
   */
  requestReceiveTimeoutMs?: number;
}

/** Request headers larger than this are answered 431 (Node's default, pinned against --max-http-header-size). */
export const MAX_HEADER_BYTES = 16 * 1024;

/** What Node itself answers to a request it cannot take (its default clientError behaviour). */
const CLIENT_ERROR_RESPONSES: Record<string, string> = {
  ERR_HTTP_REQUEST_TIMEOUT: "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n",
  HPE_HEADER_OVERFLOW: "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n",
  HPE_CHUNK_EXTENSIONS_OVERFLOW: "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n",
};
const BAD_REQUEST_RESPONSE = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";

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
  const receiveTimeoutMs = options.requestReceiveTimeoutMs ?? DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS;
  const limits: http.ServerOptions = {
    // Bound slow clients: headers, then the whole request, must arrive within the
    // timeout (Node checks receiving only; a response may stream for as long as it
    // needs). A connection that sends nothing at all is closed by the same check.
    headersTimeout: receiveTimeoutMs,
    requestTimeout: receiveTimeoutMs,
    // How often Node looks for such requests (its default, 30 s, would let a
    // half-sent request live up to 30 s past the timeout).
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(receiveTimeoutMs / 4))),
    maxHeaderSize: MAX_HEADER_BYTES,
  };
  const server = http.createServer(limits, (req, res) => {
    // While draining, finish this request but close its keep-alive connection
    // after it, so the drain ends when the last request does (not at the grace
    // deadline, which is when idle keep-alive connections would otherwise go).
    if (stopping) res.setHeader("Connection", "close");
    res.once("finish", () => {
      if (stopping) server.closeIdleConnections();
    });
    // A response begun before its request has arrived whole (connect-node refusing a
    // message over the size limit from its Content-Length or envelope header) ends the
    // connection. Node would keep it alive, but nobody reads the rest of that body any
    // more: the connection would sit in it, and the client's next request on it would
    // get nothing until the receive timeout (then a 408).
    // (Only for requests with a body: a bodyless GET or preflight answered at once is
    // not complete yet either, and must keep its connection.)
    const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0;
    const writeHead = res.writeHead;
    res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
      if (hasBody && !req.complete) this.setHeader("Connection", "close");
      return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof res.writeHead;
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
    const api = () => {
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
    };
    if (options.pages === undefined) api();
    else options.pages(req, res, api);
  });
  server.keepAliveTimeout = 65_000;
  // Node's own answer to a request it cannot take (408, 431, 400, then close), plus a log line.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    const peer = { remoteAddress: (socket as { remoteAddress?: string }).remoteAddress, code: err.code };
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") options.logger.info({ ...peer, timeoutMs: receiveTimeoutMs }, "HTTP request not received in time: connection closed");
    else options.logger.debug(peer, "unreadable HTTP request: connection closed");
    // As Node does: answer only if no response has started on this connection.
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (socket.writable && err.code !== "ECONNRESET" && !inFlight?.headersSent) socket.write(CLIENT_ERROR_RESPONSES[err.code ?? ""] ?? BAD_REQUEST_RESPONSE);
    socket.destroy();
  });
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
