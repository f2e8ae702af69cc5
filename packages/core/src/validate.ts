/**
 * Input checks that the contract's annotations cannot make: each RPC collects every
 * violation of a request (one BadRequest listing all bad fields), then refuses it
 * before anything is read or written.
 *
 * The static limits of request fields (identifiers, ranges, lengths, list sizes, enum
 * values, required fields) are declared in proto/ as protovalidate annotations and
 * checked before a handler runs (@holdfast/runtime validateService); what is left here
 * is what depends on the caller, on settings, on other fields or on stored state, the
 * well-formedness of Duration and Timestamp values, and the fields of messages that
 * are also resources (Sku, SkuPolicy), which carry no annotations.
 */
import { durationMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument, type FieldViolation } from "@holdfast/runtime";
import { PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, isValidSkuCode } from "@holdfast/schema";

export class Violations {
  readonly list: FieldViolation[] = [];

  add(field: string, description: string): this {
    this.list.push({ field, description });
    return this;
  }

  /** Throws INVALID_ARGUMENT / BAD_REQUEST listing every violation, if any. */
  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }

  /** A field whose presence depends on the caller (e.g. customer_id for a service caller). */
  required(field: string, value: string): this {
    return value === "" ? this.add(field, "is required") : this;
  }

  sku(field: string, value: string, required = true): this {
    if (value === "") return required ? this.add(field, "is required") : this;
    if (!isValidSkuCode(value)) return this.add(field, "must be a SKU code: 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit");
    return this;
  }

  /** An enum field: one of the listed values (UNSPECIFIED = 0 allowed when `allowUnspecified`). */
  enumValue(field: string, value: number, allowed: readonly number[], allowUnspecified = true): this {
    if (value === 0 && allowUnspecified) return this;
    if (!allowed.includes(value)) this.add(field, `must be one of ${allowed.join(", ")}${allowUnspecified ? " or 0 (unspecified)" : ""}`);
    return this;
  }

  /** A Duration that protobuf itself considers well-formed (seconds and nanos of one sign, nanos < 1e9). */
  duration(field: string, value: Duration | undefined): number | undefined {
    if (value === undefined) return undefined;
    const { seconds, nanos } = value;
    if (nanos <= -1_000_000_000 || nanos >= 1_000_000_000 || (seconds > 0n && nanos < 0) || (seconds < 0n && nanos > 0)) {
      this.add(field, "is not a valid duration");
      return undefined;
    }
    if (seconds > 315_576_000_000n || seconds < -315_576_000_000n) {
      this.add(field, "is out of the range of a duration");
      return undefined;
    }
    return durationMs(value);
  }

  timestamp(field: string, value: Timestamp | undefined): Date | undefined {
    if (value === undefined) return undefined;
    // Timestamp range: 0001-01-01 to 9999-12-31 (google/protobuf/timestamp.proto).
    if (value.seconds < -62_135_596_800n || value.seconds > 253_402_300_799n || value.nanos < 0 || value.nanos > 999_999_999) {
      this.add(field, "is not a valid timestamp");
      return undefined;
    }
    return new Date(Number(value.seconds) * 1000 + Math.floor(value.nanos / 1_000_000));
  }
}

/** AIP-158 page size: 0 = default, above the maximum = the maximum. */
export function effectivePageSize(value: number): number {
  if (value === 0) return PAGE_SIZE_DEFAULT;
  return Math.min(value, PAGE_SIZE_MAX);
}
