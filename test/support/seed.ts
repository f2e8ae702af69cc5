// Seeding lives in dev-stack so that the benchmarks use it too.
export { seedHolds, type SeededHold } from "@holdfast/dev-stack";
