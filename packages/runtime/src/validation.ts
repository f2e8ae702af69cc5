import { getOption, hasOption, isFieldSet, type DescField, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createValidator, type Violation } from "@bufbuild/protovalidate";
import { RepeatedRulesSchema, StringRulesSchema, field as fieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { ErrorReason } from "@holdfast/contracts";
import { BadRequestSchema } from "@holdfast/contracts/rpc";
import { invalidArgument, type FieldViolation } from "./errors.js";

/**
 * One validator for the process: it compiles the rules of each message type
 * once, on first use, and keeps them.
 */
const validator = createValidator();

/**
 * One FieldViolation per broken rule: `field` the path in the request as the
 * contract writes it ("lines[2].quantity", "skus[0]", "change" for a oneof),
 * `description` protovalidate's message ("must be at most 64 characters";
 * "value is required" reads "is required", as after the field name in the
 * error message), `reason` the rule id ("string.max_len", "required").
 */
function fieldViolation(v: Violation): FieldViolation {
  return { field: pathToString(v.field), description: v.message.replace(/^value /, ""), reason: v.ruleId };
}

/**
 * The size limits of a message's fields (`string.max_len`, `repeated.max_items`,
 * the `max_len` of a list's strings) and the messages below it that have some,
 * read once from the annotations.
 */
interface SizePlan {
  strings: { field: DescField; maxLen: number }[];
  lists: { field: DescField; maxItems?: number; itemMaxLen?: number; itemPlan?: SizePlan }[];
  messages: { field: DescField; plan: SizePlan }[];
}

const sizePlans = new WeakMap<DescMessage, SizePlan | null>();

function sizePlan(schema: DescMessage): SizePlan | null {
  if (sizePlans.has(schema)) return sizePlans.get(schema)!;
  sizePlans.set(schema, null); // a message that contains itself adds nothing
  const plan: SizePlan = { strings: [], lists: [], messages: [] };
  for (const field of schema.fields) {
    if (field.oneof !== undefined) continue; // its value is under the oneof's name (none of ours has size limits)
    const rules = hasOption(field, fieldRules) ? getOption(field, fieldRules) : undefined;
    const maxLenOf = (r: typeof rules) => (r?.type.case === "string" && isFieldSet(r.type.value, StringRulesSchema.field.maxLen) ? Number(r.type.value.maxLen) : undefined);
    if (field.fieldKind === "scalar") {
      const maxLen = maxLenOf(rules);
      if (maxLen !== undefined) plan.strings.push({ field, maxLen });
    } else if (field.fieldKind === "list") {
      const repeated = rules?.type.case === "repeated" ? rules.type.value : undefined;
      const maxItems = repeated !== undefined && isFieldSet(repeated, RepeatedRulesSchema.field.maxItems) ? Number(repeated.maxItems) : undefined;
      const itemMaxLen = maxLenOf(repeated?.items);
      const itemPlan = field.listKind === "message" ? (sizePlan(field.message) ?? undefined) : undefined;
      if (maxItems !== undefined || itemMaxLen !== undefined || itemPlan !== undefined) plan.lists.push({ field, maxItems, itemMaxLen, itemPlan });
    } else if (field.fieldKind === "message") {
      const inner = sizePlan(field.message);
      if (inner !== null) plan.messages.push({ field, plan: inner });
    }
  }
  const result = plan.strings.length + plan.lists.length + plan.messages.length > 0 ? plan : null;
  sizePlans.set(schema, result);
  return result;
}

const tooManyItems = (path: string, max: number): FieldViolation => ({ field: path, description: `must contain no more than ${max} item(s)`, reason: "repeated.max_items" });
const tooLong = (path: string, max: number): FieldViolation => ({ field: path, description: `must be at most ${max} characters`, reason: "string.max_len" });

/**
 * The sizes that are over their limit by far: lists longer than max_items (their
 * elements not looked at), strings of more than twice max_len UTF-16 units (so
 * more than max_len characters, without counting them). protovalidate evaluates
 * every rule, a pattern over a whole string included: a caller must not be able
 * to make a server match a regular expression over megabytes, or check a million
 * elements of a list that may hold a thousand.
 */
function oversized(plan: SizePlan, message: Record<string, unknown>, prefix: string, found: FieldViolation[]): void {
  for (const { field, maxLen } of plan.strings) {
    if ((message[field.localName] as string).length > 2 * maxLen) found.push(tooLong(prefix + field.name, maxLen));
  }
  for (const { field, maxItems, itemMaxLen, itemPlan } of plan.lists) {
    const items = message[field.localName] as unknown[];
    if (maxItems !== undefined && items.length > maxItems) {
      found.push(tooManyItems(prefix + field.name, maxItems));
      continue;
    }
    items.forEach((item, i) => {
      if (itemMaxLen !== undefined && (item as string).length > 2 * itemMaxLen) found.push(tooLong(`${prefix}${field.name}[${i}]`, itemMaxLen));
      if (itemPlan !== undefined) oversized(itemPlan, item as Record<string, unknown>, `${prefix}${field.name}[${i}].`, found);
    });
  }
  for (const { field, plan: inner } of plan.messages) {
    const value = message[field.localName];
    if (value !== undefined) oversized(inner, value as Record<string, unknown>, `${prefix}${field.name}.`, found);
  }
}

/**
 * Throws INVALID_ARGUMENT / BAD_REQUEST if `request` breaks a rule its schema
 * declares. Sizes far over their limit are refused on that alone, first (see
 * `oversized`).
 */
export function validateRequest(schema: DescMessage, request: unknown): void {
  const plan = sizePlan(schema);
  if (plan !== null) {
    const found: FieldViolation[] = [];
    oversized(plan, request as Record<string, unknown>, "", found);
    if (found.length > 0) throw invalidArgument(found);
  }
  const result = validator.validate(schema, request as never);
  if (result.kind === "valid") return;
  // "error": a rule that cannot be compiled or evaluated, i.e. a bug in the
  // contract, not in the request: thrown as is (instrumentService answers INTERNAL).
  if (result.kind === "error") throw result.error;
  throw invalidArgument(result.violations.map(fieldViolation));
}

type AnyMethod = (request: unknown, context: HandlerContext) => unknown;

/**
 * Wraps every method of an implementation so that its request is checked
 * against the protovalidate rules declared in the contract (the
 * `buf.validate.field` annotations of the request messages) before the
 * implementation runs: a request that breaks one is INVALID_ARGUMENT /
 * BAD_REQUEST listing the broken rules (the first 20), and never reaches the
 * logic. Unary and server-streaming methods alike (a stream fails before its
 * first message). The checks that depend on settings, other fields or stored
 * state stay in the implementation.
 */
export function validateService<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceImpl<S> {
  const methods = impl as unknown as Record<string, AnyMethod>;
  const wrapped: Record<string, AnyMethod> = {};
  for (const method of service.methods) {
    const fn = methods[method.localName].bind(impl);
    const input = method.input;
    if (method.methodKind === "unary") {
      wrapped[method.localName] = async (request, context) => {
        validateRequest(input, request);
        return fn(request, context);
      };
    } else {
      wrapped[method.localName] = async function* (request, context) {
        validateRequest(input, request);
        yield* fn(request, context) as AsyncIterable<unknown>;
      };
    }
  }
  return wrapped as unknown as ServiceImpl<S>;
}
