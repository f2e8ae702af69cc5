/**
 * Stored values to contract values and back. The database stores enum values as their
 * names without prefix ("HELD"), which are also the member names of the generated
 * TypeScript enums; times are timestamptz, read as Dates.
 */
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** The enum value named `name` (a stored value such as "HELD"); UNSPECIFIED (0) for null. */
export function enumValue<E extends Record<string, string | number>>(e: E, name: string | null): E[keyof E] {
  if (name === null) return 0 as E[keyof E];
  const value = e[name];
  if (typeof value !== "number") throw new Error(`unknown enum value ${name}`);
  return value as E[keyof E];
}

/** The stored name of an enum value ("HELD"); null for UNSPECIFIED (0). */
export function enumName<E extends Record<string | number, string | number>>(e: E, value: number): string | null {
  if (value === 0) return null;
  const name = e[value];
  return typeof name === "string" ? name : null;
}

/** The numeric values of a generated enum, without UNSPECIFIED (0). */
export function enumNumbers(e: Record<string, string | number>): number[] {
  return Object.values(e).filter((v): v is number => typeof v === "number" && v !== 0);
}

/** Stored names ("HELD") of the requested enum values, distinct and sorted (filters are sets). */
export function storedNames(e: Record<string | number, string | number>, values: readonly number[]): string[] {
  return [...new Set(values.map((v) => enumName(e, v)).filter((n): n is string => n !== null))].sort();
}

export const ts = (date: Date): Timestamp => timestampFromDate(date);
export const tsOrUndefined = (date: Date | null): Timestamp | undefined => (date === null ? undefined : timestampFromDate(date));
