/**
 * Input checks shared by every RPC: each collects every violation of a request (one
 * BadRequest listing all bad fields), then refuses it before anything is read or
 * written. The limits are the contract's (proto comments), exported by
 * @holdfast/schema so that they also match the database's CHECKs.
 */
import { durationMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { invalidArgument, type FieldViolation } from "@holdfast/runtime";
import {
  CUSTOMER_ID_MAX_LENGTH,
  PAGE_SIZE_DEFAULT,
  PAGE_SIZE_MAX,
  QUANTITY_MAX,
  REASON_MAX_LENGTH,
  REQUEST_ID_MAX_LENGTH,
  UUID_PATTERN,
  isValidCustomerId,
  isValidQuantity,
  isValidRequestId,
  isValidSkuCode,
} from "@holdfast/schema";

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

  requestId(field: string, value: string): this {
    if (value === "") return this.add(field, "is required");
    if (!isValidRequestId(value)) return this.add(field, `must be 1-${REQUEST_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : -`);
    return this;
  }

  sku(field: string, value: string, required = true): this {
    if (value === "") return required ? this.add(field, "is required") : this;
    if (!isValidSkuCode(value)) return this.add(field, "must be a SKU code: 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit");
    return this;
  }

  skuList(field: string, values: readonly string[], min: number, max: number): this {
    if (values.length < min) this.add(field, `must name at least ${min} SKU${min === 1 ? "" : "s"}`);
    if (values.length > max) return this.add(field, `must name at most ${max} SKUs`);
    values.forEach((v, i) => this.sku(`${field}[${i}]`, v));
    return this;
  }

  customerId(field: string, value: string, required = true): this {
    if (value === "") return required ? this.add(field, "is required") : this;
    if (!isValidCustomerId(value)) return this.add(field, `must be 1-${CUSTOMER_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : @ -`);
    return this;
  }

  uuid(field: string, value: string): this {
    if (value === "") return this.add(field, "is required");
    if (!UUID_PATTERN.test(value)) return this.add(field, "must be a UUID in canonical lowercase form");
    return this;
  }

  optionalUuid(field: string, value: string): this {
    return value === "" ? this : this.uuid(field, value);
  }

  quantity(field: string, value: number): this {
    if (!isValidQuantity(value)) this.add(field, `must be between 1 and ${QUANTITY_MAX}`);
    return this;
  }

  reason(field: string, value: string, required: boolean): this {
    if (required && value.trim() === "") return this.add(field, "is required");
    if ([...value].length > REASON_MAX_LENGTH) this.add(field, `must be at most ${REASON_MAX_LENGTH} characters`);
    else if (value.includes("\u0000")) this.add(field, "must not contain NUL characters");
    return this;
  }

  pageSize(field: string, value: number): this {
    if (value < 0) this.add(field, "must not be negative");
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
