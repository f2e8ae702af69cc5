import { Code, type ConnectError, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, endStreamFlag, errorToJson, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { invalidArgument, undecodableRequest } from "./errors.js";

/**
 * How connect-es words a request body it could not read, which it answers INTERNAL
 * ("our bug") although the bytes are the caller's mistake:
 * - protobuf-es could not decode it: "parse binary: premature EOF", "invalid
 *   varint", "illegal tag", invalid UTF-8, nesting too deep... (undecodable JSON is
 *   already INVALID_ARGUMENT);
 * - a compressed body (Content-Encoding / Connect-Content-Encoding gzip or br) that
 *   zlib could not inflate for a reason connect-node does not map, e.g. Z_BUF_ERROR,
 *   a truncated stream (corrupt data is already INVALID_ARGUMENT).
 */
const PARSE_FAILURE = /^parse binary: /;
const DECOMPRESSION_FAILURE = /^decompression failed$/;

/** The caller's mistake, answered as the gRPC adapter answers undecodable bytes (grpc-service.ts). */
function undecodable(rawMessage: string): ConnectError {
  return DECOMPRESSION_FAILURE.test(rawMessage)
    ? invalidArgument([{ field: "", description: "the request body could not be decompressed" }])
    : undecodableRequest(rawMessage.replace(PARSE_FAILURE, ""));
}

const isUnreadable = (message: unknown): message is string => typeof message === "string" && (PARSE_FAILURE.test(message) || DECOMPRESSION_FAILURE.test(message));
const isUndecodable = (error: ConnectError | undefined): error is ConnectError => error?.code === Code.Internal && isUnreadable(error.rawMessage);

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function envelope(flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

/** Passes an enveloped body through, envelope by envelope, letting `rewrite` replace the payload of any. */
async function* rewriteEnvelopes(body: AsyncIterable<Uint8Array>, rewrite: (flags: number, data: Uint8Array) => Uint8Array | undefined): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array = new Uint8Array(0);
  // Once a response message went out the request was decoded, so nothing after it can
  // be a parse failure: the rest (a Watch stream's whole life) passes through untouched.
  let decoded = false;
  for await (const chunk of body) {
    if (decoded) {
      yield chunk;
      continue;
    }
    pending = concat(pending, chunk);
    while (pending.length >= 5 && !decoded) {
      const length = new DataView(pending.buffer, pending.byteOffset, pending.byteLength).getUint32(1);
      if (pending.length < 5 + length) break;
      const flags = pending[0]!;
      const replaced = rewrite(flags, pending.subarray(5, 5 + length));
      yield replaced === undefined ? pending.subarray(0, 5 + length) : envelope(flags, replaced);
      pending = pending.subarray(5 + length);
      decoded = (flags & (endStreamFlag | trailerFlag)) === 0;
    }
    if (decoded && pending.length > 0) {
      yield pending;
      pending = new Uint8Array(0);
    }
  }
  if (pending.length > 0) yield pending;
}

async function readAll(body: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  let all: Uint8Array = new Uint8Array(0);
  for await (const chunk of body) all = concat(all, chunk);
  return all;
}

/** Connect unary: an error is a JSON body with an HTTP status. */
async function rewriteConnectUnary(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  if (res.body === undefined || res.header?.has("content-encoding")) return res;
  const bytes = await readAll(res.body);
  let json: { code?: unknown; message?: unknown } | undefined;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes)) as typeof json;
  } catch {
    json = undefined;
  }
  if (json?.code !== "internal" || !isUnreadable(json.message)) {
    return { ...res, body: (async function* () { yield bytes; })() };
  }
  const replaced = errorToJsonBytes(undecodable(json.message), undefined);
  const header = new Headers(res.header);
  header.set("content-length", String(replaced.byteLength));
  return { ...res, status: codeToHttpStatus(Code.InvalidArgument), header, body: (async function* () { yield replaced; })() };
}

/** Connect streaming: an error is the JSON end-stream message (flag 0x02). */
function rewriteConnectStream(res: UniversalServerResponse): UniversalServerResponse {
  if (res.body === undefined) return res;
  const body = rewriteEnvelopes(res.body, (flags, data) => {
    if ((flags & endStreamFlag) !== endStreamFlag || (flags & 0x01) !== 0) return undefined;
    try {
      const end = JSON.parse(new TextDecoder().decode(data)) as { error?: { code?: unknown; message?: unknown } };
      if (end.error?.code !== "internal" || !isUnreadable(end.error.message)) return undefined;
      return new TextEncoder().encode(JSON.stringify({ ...end, error: errorToJson(undecodable(end.error.message), undefined) }));
    } catch {
      return undefined;
    }
  });
  return { ...res, body };
}

/** gRPC-Web: the status is in a trailer frame (flag 0x80), or in the headers of a trailers-only answer. */
function rewriteGrpcWeb(res: UniversalServerResponse): UniversalServerResponse {
  if (res.header !== undefined) patchStatus(res.header);
  if (res.body === undefined) return res;
  const body = rewriteEnvelopes(res.body, (flags, data) => {
    if ((flags & trailerFlag) !== trailerFlag) return undefined;
    const trailer = trailerParse(data);
    return patchStatus(trailer) ? trailerSerialize(trailer) : undefined;
  });
  return { ...res, body };
}

/** gRPC (served by connect-node too): the status is in the HTTP trailers, set while the body is produced. */
function rewriteGrpc(res: UniversalServerResponse): UniversalServerResponse {
  const body = res.body;
  const patch = () => {
    if (res.header !== undefined) patchStatus(res.header);
    if (res.trailer !== undefined) patchStatus(res.trailer);
  };
  return {
    ...res,
    body: (async function* () {
      try {
        if (body !== undefined) yield* body;
      } finally {
        patch();
      }
    })(),
  };
}

/** Replaces an undecodable-request INTERNAL in these gRPC headers or trailers; true when it did. */
function patchStatus(headers: Headers): boolean {
  const error = findTrailerError(headers);
  if (!isUndecodable(error)) return false;
  setTrailerStatus(headers, undecodable(error.rawMessage));
  return true;
}

function refuseUndecodable(handler: UniversalHandler): UniversalHandler {
  const wrapped = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    const contentType = res.header?.get("content-type") ?? "";
    if (/^application\/json/.test(contentType) && res.status === codeToHttpStatus(Code.Internal)) return rewriteConnectUnary(res);
    if (/^application\/connect\+/.test(contentType)) return rewriteConnectStream(res);
    if (/^application\/grpc-web/.test(contentType)) return rewriteGrpcWeb(res);
    if (/^application\/grpc/.test(contentType)) return rewriteGrpc(res);
    return res;
  };
  return Object.assign(wrapped, {
    protocolNames: handler.protocolNames,
    service: handler.service,
    method: handler.method,
    requestPath: handler.requestPath,
    allowedMethods: handler.allowedMethods,
    supportedContentType: handler.supportedContentType,
  });
}

/**
 * Makes every handler of `router` answer a request body that is not valid
 * protobuf, or cannot be decompressed, INVALID_ARGUMENT (ErrorInfo BAD_REQUEST,
 * BadRequest on field ""), as the gRPC port does, on the Connect, gRPC-Web and gRPC
 * protocols alike, instead of connect-es's INTERNAL. Call it last in `routes`, after `router.service(...)`:
 *
 *   connectNodeAdapter({ routes: (router) => { router.service(S, impl); refuseUndecodableRequests(router); } })
 */
export function refuseUndecodableRequests(router: ConnectRouter): void {
  router.handlers.forEach((handler, i) => {
    router.handlers[i] = refuseUndecodable(handler);
  });
}
