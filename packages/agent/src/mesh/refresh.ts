/**
 * Keeps a running mesh proxy's ingress allow-lists in step with the manifest (docs/mesh.md
 * "Manifest updates"): an update that revokes a workload's egress must take effect at the
 * running agents of its target, not at their next restart.
 *
 * Only who may use an existing ingress listener is applied live. Listeners added, removed or
 * retargeted, egress routes changed, and `external` granted to a listener started without it
 * are reported as needing a restart: the listeners and the program's ports stay as they are.
 * When the manifest cannot be read, or no longer names this workload, the allow-lists in force
 * stay (availability); the coordinator refuses to renew the certificate of a workload it no
 * longer knows, which ends its mesh access when the certificate expires.
 */
import type { ManifestResponse } from '@cloister/protocol';
import { isCloisterError } from '@cloister/errors';
import type { AgentLog } from '../run.js';
import type { IngressAccess, MeshProxy } from './proxy.js';
import { meshRoutes } from './routes.js';
import type { MeshRoutes, PeerMap } from './routes.js';

export interface MeshUpdatePlan {
  /** Who may use each running ingress listener, under the new manifest. */
  readonly access: IngressAccess[];
  /** What only a restart of the agent applies, in words. */
  readonly restart: string[];
}

/**
 * Compares the routes the proxy was started with to those of a new manifest. A listener the
 * new manifest removes admits nobody (nobody's egress may name it any more) until the restart
 * that closes it.
 */
export function planMeshUpdate(started: MeshRoutes, next: MeshRoutes): MeshUpdatePlan {
  const restart: string[] = [];
  const access: IngressAccess[] = started.ingress.map((r) => {
    const n = next.ingress.find((x) => x.port === r.port);
    if (n === undefined) restart.push(`ingress ${r.port} removed (it admits nobody meanwhile)`);
    else if (n.to !== r.to) restart.push(`ingress ${r.port} now forwards to port ${n.to}`);
    if (n?.external === true && r.external !== true)
      restart.push(`ingress ${r.port} now admits clients without a certificate`);
    return {
      port: r.port,
      allow: n?.allow ?? [],
      external: n?.external === true && r.external === true,
    };
  });
  for (const n of next.ingress) {
    if (!started.ingress.some((r) => r.port === n.port)) restart.push(`ingress ${n.port} added`);
  }
  const egress = (routes: MeshRoutes) =>
    routes.egress.map((e) => `egress ${e.listen} to ${e.workload} at ${e.host}:${e.port}`);
  const before = egress(started);
  const after = egress(next);
  for (const e of before) if (!after.includes(e)) restart.push(`${e} removed`);
  for (const e of after) if (!before.includes(e)) restart.push(`${e} added`);
  return { access, restart };
}

export interface MeshRefresherOptions {
  /** Reads the manifest from the coordinator (authenticated, pinned to the root CA). */
  readonly fetch: (signal: AbortSignal) => Promise<ManifestResponse>;
  readonly workload: string;
  readonly peers?: PeerMap;
  /** Bind address of the ingress listeners, as `meshRoutes` takes it. */
  readonly bind?: string;
  /** The manifest the proxy was started from, and its routes. */
  readonly started: { readonly manifestHash: string; readonly seq: number };
  readonly routes: MeshRoutes;
  /** The running proxy; undefined when the workload had no mesh routes at start. */
  readonly proxy?: Pick<MeshProxy, 'updateRoutes'>;
  readonly log: AgentLog;
}

export interface MeshRefresher {
  /**
   * Reads the manifest and applies what changed; never rejects. Refreshes run one at a time,
   * and a call while one waits joins it (it starts after the call, so it reads a manifest at
   * least as new).
   */
  refresh(): Promise<void>;
  /** Aborts the refresh in flight, applies nothing more; resolves once it has ended. */
  stop(): Promise<void>;
}

/** Re-reads the manifest on request and swaps the proxy's allow-lists when they changed. */
export function meshRefresher(o: MeshRefresherOptions): MeshRefresher {
  let seen = { manifestHash: o.started.manifestHash, seq: o.started.seq };
  let applied = JSON.stringify(planMeshUpdate(o.routes, o.routes).access);
  let stopped = false;
  const abort = new AbortController();
  let tail: Promise<void> = Promise.resolve();
  let waiting = false;

  // A failed fetch (or anything else) is reported by `refresh`, which never rejects.
  const once = async (): Promise<void> => {
    const answer = await o.fetch(abort.signal);
    if (stopped || answer.manifestHash === seen.manifestHash) return;
    const at = { manifestHash: answer.manifestHash, seq: answer.seq };
    // History only grows: an answer older than the manifest already applied (a stale replica
    // or cache) must not bring back a permission a newer manifest revoked.
    if (answer.seq < seen.seq) {
      o.log.warn('the coordinator answered with an older manifest; ignored', {
        ...at,
        appliedSeq: seen.seq,
      });
      return;
    }
    seen = at;
    let next: MeshRoutes;
    try {
      next = meshRoutes(answer.manifest, o.workload, o.peers ?? {}, o.bind);
    } catch (e) {
      o.log.warn(
        'the manifest no longer names this workload (or its routes); the mesh keeps its ' +
          'current allow-lists until a restart or until the certificate cannot be renewed',
        { ...at, code: isCloisterError(e) ? e.code : 'INTERNAL', reason: (e as Error).message },
      );
      return;
    }
    const plan = planMeshUpdate(o.routes, next);
    if (plan.restart.length > 0) {
      o.log.warn('the manifest changed the mesh routes; a restart of the agent applies it', {
        ...at,
        changes: plan.restart,
      });
    }
    const access = JSON.stringify(plan.access);
    if (access === applied || o.proxy === undefined) return;
    const closed = o.proxy.updateRoutes(plan.access);
    applied = access;
    o.log.info('mesh allow-lists updated', { ...at, ingress: plan.access, closed });
  };

  return {
    refresh() {
      if (stopped) return Promise.resolve();
      if (waiting) return tail;
      waiting = true;
      tail = tail
        .then(() => {
          waiting = false;
          return stopped ? undefined : once();
        })
        .catch((e: unknown) => {
          // After stop, the fetch was aborted on purpose.
          if (stopped) return;
          o.log.warn('manifest refresh failed; the mesh keeps its current allow-lists', {
            code: isCloisterError(e) ? e.code : 'INTERNAL',
          });
        });
      return tail;
    },
    async stop() {
      stopped = true;
      abort.abort();
      await tail;
    },
  };
}
