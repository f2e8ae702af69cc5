import * as grpc from "@grpc/grpc-js";
import { readFile } from "node:fs/promises";
import { createFileRegistry, fromBinary, toBinary, type DescFile, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { reflectionV1 } from "@holdfast/contracts/reflection";
import { descriptorSetPath } from "@holdfast/contracts/descriptors";
import { grpcServiceDefinition } from "./grpc-service.js";

type Request = reflectionV1.ServerReflectionRequest;
type Answer = reflectionV1.ServerReflectionResponse["messageResponse"];

/**
 * gRPC server reflection (v1 and v1alpha, which share their wire format),
 * answered from the exact FileDescriptorSet that `buf build` made of proto/.
 *
 * Why not @grpc/reflection: it rebuilds files through proto-loader, which
 * merges every file of a package into one and drops the imports, and buf curl
 * then fails with "failed to find service ... in schema". Here each file comes
 * back as written, with its dependencies and doc comments.
 */
export class ReflectionIndex {
  private constructor(
    private readonly registry: FileRegistry,
    private readonly services: readonly string[],
  ) {}

  static async load(serviceNames: readonly string[]): Promise<ReflectionIndex> {
    const set = fromBinary(FileDescriptorSetSchema, await readFile(descriptorSetPath));
    return new ReflectionIndex(createFileRegistry(set), [...serviceNames].sort());
  }

  /** A file and everything it imports, transitively, the file first. */
  private withDependencies(file: DescFile): Uint8Array[] {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  }

  private fileOfSymbol(symbol: string): DescFile | undefined {
    const type = this.registry.get(symbol);
    if (type !== undefined) return type.file;
    // A method ("pkg.Service.Method") or a field / enum value: look up the parent.
    const parent = symbol.slice(0, Math.max(0, symbol.lastIndexOf(".")));
    const owner = parent === "" ? undefined : this.registry.get(parent);
    return owner?.file;
  }

  answer(request: Request): Answer {
    const notFound = (what: string): Answer => ({
      case: "errorResponse",
      value: { $typeName: "grpc.reflection.v1.ErrorResponse", errorCode: grpc.status.NOT_FOUND, errorMessage: `${what} not found` },
    });
    const files = (file: DescFile | undefined, what: string): Answer =>
      file === undefined
        ? notFound(what)
        : {
            case: "fileDescriptorResponse",
            value: { $typeName: "grpc.reflection.v1.FileDescriptorResponse", fileDescriptorProto: this.withDependencies(file) },
          };
    const m = request.messageRequest;
    switch (m.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: {
            $typeName: "grpc.reflection.v1.ListServiceResponse",
            service: this.services.map((name) => ({ $typeName: "grpc.reflection.v1.ServiceResponse", name })),
          },
        };
      case "fileByFilename":
        return files(this.registry.getFile(m.value), `file ${m.value}`);
      case "fileContainingSymbol":
        return files(this.fileOfSymbol(m.value), `symbol ${m.value}`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = m.value;
        const extendee = this.registry.getMessage(containingType);
        const extension = extendee && this.registry.getExtensionFor(extendee, extensionNumber);
        return files(extension?.file, `extension ${extensionNumber} of ${containingType}`);
      }
      case "allExtensionNumbersOfType": {
        if (this.registry.getMessage(m.value) === undefined) return notFound(`type ${m.value}`);
        const numbers: number[] = [];
        for (const type of this.registry) if (type.kind === "extension" && type.extendee.typeName === m.value) numbers.push(type.number);
        return {
          case: "allExtensionNumbersResponse",
          value: { $typeName: "grpc.reflection.v1.ExtensionNumberResponse", baseTypeName: m.value, extensionNumber: numbers.sort((a, b) => a - b) },
        };
      }
      default:
        return {
          case: "errorResponse",
          value: { $typeName: "grpc.reflection.v1.ErrorResponse", errorCode: grpc.status.INVALID_ARGUMENT, errorMessage: "empty reflection request" },
        };
    }
  }
}

/** Adds grpc.reflection.v1 and v1alpha to a grpc-js server. */
export function addReflection(server: grpc.Server, index: ReflectionIndex): void {
  // v1alpha has the same messages, field for field, under another package: one
  // definition (and so one codec) serves both paths.
  const definition = grpcServiceDefinition(reflectionV1.ServerReflection);
  const handler = (call: grpc.ServerDuplexStream<Request, reflectionV1.ServerReflectionResponse>) => {
    call.on("data", (request: Request) => {
      call.write({
        $typeName: "grpc.reflection.v1.ServerReflectionResponse",
        validHost: request.host,
        originalRequest: request,
        messageResponse: index.answer(request),
      });
    });
    call.on("end", () => call.end());
    call.on("error", () => undefined);
  };
  server.addService(definition, { serverReflectionInfo: handler });
  const alpha: grpc.ServiceDefinition = {};
  for (const [key, method] of Object.entries(definition)) {
    (alpha as Record<string, grpc.MethodDefinition<object, object>>)[key] = {
      ...method,
      path: method.path.replace("grpc.reflection.v1.", "grpc.reflection.v1alpha."),
    };
  }
  server.addService(alpha, { serverReflectionInfo: handler });
}
