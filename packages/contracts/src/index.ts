// The Holdfast APIs: holdfast.inventory.v1 and holdfast.worker.v1.
// Everything under gen/ is written by `npm run generate` (buf + protoc-gen-es); never edit it.
export * from "./gen/holdfast/inventory/v1/access_pb.js";
export * from "./gen/holdfast/inventory/v1/errors_pb.js";
export * from "./gen/holdfast/inventory/v1/resources_pb.js";
export * from "./gen/holdfast/inventory/v1/service_pb.js";
export * from "./gen/holdfast/worker/v1/worker_pb.js";
