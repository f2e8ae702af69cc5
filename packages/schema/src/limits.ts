/**
 * Limits the schema's CHECK constraints enforce, exported so that services validate
 * input with the same numbers (a client's bad value must be INVALID_ARGUMENT from the
 * service, not a constraint violation surfacing as INTERNAL).
 */

/** skus_code_format: 1..64 characters. */
export const SKU_CODE_MAX_LENGTH = 64;
/** skus_code_format: starts with a letter or digit, then letters, digits and `. _ : / -`. */
export const SKU_CODE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/;
/** skus_name_length: at most 256 characters, not blank. */
export const SKU_NAME_MAX_LENGTH = 256;
/** customer ids, callers and request ids: 1..256 characters. */
export const IDENTIFIER_MAX_LENGTH = 256;
/** idempotency_records_status_code_valid: a gRPC status code. */
export const GRPC_STATUS_CODE_MAX = 16;

/** True when `code` satisfies the skus_code_format constraint. */
export function isValidSkuCode(code: string): boolean {
  return code.length >= 1 && code.length <= SKU_CODE_MAX_LENGTH && SKU_CODE_PATTERN.test(code);
}
