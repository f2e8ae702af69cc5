#!/usr/bin/env node
// Writes proto/buf/validate/validate.proto from the descriptor that the
// @bufbuild/protovalidate npm package embeds, so that the contract can import
// "buf/validate/validate.proto" without any network access (no BSR).
//
//   node scripts/vendor-protovalidate.mjs            write the file
//   node scripts/vendor-protovalidate.mjs --stdout   print it instead
//
// The package ships no .proto, only generated code with the file's
// FileDescriptorProto. This script prints that descriptor back as proto
// source: syntax, package, imports, every message (nested), enum, oneof,
// field (label, type, number, default value, non-default json_name, packed),
// extension, extension range and reserved range: the same wire shape, so the
// option bytes our own protos emit decode identically in the library. Options
// of validate.proto's own elements (the CEL expressions of the predefined
// rules) and language options (go_package, java_*) are dropped: the runtime
// evaluates rules with its own embedded copy of validate.proto, never ours.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isFieldSet } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const PACKAGE = "@bufbuild/protovalidate";
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join(root, "proto", file_buf_validate_validate.proto.name);

/** The installed version of the package, from its package.json (its exports do not include it). */
function packageVersion() {
  let dir = dirname(fileURLToPath(import.meta.resolve(PACKAGE)));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      if (pkg.name === PACKAGE) return pkg.version;
    } catch {
      // not this directory
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the package.json of ${PACKAGE}`);
    dir = up;
  }
}

const SCALARS = {
  [Type.DOUBLE]: "double",
  [Type.FLOAT]: "float",
  [Type.INT64]: "int64",
  [Type.UINT64]: "uint64",
  [Type.INT32]: "int32",
  [Type.FIXED64]: "fixed64",
  [Type.FIXED32]: "fixed32",
  [Type.BOOL]: "bool",
  [Type.STRING]: "string",
  [Type.BYTES]: "bytes",
  [Type.UINT32]: "uint32",
  [Type.SFIXED32]: "sfixed32",
  [Type.SFIXED64]: "sfixed64",
  [Type.SINT32]: "sint32",
  [Type.SINT64]: "sint64",
};

/** protoc's default json_name: lowerCamelCase of the field name. */
function defaultJsonName(name) {
  let out = "";
  let upper = false;
  for (const c of name) {
    if (c === "_") upper = true;
    else if (upper) {
      out += c.toUpperCase();
      upper = false;
    } else out += c;
  }
  return out;
}

/** A proto string literal (C escapes, as protoc writes them). */
function quote(s) {
  let out = '"';
  for (const ch of Buffer.from(s, "utf8")) {
    if (ch === 0x5c) out += "\\\\";
    else if (ch === 0x22) out += '\\"';
    else if (ch === 0x0a) out += "\\n";
    else if (ch === 0x0d) out += "\\r";
    else if (ch === 0x09) out += "\\t";
    else if (ch >= 0x20 && ch < 0x7f) out += String.fromCharCode(ch);
    else out += `\\${ch.toString(8).padStart(3, "0")}`;
  }
  return `${out}"`;
}

function defaultLiteral(field) {
  const v = field.defaultValue;
  switch (field.type) {
    case Type.STRING:
      return quote(v);
    case Type.BYTES:
      return `"${v}"`; // already C-escaped in the descriptor
    default:
      return v; // numbers, true/false, inf/-inf/nan, enum value names
  }
}

const MAX_FIELD_NUMBER = 536_870_911;

/** "5", "5 to 7", "1000 to max" from a [start, end) range. */
function range(start, endExclusive) {
  const end = endExclusive - 1;
  if (end === start) return String(start);
  return `${start} to ${end >= MAX_FIELD_NUMBER ? "max" : end}`;
}

class Printer {
  lines = [];
  depth = 0;
  line(text = "") {
    this.lines.push(text === "" ? "" : "  ".repeat(this.depth) + text);
  }
  open(text) {
    this.line(`${text} {`);
    this.depth++;
  }
  close() {
    this.depth--;
    this.line("}");
  }
}

function fieldType(field) {
  if (field.type === Type.MESSAGE || field.type === Type.ENUM) return field.typeName;
  if (field.type === Type.GROUP) throw new Error(`field ${field.name}: groups are not supported by this script`);
  return SCALARS[field.type];
}

function fieldOptions(field) {
  const opts = [];
  if (isFieldSet(field, FieldDescriptorProtoSchema.field.defaultValue)) opts.push(`default = ${defaultLiteral(field)}`);
  if (isFieldSet(field, FieldDescriptorProtoSchema.field.jsonName) && field.jsonName !== defaultJsonName(field.name)) {
    opts.push(`json_name = ${quote(field.jsonName)}`);
  }
  const o = field.options;
  if (o !== undefined) {
    // Wire-relevant: the encoding of repeated scalars.
    if (isFieldSet(o, FieldOptionsSchema.field.packed)) opts.push(`packed = ${o.packed}`);
    // Kept because they change generated code elsewhere (not the wire): cheap to keep exact.
    if (isFieldSet(o, FieldOptionsSchema.field.jstype)) opts.push(`jstype = ${["JS_NORMAL", "JS_STRING", "JS_NUMBER"][o.jstype]}`);
    if (o.deprecated) opts.push("deprecated = true");
  }
  return opts.length === 0 ? "" : ` [${opts.join(", ")}]`;
}

function printField(p, field, { proto3, inOneof }) {
  let label = "";
  if (!inOneof) {
    if (field.label === Label.REPEATED) label = "repeated ";
    else if (field.label === Label.REQUIRED) label = "required ";
    else if (!proto3 || field.proto3Optional) label = "optional ";
  }
  p.line(`${label}${fieldType(field)} ${field.name} = ${field.number}${fieldOptions(field)};`);
}

function printEnum(p, e) {
  p.open(`enum ${e.name}`);
  if (e.options?.allowAlias) p.line("option allow_alias = true;");
  for (const v of e.value) p.line(`${v.name} = ${v.number}${v.options?.deprecated ? " [deprecated = true]" : ""};`);
  for (const r of e.reservedRange) p.line(`reserved ${r.start === r.end ? r.start : `${r.start} to ${r.end >= 2_147_483_647 ? "max" : r.end}`};`);
  if (e.reservedName.length > 0) p.line(`reserved ${e.reservedName.map(quote).join(", ")};`);
  p.close();
}

function printExtensions(p, extensions, ctx) {
  const byExtendee = new Map();
  for (const x of extensions) byExtendee.set(x.extendee, [...(byExtendee.get(x.extendee) ?? []), x]);
  for (const [extendee, fields] of byExtendee) {
    p.open(`extend ${extendee}`);
    for (const x of fields) printField(p, x, { ...ctx, inOneof: false });
    p.close();
  }
}

function printMessage(p, m, ctx) {
  p.open(`message ${m.name}`);
  if (m.options?.messageSetWireFormat) p.line("option message_set_wire_format = true;");
  const oneofOf = (f) => (isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional ? f.oneofIndex : undefined);
  const printedOneofs = new Set();
  for (const f of m.field) {
    const index = oneofOf(f);
    if (index === undefined) {
      printField(p, f, { ...ctx, inOneof: false });
      continue;
    }
    if (printedOneofs.has(index)) continue;
    printedOneofs.add(index);
    p.open(`oneof ${m.oneofDecl[index].name}`);
    for (const member of m.field.filter((g) => oneofOf(g) === index)) printField(p, member, { ...ctx, inOneof: true });
    p.close();
  }
  for (const e of m.enumType) printEnum(p, e);
  for (const n of m.nestedType) {
    if (n.options?.mapEntry) throw new Error(`${m.name}.${n.name}: map fields are not supported by this script`);
    printMessage(p, n, ctx);
  }
  printExtensions(p, m.extension, ctx);
  for (const r of m.extensionRange) p.line(`extensions ${range(r.start, r.end)};`);
  for (const r of m.reservedRange) p.line(`reserved ${range(r.start, r.end)};`);
  if (m.reservedName.length > 0) p.line(`reserved ${m.reservedName.map(quote).join(", ")};`);
  p.close();
}

function render(file, version) {
  const proto = file.proto;
  const syntax = isFieldSet(proto, FileDescriptorProtoSchema.field.syntax) && proto.syntax !== "" ? proto.syntax : "proto2";
  if (syntax !== "proto2" && syntax !== "proto3") throw new Error(`${proto.name}: syntax "${syntax}" (editions) is not supported by this script`);
  const ctx = { proto3: syntax === "proto3" };
  const p = new Printer();
  p.line(`// Code generated by scripts/vendor-protovalidate.mjs from ${PACKAGE}@${version}; do not edit.`);
  p.line("// Regenerate with `npm run vendor:protovalidate` after changing that package's version.");
  p.line("//");
  p.line(`// ${proto.name} as embedded in the package (which ships no .proto): every`);
  p.line("// message, enum, oneof, field, extension and range with its number, label,");
  p.line("// type, default value and json_name, i.e. the same wire shape as upstream, so");
  p.line("// the rule options Holdfast's protos set encode exactly as the library reads");
  p.line("// them. Omitted: comments, language options (go_package, java_*) and the");
  p.line("// options of this file's own fields, i.e. the CEL expressions that define");
  p.line("// the predefined rules: the runtime evaluates rules with its own embedded copy");
  p.line("// of this file, never with this one. Generated code for this file is not");
  p.line("// emitted either: holdfast code imports the library's (buf.gen.yaml).");
  p.line();
  p.line(`syntax = "${syntax}";`);
  p.line();
  p.line(`package ${proto.package};`);
  p.line();
  const publicDeps = new Set(proto.publicDependency);
  const weakDeps = new Set(proto.weakDependency);
  proto.dependency.forEach((d, i) => p.line(`import ${publicDeps.has(i) ? "public " : weakDeps.has(i) ? "weak " : ""}"${d}";`));
  if (proto.service.length > 0) throw new Error(`${proto.name}: services are not supported by this script`);
  for (const e of proto.enumType) {
    p.line();
    printEnum(p, e);
  }
  for (const m of proto.messageType) {
    p.line();
    printMessage(p, m, ctx);
  }
  if (proto.extension.length > 0) p.line();
  printExtensions(p, proto.extension, ctx);
  return `${p.lines.join("\n")}\n`;
}

const text = render(file_buf_validate_validate, packageVersion());
if (process.argv.includes("--stdout")) {
  process.stdout.write(text);
} else {
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(target, text);
  console.log(`wrote ${target.slice(root.length + 1)}`);
}
