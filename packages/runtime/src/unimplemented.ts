import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { unimplemented } from "./errors.js";

/**
 * An implementation whose every method answers UNIMPLEMENTED, for RPCs of the
 * contract whose behaviour has not landed yet. Real methods are spread over it.
 */
export function unimplementedService<S extends DescService>(service: S): ServiceImpl<S> {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = `${service.typeName}.${method.name}`;
    impl[method.localName] =
      method.methodKind === "unary"
        ? () => Promise.reject(unimplemented(name))
        : async function* () {
            yield* [];
            throw unimplemented(name);
          };
  }
  return impl as ServiceImpl<S>;
}
