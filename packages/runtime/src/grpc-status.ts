import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, anyPack } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "@holdfast/contracts/rpc";

/** Trailer that carries a binary `google.rpc.Status` with the error details (the gRPC convention). */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/**
 * Encodes a ConnectError as a grpc-js status: the same numeric code (Connect
 * and gRPC share them), the raw message, and every detail in
 * `grpc-status-details-bin`, so grpc-js, C-core clients and grpcurl see the
 * same ErrorInfo / BadRequest / PreconditionFailure as Connect clients do.
 */
export function grpcStatusFromConnectError(err: ConnectError): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  const details = err.details.map((d) =>
    "desc" in d
      ? anyPack(d.desc, create(d.desc, d.value))
      : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
  );
  if (details.length > 0) {
    const status = create(StatusSchema, { code: err.code, message: err.rawMessage, details });
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(toBinary(StatusSchema, status)));
  }
  return { code: err.code as number as grpc.status, details: err.rawMessage, metadata };
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
