// grpc.health.v1, for clients that probe either service.
export * from "./gen/grpc/health/v1/health_pb.js";
