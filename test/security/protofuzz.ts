// Random and mutated protobuf requests for the fuzz test, driven by the message
// descriptors (so every RPC of both services is covered without a table per
// message) and by a seeded PRNG (so a failing run replays from its seed).
//
// Three levels:
// - messages: random values of the right type in every field, biased towards
//   boundaries (0, -1, 2^31-1, -2^63, NaN, "", NUL, huge, unicode, undefined enum
//   numbers), or a valid request with a few fields replaced that way;
// - wire: bytes no well-behaved client sends (truncated, bit-flipped, unknown
//   fields, wrong wire types, invalid UTF-8, overlong varints, bad lengths, deep
//   group nesting, plain noise);
// - JSON: the canonical JSON of such messages, and JSON with wrong types, unknown
//   keys, `__proto__`, deep nesting, duplicate keys, or no JSON at all.
import { create, toBinary, toJsonString, ScalarType, type DescEnum, type DescField, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";

export type Rng = () => number;

export class Dice {
  constructor(readonly next: Rng) {}
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

const INT32_EDGES = [0, 1, -1, 2, 50, 51, 1_000_000, 1_000_001, 2_147_483_647, -2_147_483_648, -2_147_483_647, 65_535, 16_777_217];
const UINT32_EDGES = [0, 1, 2, 4_294_967_295, 2_147_483_648, 1_000_001];
const INT64_EDGES = [0n, 1n, -1n, 9_223_372_036_854_775_807n, -9_223_372_036_854_775_808n, 9_007_199_254_740_993n, -9_007_199_254_740_993n, 2_147_483_648n, 315_576_000_001n, -315_576_000_001n, 253_402_300_800n, -62_135_596_801n];
const UINT64_EDGES = [0n, 1n, 18_446_744_073_709_551_615n, 9_223_372_036_854_775_808n];
const DOUBLE_EDGES = [0, -0, NaN, Infinity, -Infinity, 1e308, -1e308, 5e-324, 0.1, -1.5];
const FLOAT_EDGES = [0, -0, NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e-45, 0.5];

/** Strings that have broken parsers, validators, SQL and logs before. */
const NASTY_STRINGS = [
  "",
  " ",
  "a\u0000b",
  "\u0000",
  "日本語のSKU",
  "🙂🙃🧨",
  "\u202eevil\u202c",
  "e\u0301\u0301\u0301",
  "\u200b",
  "\ufeffBOM",
  "\ud800",
  "\udfff\ud800",
  "'; DROP TABLE skus; --",
  "%",
  "_%_",
  "\\",
  "%s%n%x",
  "${process.exit()}",
  "{{7*7}}",
  "../../etc/passwd",
  "\r\nX-Injected: 1",
  "NaN",
  "-0",
  "1e309",
  "00000000-0000-0000-0000-000000000000",
  "ffffffff-ffff-ffff-ffff-ffffffffffff",
  "FZ-BASE",
  "fz-base",
  "A".repeat(64),
  "A".repeat(65),
  "r".repeat(128),
  "r".repeat(129),
  "x".repeat(512),
  "x".repeat(513),
  "__proto__",
  "constructor",
];

export class Values {
  /** Set while making the items of a long list: no huge strings or lists inside (a list of 5,000 huge items would be gigabytes). */
  private small = false;

  constructor(
    private readonly dice: Dice,
    /** Valid-looking strings of this test (SKU codes, ids) mixed in with the nasty ones. */
    private readonly known: readonly string[],
  ) {}

  string(): string {
    const d = this.dice;
    switch (d.int(8)) {
      case 0:
      case 1:
        return d.pick(NASTY_STRINGS);
      case 2:
        return d.pick(this.known);
      case 3: {
        // Random code points, surrogates and controls included.
        const n = d.between(1, 40);
        let s = "";
        for (let i = 0; i < n; i++) s += String.fromCodePoint(d.chance(0.7) ? d.between(0, 0x7f) : d.chance(0.8) ? d.between(0x80, 0xffff) : d.between(0x10000, 0x10ffff));
        return s;
      }
      case 4:
        return this.uuid();
      case 5:
        // Huge: up to 256 KiB, far beyond any field's limit but under the message limit.
        if (this.small) return d.pick(NASTY_STRINGS);
        return d.pick(["x", "é", "🙂", "\u0000"]).repeat(d.pick([1_000, 10_000, 65_536, 262_144]));
      default: {
        const n = d.between(1, 80);
        let s = "";
        for (let i = 0; i < n; i++) s += String.fromCharCode(d.between(0x20, 0x7e));
        return s;
      }
    }
  }

  /** A random UUID (from the seeded dice, so a run replays), version 4 or not. */
  uuid(): string {
    const hex = this.dice.bytes(16).toString("hex");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  scalar(type: ScalarType, longAsString: boolean): unknown {
    const d = this.dice;
    const random32 = () => d.int(2 ** 32) - 2 ** 31;
    const big = (edges: readonly bigint[], signed: boolean) => {
      const v = d.chance(0.75) ? d.pick(edges) : BigInt(d.int(2 ** 31)) * BigInt(d.int(2 ** 31)) * (signed && d.chance(0.5) ? -1n : 1n);
      return longAsString ? v.toString() : v;
    };
    switch (type) {
      case ScalarType.DOUBLE:
        return d.chance(0.7) ? d.pick(DOUBLE_EDGES) : (d.next() - 0.5) * 10 ** d.between(-10, 300);
      case ScalarType.FLOAT:
        return d.pick(FLOAT_EDGES);
      case ScalarType.INT32:
      case ScalarType.SINT32:
      case ScalarType.SFIXED32:
        return d.chance(0.75) ? d.pick(INT32_EDGES) : random32();
      case ScalarType.UINT32:
      case ScalarType.FIXED32:
        return d.chance(0.75) ? d.pick(UINT32_EDGES) : d.int(2 ** 32);
      case ScalarType.INT64:
      case ScalarType.SINT64:
      case ScalarType.SFIXED64:
        return big(INT64_EDGES, true);
      case ScalarType.UINT64:
      case ScalarType.FIXED64:
        return big(UINT64_EDGES, false);
      case ScalarType.BOOL:
        return d.chance(0.5);
      case ScalarType.STRING:
        return this.string();
      case ScalarType.BYTES:
        return new Uint8Array(d.bytes(d.pick(this.small ? [0, 1, 16] : [0, 1, 16, 300, 70_000])));
    }
  }

  enumNumber(desc: DescEnum): number {
    const d = this.dice;
    if (d.chance(0.6)) return d.pick(desc.values).number;
    return d.pick([0, -1, 99, 1000, 2_147_483_647, -2_147_483_648, desc.values.length, d.int(2 ** 32) - 2 ** 31]);
  }

  /** A random value for `field` in init-shape form (lists as arrays, maps as objects). */
  field(field: DescField, depth: number): unknown {
    const d = this.dice;
    const count = () => (!this.small && depth <= 1 && d.chance(0.1) ? d.pick([51, 101, 1000, 5000]) : d.int(4));
    switch (field.fieldKind) {
      case "scalar":
        return this.scalar(field.scalar, field.longAsString);
      case "enum":
        return this.enumNumber(field.enum);
      case "message":
        return this.message(field.message, depth + 1);
      case "list": {
        const n = count();
        const item = () =>
          field.listKind === "scalar" ? this.scalar(field.scalar, field.longAsString) : field.listKind === "enum" ? this.enumNumber(field.enum) : this.message(field.message, depth + 1);
        // A long list repeats one small item (cheap to make, same cost to validate).
        if (n > 50) {
          this.small = true;
          try {
            const one = item();
            return Array.from({ length: n }, () => one);
          } finally {
            this.small = false;
          }
        }
        return Array.from({ length: n }, item);
      }
      case "map": {
        const out: Record<string, unknown> = {};
        for (let i = d.int(3); i > 0; i--) {
          const key = String(this.scalar(field.mapKey, true));
          out[key] = field.mapKind === "scalar" ? this.scalar(field.scalar, false) : field.mapKind === "enum" ? this.enumNumber(field.enum) : this.message(field.message, depth + 1);
        }
        return out;
      }
    }
  }

  /** A random message: each field set with some probability, one case per oneof. */
  message(desc: DescMessage, depth = 0): Record<string, unknown> {
    const d = this.dice;
    const init: Record<string, unknown> = {};
    if (depth > 3) return init;
    for (const member of desc.members) {
      if (!d.chance(depth === 0 ? 0.7 : 0.5)) continue;
      if (member.kind === "oneof") {
        const f = d.pick(member.fields);
        init[member.localName] = { case: f.localName, value: this.field(f, depth) };
      } else {
        init[member.localName] = this.field(member, depth);
      }
    }
    return init;
  }

  /** `base` with 1 to 3 fields (at any depth) replaced by random values. */
  mutate(desc: DescMessage, base: Record<string, unknown>, depth = 0): Record<string, unknown> {
    const d = this.dice;
    const init: Record<string, unknown> = { ...base };
    for (let k = depth === 0 ? d.between(1, 3) : 1; k > 0 && desc.members.length > 0; k--) {
      const member = d.pick(desc.members);
      if (member.kind === "oneof") {
        const f = d.pick(member.fields);
        const current = init[member.localName] as { case?: string; value?: unknown } | undefined;
        const value =
          f.fieldKind === "message" && current?.case === f.localName && d.chance(0.5)
            ? this.mutate(f.message, current.value as Record<string, unknown>, depth + 1)
            : this.field(f, depth);
        init[member.localName] = d.chance(0.1) ? undefined : { case: f.localName, value };
        continue;
      }
      const current = init[member.localName];
      if (d.chance(0.1)) {
        delete init[member.localName];
      } else if (member.fieldKind === "message" && current !== undefined && d.chance(0.5)) {
        init[member.localName] = this.mutate(member.message, current as Record<string, unknown>, depth + 1);
      } else if (member.fieldKind === "list" && member.listKind === "message" && Array.isArray(current) && current.length > 0 && d.chance(0.5)) {
        const items = [...current];
        const i = d.int(items.length);
        items[i] = this.mutate(member.message, items[i] as Record<string, unknown>, depth + 1);
        init[member.localName] = items;
      } else {
        init[member.localName] = this.field(member, depth);
      }
    }
    return init;
  }
}

/** The binary encoding of `init`, or undefined when protobuf-es refuses the values. */
export function encode(desc: DescMessage, init: Record<string, unknown>): Buffer | undefined {
  try {
    return Buffer.from(toBinary(desc, create(desc, init as MessageInitShape<DescMessage>)));
  } catch {
    return undefined;
  }
}

/** The canonical JSON of `init`, or undefined when protobuf-es cannot write it. */
export function encodeJson(desc: DescMessage, init: Record<string, unknown>): string | undefined {
  try {
    return toJsonString(desc, create(desc, init as MessageInitShape<DescMessage>));
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Wire level
// ---------------------------------------------------------------------------------------

const WIRE = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;

export function varint(value: bigint | number): Buffer {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return Buffer.from(out);
}

export const tag = (field: number, wire: number) => varint((BigInt(field) << 3n) | BigInt(wire));

/** The wire type a field is encoded with. */
function wireTypeOf(field: DescField): number {
  if (field.fieldKind === "message" || field.fieldKind === "map" || field.fieldKind === "list") return WIRE.LEN;
  if (field.fieldKind === "enum") return WIRE.VARINT;
  switch (field.scalar) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WIRE.LEN;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WIRE.I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WIRE.I32;
    default:
      return WIRE.VARINT;
  }
}

/** A field with wire type `wire` and a plausible payload for it. */
function fieldBytes(dice: Dice, number: number, wire: number): Buffer {
  switch (wire) {
    case WIRE.VARINT:
      return Buffer.concat([tag(number, wire), varint(dice.chance(0.5) ? dice.int(300) : -1n)]);
    case WIRE.I64:
      return Buffer.concat([tag(number, wire), dice.bytes(8)]);
    case WIRE.I32:
      return Buffer.concat([tag(number, wire), dice.bytes(4)]);
    case WIRE.LEN: {
      const payload = dice.bytes(dice.int(20));
      return Buffer.concat([tag(number, wire), varint(payload.length), payload]);
    }
    case WIRE.SGROUP:
      return Buffer.concat([tag(number, WIRE.SGROUP), fieldBytes(dice, dice.between(1, 20), WIRE.VARINT), tag(number, WIRE.EGROUP)]);
    default:
      return Buffer.concat([tag(number, wire), dice.bytes(dice.int(6))]);
  }
}

export const WIRE_MUTATIONS = [
  "truncate",
  "bit-flips",
  "byte-noise",
  "unknown-field",
  "wrong-wire-type",
  "invalid-utf8",
  "overlong-varint",
  "length-past-end",
  "huge-length",
  "field-number-0",
  "reserved-wire-type",
  "unmatched-end-group",
  "deep-groups",
  "deep-length-nesting",
  "duplicate-concat",
  "noise",
  "empty",
] as const;
export type WireMutation = (typeof WIRE_MUTATIONS)[number];

/** `valid` (an encoding of a request of type `desc`) damaged by `kind`. */
export function mutateWire(dice: Dice, desc: DescMessage, valid: Buffer, kind: WireMutation, other: Buffer): Buffer {
  const field = desc.fields.length > 0 ? dice.pick(desc.fields) : undefined;
  switch (kind) {
    case "truncate":
      return valid.subarray(0, valid.length === 0 ? 0 : dice.int(valid.length));
    case "bit-flips": {
      const out = Buffer.from(valid.length === 0 ? dice.bytes(4) : valid);
      for (let i = dice.between(1, 8); i > 0; i--) out[dice.int(out.length)] ^= 1 << dice.int(8);
      return out;
    }
    case "byte-noise": {
      const at = dice.int(valid.length + 1);
      return Buffer.concat([valid.subarray(0, at), dice.bytes(dice.between(1, 16)), valid.subarray(at + dice.int(4))]);
    }
    case "unknown-field":
      return Buffer.concat([valid, fieldBytes(dice, dice.pick([1000, 19_000, 19_999, 536_870_911, dice.between(50, 100_000)]), dice.pick([0, 1, 2, 3, 5]))]);
    case "wrong-wire-type": {
      if (field === undefined) return Buffer.concat([valid, fieldBytes(dice, 1, WIRE.I64)]);
      const wrong = dice.pick([0, 1, 2, 3, 5].filter((w) => w !== wireTypeOf(field)));
      return Buffer.concat(dice.chance(0.5) ? [valid, fieldBytes(dice, field.number, wrong)] : [fieldBytes(dice, field.number, wrong), valid]);
    }
    case "invalid-utf8": {
      const strings = desc.fields.filter((f) => (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING) || (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === ScalarType.STRING));
      const number = strings.length > 0 ? dice.pick(strings).number : (field?.number ?? 1);
      const bad = dice.pick([Buffer.from([0xff]), Buffer.from([0xc0, 0x80]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0x61, 0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from([0xe2, 0x82])]);
      return Buffer.concat([valid, tag(number, WIRE.LEN), varint(bad.length), bad]);
    }
    case "overlong-varint":
      return Buffer.concat([valid, tag(field?.number ?? 1, WIRE.VARINT), Buffer.alloc(dice.between(10, 12), 0xff), Buffer.from([0x01])]);
    case "length-past-end":
      return Buffer.concat([valid, tag(field?.number ?? 1, WIRE.LEN), varint(dice.between(5, 1000)), dice.bytes(dice.int(4))]);
    case "huge-length":
      return Buffer.concat([valid, tag(field?.number ?? 1, WIRE.LEN), varint(dice.pick([2n ** 31n, 2n ** 32n - 1n, 2n ** 63n, 2n ** 64n - 1n]))]);
    case "field-number-0":
      return Buffer.concat([valid, tag(0, dice.pick([0, 2])), Buffer.from([0x01, 0x01])]);
    case "reserved-wire-type":
      return Buffer.concat([valid, tag(field?.number ?? 1, dice.pick([6, 7])), dice.bytes(4)]);
    case "unmatched-end-group":
      return Buffer.concat([valid, tag(dice.between(1, 20), WIRE.EGROUP)]);
    case "deep-groups": {
      // Unknown groups nested tens of thousands deep: a recursive skip() overflows the stack.
      const depth = dice.pick([1_000, 20_000, 100_000]);
      const number = 1_000;
      return Buffer.concat([valid, Buffer.concat(Array.from({ length: depth }, () => tag(number, WIRE.SGROUP))), Buffer.concat(Array.from({ length: depth }, () => tag(number, WIRE.EGROUP)))]);
    }
    case "deep-length-nesting": {
      // A message field nested in itself (as unknown fields of the submessage) many times.
      const number = desc.fields.find((f) => f.fieldKind === "message")?.number ?? 1;
      let inner: Buffer = Buffer.alloc(0);
      for (let i = dice.pick([100, 1_000, 5_000]); i > 0; i--) inner = Buffer.concat([tag(number, WIRE.LEN), varint(inner.length), inner]);
      return Buffer.concat([valid, inner]);
    }
    case "duplicate-concat":
      // Valid protobuf: the fields of both, the last scalar wins, messages merge.
      return Buffer.concat([valid, other]);
    case "noise":
      return dice.bytes(dice.pick([1, 2, 5, 17, 100, 1000, 4096]));
    case "empty":
      return Buffer.alloc(0);
  }
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

const JSON_VALUES = ["null", "true", "0", "-0", "1e400", "-1e400", "1.5", "\"\"", "\"NaN\"", "\"Infinity\"", "[]", "{}", "[1,2,3]", "{\"a\":1}", "\"9223372036854775808\"", "\"-9223372036854775809\"", "\"18446744073709551616\"", "\"1e3\"", "\"0x10\"", "\"NOPE\"", "2147483648", "\"\\u0000\"", "\"\\ud800\"", "\"9999-12-31T23:59:59.999999999Z\"", "\"10000-01-01T00:00:00Z\"", "\"0000-01-01T00:00:00Z\"", "\"315576000001s\"", "\"-1s\"", "\"1.0000000001s\""];

/** JSON text for a request of type `desc`, valid JSON or not. */
export function mutateJson(dice: Dice, desc: DescMessage, validJson: string): string {
  const names = desc.fields.flatMap((f) => [f.jsonName, f.name]);
  const key = () => (names.length > 0 && dice.chance(0.8) ? dice.pick(names) : dice.pick(["__proto__", "constructor", "unknownField", "", "@type", "a".repeat(1000)]));
  const value = () => (dice.chance(0.9) ? dice.pick(JSON_VALUES) : JSON.stringify(dice.pick(["x".repeat(100_000), "日本", "\u0000"])));
  const body = validJson.trim().replace(/^\{/, "").replace(/\}$/, "");
  const sep = body === "" ? "" : ",";
  switch (dice.int(10)) {
    case 0:
      return `{${body}${sep}${JSON.stringify(key())}:${value()}}`;
    case 1:
      // Duplicate key: the same field twice with different types.
      return `{${JSON.stringify(key())}:${value()},${body}${sep}${JSON.stringify(key())}:${value()}}`;
    case 2:
      return validJson.slice(0, dice.int(validJson.length + 1));
    case 3: {
      const depth = dice.pick([100, 5_000, 100_000]);
      return `{${JSON.stringify(key())}:${"[".repeat(depth)}${"]".repeat(depth)}}`;
    }
    case 4: {
      const depth = dice.pick([100, 5_000]);
      return `{${`${JSON.stringify(key())}:{`.repeat(depth)}${"}".repeat(depth)}}`;
    }
    case 5:
      return dice.pick(["", "null", "[]", "\"str\"", "1", "true", "{", "}", "{\"a\"", "\ufeff{}", "{}{}", "{}garbage", "{\"__proto__\":{\"polluted\":true}}"]);
    case 6:
      return `{${JSON.stringify(key())}:${value()}}`;
    default: {
      // Change one existing value's type.
      try {
        const parsed = JSON.parse(validJson) as Record<string, unknown>;
        const keys = Object.keys(parsed);
        if (keys.length === 0) return `{${JSON.stringify(key())}:${value()}}`;
        const k = dice.pick(keys);
        const rest = keys.filter((x) => x !== k).map((x) => `${JSON.stringify(x)}:${JSON.stringify(parsed[x])}`);
        return `{${[...rest, `${JSON.stringify(k)}:${value()}`].join(",")}}`;
      } catch {
        return validJson;
      }
    }
  }
}
