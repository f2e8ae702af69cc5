import * as grpc from "@grpc/grpc-js";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { grpcServiceDefinition } from "@holdfast/runtime";
import { reflectionV1, reflectionV1alpha } from "@holdfast/contracts/reflection";

type ReflectionVersion = "v1" | "v1alpha";

/**
 * A minimal server-reflection client (the protocol grpcurl and buf curl
 * speak), on grpc-js: one request, one response, over the bidi stream.
 */
async function ask(address: string, version: ReflectionVersion, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  const service = version === "v1" ? reflectionV1.ServerReflection : reflectionV1alpha.ServerReflection;
  const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.typeName);
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    serverReflectionInfo(): grpc.ClientDuplexStream<unknown, Record<string, unknown>>;
  };
  try {
    const call = client.serverReflectionInfo();
    const response = new Promise<Record<string, unknown>>((resolve, reject) => {
      call.once("data", resolve);
      call.once("error", reject);
    });
    call.write(request);
    call.end();
    return await response;
  } finally {
    client.close();
  }
}

export async function listServices(address: string, version: ReflectionVersion = "v1"): Promise<string[]> {
  const response = await ask(address, version, { messageRequest: { case: "listServices", value: "*" } });
  const result = response.messageResponse as { case: string; value: { service: { name: string }[] } };
  if (result.case !== "listServicesResponse") throw new Error(`unexpected reflection answer: ${result.case}`);
  return result.value.service.map((s) => s.name).sort();
}

/** The file descriptors (the symbol's file and its dependencies) that describe `symbol`. */
export async function filesContaining(address: string, symbol: string, version: ReflectionVersion = "v1"): Promise<FileDescriptorProto[]> {
  const response = await ask(address, version, { messageRequest: { case: "fileContainingSymbol", value: symbol } });
  const result = response.messageResponse as { case: string; value: { fileDescriptorProto: Uint8Array[] } };
  if (result.case !== "fileDescriptorResponse") throw new Error(`unexpected reflection answer: ${result.case}`);
  return result.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}
