import { fileURLToPath } from "node:url";

/**
 * Path of the binary FileDescriptorSet of every proto in proto/ (with source
 * info, so doc comments survive), written by `npm run generate` (`buf build`).
 * Server reflection serves it.
 */
export const descriptorSetPath = fileURLToPath(new URL("../descriptors.binpb", import.meta.url));
