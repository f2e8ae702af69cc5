# syntax=docker/dockerfile:1
# One image recipe for both services: docker build --build-arg SERVICE=expiry-worker .
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY packages ./packages
COPY services ./services
# The embedded PostgreSQL is for local development only: skip its install script.
RUN npm ci --no-audit --no-fund --ignore-scripts
ARG SERVICE=reservation-service
RUN npx tsc -b services/${SERVICE} packages/schema

FROM ${NODE_IMAGE} AS runtime
ARG SERVICE=reservation-service
ENV NODE_ENV=production HOLDFAST_SERVICE=${SERVICE}
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=build /app/packages/contracts/package.json /app/packages/contracts/descriptors.binpb ./packages/contracts/
COPY --from=build /app/packages/contracts/dist ./packages/contracts/dist
COPY --from=build /app/packages/runtime/package.json ./packages/runtime/
COPY --from=build /app/packages/runtime/dist ./packages/runtime/dist
COPY --from=build /app/packages/schema/package.json ./packages/schema/
COPY --from=build /app/packages/schema/dist ./packages/schema/dist
COPY --from=build /app/services/${SERVICE}/package.json ./services/${SERVICE}/
COPY --from=build /app/services/${SERVICE}/dist ./services/${SERVICE}/dist
RUN npm ci --no-audit --no-fund --omit=dev --ignore-scripts \
      --workspace=@holdfast/${SERVICE} --workspace=@holdfast/schema \
      --workspace=@holdfast/runtime --workspace=@holdfast/contracts \
 && npm cache clean --force
USER node
# 50051 gRPC + 8080 Connect/gRPC-Web (reservation-service); 50052 gRPC + 9464 metrics (expiry-worker).
EXPOSE 50051 8080 50052 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD node -e "const p=process.env.HOLDFAST_SERVICE==='expiry-worker'?(process.env.WORKER_HTTP_PORT||9464):(process.env.HTTP_PORT||8080);fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["sh", "-c", "exec node --enable-source-maps services/${HOLDFAST_SERVICE}/dist/main.js"]
