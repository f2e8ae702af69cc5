# syntax=docker/dockerfile:1
# One recipe for both services:
#   docker build --build-arg SERVICE=reservation-service -t holdfast/reservation-service .
#   docker build --build-arg SERVICE=expiry-worker       -t holdfast/expiry-worker .
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY packages ./packages
COPY services ./services
# Install scripts are skipped: the only ones are for buf's and the embedded
# PostgreSQL's local-development binaries, which an image does not use.
RUN npm ci --no-audit --no-fund --ignore-scripts
ARG SERVICE=reservation-service
RUN npx tsc -b services/${SERVICE} packages/schema
# The reservation-service serves the dashboard page (/dashboard/): bundle it.
RUN if [ "${SERVICE}" = reservation-service ]; then npm run build:web -w @holdfast/dashboard; fi
# Keep what the service needs at run time: its production dependencies (and
# those of the workspace packages it uses) and the compiled output.
RUN rm -rf node_modules \
 && npm ci --no-audit --no-fund --omit=dev --ignore-scripts --workspace=@holdfast/${SERVICE} \
 && npm cache clean --force \
 && rm -rf packages/dev-stack packages/*/src services/*/src packages/*/tsconfig.json services/*/tsconfig.json packages/dashboard/web packages/dashboard/scripts

FROM ${NODE_IMAGE} AS runtime
ARG SERVICE=reservation-service
ENV NODE_ENV=production HOLDFAST_SERVICE=${SERVICE}
WORKDIR /app
COPY --from=build /app /app
USER node
# reservation-service: 50051 gRPC, 8080 Connect/gRPC-Web + /healthz + /metrics.
# expiry-worker: 50052 gRPC, 9464 /healthz + /metrics.
EXPOSE 50051 8080 50052 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD node -e "const w=process.env.HOLDFAST_SERVICE==='expiry-worker';const p=w?(process.env.WORKER_HTTP_PORT||9464):(process.env.HTTP_PORT||8080);fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# exec: the service is PID 1's direct replacement and receives SIGTERM itself.
# The node options are SERVICE_NODE_OPTIONS (packages/runtime/src/run-service.ts: why).
CMD ["sh", "-c", "exec node --enable-source-maps --max-semi-space-size=64 services/${HOLDFAST_SERVICE}/dist/main.js"]
