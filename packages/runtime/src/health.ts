import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ErrorReason } from "@holdfast/contracts";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "@holdfast/contracts/health";
import { rpcError } from "./errors.js";

export { ServingStatus };

/** The serving status of a server ("") and of each of its services. */
export class HealthStatus {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<() => void>();

  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const wake of this.watchers) wake();
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  all(): ReadonlyMap<string, ServingStatus> {
    return this.statuses;
  }

  /** Resolves at the next change of any status, or when `signal` aborts. */
  changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.watchers.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.watchers.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

/**
 * grpc.health.v1 (Check, List, Watch) over a HealthStatus.
 *
 * Ours rather than the grpc-health-check package because that one's Watch
 * streams never end: grpc-js's graceful shutdown then waits for the whole grace
 * period whenever a load balancer is watching. Here, when `stopping` aborts,
 * watchers get NOT_SERVING and then the stream ends with UNAVAILABLE
 * (SHUTTING_DOWN), and the drain finishes as soon as real calls have.
 */
export function healthService(health: HealthStatus, stopping: AbortSignal): ServiceImpl<typeof Health> {
  return {
    check({ service }) {
      const status = health.get(service);
      if (status === undefined) throw new ConnectError(`unknown service ${JSON.stringify(service)}`, Code.NotFound);
      return { status };
    },
    list() {
      return { statuses: Object.fromEntries([...health.all()].map(([name, status]) => [name, { status }])) };
    },
    async *watch({ service }, context) {
      let last: ServingStatus | undefined;
      const both = AbortSignal.any([context.signal, stopping]);
      for (;;) {
        const status = health.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
        if (status !== last) yield { status };
        last = status;
        if (stopping.aborted) throw rpcError(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "the server is shutting down; reconnect");
        if (context.signal.aborted) return;
        await health.changed(both);
      }
    },
  };
}
