// proto/buf/validate/validate.proto is printed from @bufbuild/protovalidate's
// embedded descriptor (scripts/vendor-protovalidate.mjs) so that the contract
// can import it offline. What buf compiles from it must have the library's
// wire shape, or the rule options our protos encode would decode differently
// in the library. Compared: every message, field (label, type, number, type
// name, default, json_name, oneof), oneof, enum, extension, extension range and
// reserved range; not options, which the vendored copy drops on purpose.
import { readFileSync } from "node:fs";
import { clone, fromBinary, toJson } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { expect } from "chai";
import { descriptorSetPath } from "@holdfast/contracts/descriptors";

function withoutOptions(file: FileDescriptorProto): unknown {
  const copy = clone(FileDescriptorProtoSchema, file);
  copy.options = undefined;
  copy.sourceCodeInfo = undefined;
  const field = (f: FieldDescriptorProto) => void (f.options = undefined);
  const enumType = (e: EnumDescriptorProto) => {
    e.options = undefined;
    e.value.forEach((v) => (v.options = undefined));
  };
  const message = (m: DescriptorProto) => {
    m.options = undefined;
    m.field.forEach(field);
    m.extension.forEach(field);
    m.oneofDecl.forEach((o) => (o.options = undefined));
    m.extensionRange.forEach((r) => (r.options = undefined));
    m.nestedType.forEach(message);
    m.enumType.forEach(enumType);
  };
  copy.messageType.forEach(message);
  copy.enumType.forEach(enumType);
  copy.extension.forEach(field);
  return toJson(FileDescriptorProtoSchema, copy);
}

describe("contract: the vendored buf/validate/validate.proto", () => {
  it("compiles to the wire shape of the descriptor @bufbuild/protovalidate embeds", () => {
    const set = fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSetPath));
    const vendored = set.file.find((f) => f.name === file_buf_validate_validate.proto.name);
    expect(vendored, "buf/validate/validate.proto in descriptors.binpb").to.not.equal(undefined);
    expect(withoutOptions(vendored!)).to.deep.equal(withoutOptions(file_buf_validate_validate.proto));
  });
});
