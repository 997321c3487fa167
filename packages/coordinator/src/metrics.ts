/**
 * Prometheus metrics of one coordinator (its own registry, so several coordinators in one
 * process do not share counters). Refusals are counted per code, so an operator sees *why*
 * activations fail without reading logs.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface CoordinatorMetrics {
  readonly registry: Registry;
  readonly activations: Counter<'workload' | 'result'>;
  readonly refusals: Counter<'code'>;
  readonly activationSeconds: Histogram;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly manifestUpdates: Counter;
  readonly instancesPurged: Counter;
}

export function createMetrics(): CoordinatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'cloister_coordinator_' });
  return {
    registry,
    activations: new Counter({
      name: 'cloister_activations_total',
      help: 'Activation requests by workload and result (ok, refused).',
      labelNames: ['workload', 'result'],
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'cloister_activation_refusals_total',
      help: 'Refused activations by error code.',
      labelNames: ['code'],
      registers: [registry],
    }),
    activationSeconds: new Histogram({
      name: 'cloister_activation_duration_seconds',
      help: 'Time to verify evidence and issue an activation bundle.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'cloister_http_requests_total',
      help: 'HTTP requests by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    }),
    manifestUpdates: new Counter({
      name: 'cloister_manifest_transitions_total',
      help: 'Accepted manifest transitions.',
      registers: [registry],
    }),
    instancesPurged: new Counter({
      name: 'cloister_instances_purged_total',
      help: 'Instances deleted because they expired more than the retention period ago.',
      registers: [registry],
    }),
  };
}
