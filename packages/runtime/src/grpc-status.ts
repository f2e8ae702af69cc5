import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, anyIs, anyPack, anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema, StatusSchema } from "@holdfast/contracts/rpc";

/** Trailer that carries a binary `google.rpc.Status` with the error details (the gRPC convention). */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/**
 * Bounds of a status on the gRPC port. The status travels in HTTP/2 trailers, a
 * header block, and a header block larger than the client accepts does not fail
 * the call: it wedges the whole connection (the call and every later call on it
 * hang; grpc-js against grpc-js, from about 100 KiB). Error messages may quote the
 * caller's input (an update_mask path, say), so they are cut here, whatever
 * raised them: the message (grpc-message, up to 3 bytes sent per byte once
 * percent-encoded) to MAX_STATUS_MESSAGE_BYTES of UTF-8, and the details
 * (grpc-status-details-bin, base64) to MAX_STATUS_DETAILS_BYTES.
 */
export const MAX_STATUS_MESSAGE_BYTES = 1024;
export const MAX_STATUS_DETAILS_BYTES = 8 * 1024;
const MAX_METADATA_VALUE_BYTES = 256;

/** `text` cut to at most `maxBytes` of UTF-8 (on a code point boundary), marked when cut. */
function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const marker = "… (truncated)";
  let bytes = Buffer.byteLength(marker);
  let out = "";
  for (const ch of text) {
    bytes += Buffer.byteLength(ch);
    if (bytes > maxBytes) break;
    out += ch;
  }
  return out + marker;
}

/**
 * The details as sent: all of them when they fit MAX_STATUS_DETAILS_BYTES;
 * otherwise ErrorInfo first (its metadata values cut), then the others in order
 * while they fit. ErrorInfo carries the reason every client dispatches on.
 */
function boundedDetails(code: number, message: string, details: Any[]): Uint8Array {
  const encode = (list: Any[]) => toBinary(StatusSchema, create(StatusSchema, { code, message, details: list }));
  const all = encode(details);
  if (all.byteLength <= MAX_STATUS_DETAILS_BYTES) return all;
  const kept: Any[] = [];
  const info = details.find((d) => anyIs(d, ErrorInfoSchema));
  if (info !== undefined) {
    const value = anyUnpack(info, ErrorInfoSchema)!;
    for (const key of Object.keys(value.metadata)) value.metadata[key] = truncateUtf8(value.metadata[key], MAX_METADATA_VALUE_BYTES);
    kept.push(anyPack(ErrorInfoSchema, value));
  }
  for (const d of details) {
    if (d === info) continue;
    if (encode([...kept, d]).byteLength <= MAX_STATUS_DETAILS_BYTES) kept.push(d);
  }
  return encode(kept);
}

/**
 * Encodes a ConnectError as a grpc-js status: the same numeric code (Connect
 * and gRPC share them), the raw message, and every detail in
 * `grpc-status-details-bin`, so grpc-js, C-core clients and grpcurl see the
 * same ErrorInfo / BadRequest / PreconditionFailure as Connect clients do
 * (within the bounds above).
 */
export function grpcStatusFromConnectError(err: ConnectError): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  const message = truncateUtf8(err.rawMessage, MAX_STATUS_MESSAGE_BYTES);
  const details = err.details.map((d) =>
    "desc" in d
      ? anyPack(d.desc, create(d.desc, d.value))
      : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  if (details.length > 0) metadata.set(STATUS_DETAILS_KEY, Buffer.from(boundedDetails(err.code, message, details)));
  return { code: err.code as number as grpc.status, details: message, metadata };
}

/**
 * The reverse, for clients built on grpc-js: a ConnectError whose details can
 * be read with `findDetails(ErrorInfoSchema)` exactly as on a Connect client.
 */
export function connectErrorFromGrpc(err: grpc.ServiceError): ConnectError {
  const metadata = new Headers();
  for (const [key, values] of Object.entries(err.metadata?.getMap() ?? {})) {
    if (!key.endsWith("-bin")) metadata.append(key, String(values));
  }
  const result = new ConnectError(err.details, err.code as number as Code, metadata);
  const raw = err.metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw !== undefined) {
    const status = fromBinary(StatusSchema, typeof raw === "string" ? Buffer.from(raw, "base64") : raw);
    result.details = status.details.map((any) => ({
      type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
      value: any.value,
    }));
  }
  return result;
}
