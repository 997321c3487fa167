/**
 * Derives the proxy routes of one workload from the manifest.
 *
 * - Ingress rule `{port, to}` of workload W admits exactly the workloads whose egress names
 *   `{workload: W, port}`: a mesh peer that the manifest does not connect to W is refused even
 *   though its certificate is valid (lateral movement from a compromised workload).
 *   `external: true` on an ingress rule also admits clients without a certificate.
 * - Egress rule `{listen, workload: T, port}` dials T's ingress. Where T runs is not in the
 *   manifest (it depends on the orchestrator): the peer map says, from `--peer T=HOST[:PORT]` or
 *   `CLOISTER_PEERS="T=HOST[:PORT],..."`; without an entry the host is the workload name (a
 *   Kubernetes Service of that name) and the port the manifest's. The map is untrusted input:
 *   whoever answers there must still prove T's SPIFFE ID.
 */
import type { Manifest } from '@cloister/protocol';
import { agentError } from '../error-codes.js';
import type { EgressRoute, IngressRoute } from './proxy.js';

export interface PeerAddress {
  readonly host: string;
  readonly port?: number;
}
export type PeerMap = Readonly<Record<string, PeerAddress>>;

/** The environment variable holding a peer map. */
export const PEERS_ENV = 'CLOISTER_PEERS';

/** Parses `NAME=HOST[:PORT]` entries (from repeated `--peer` or a comma-separated env value). */
export function parsePeers(entries: readonly string[]): PeerMap {
  const out: Record<string, PeerAddress> = {};
  for (const raw of entries
    .flatMap((e) => e.split(','))
    .map((e) => e.trim())
    .filter(Boolean)) {
    const m =
      /^([A-Za-z][A-Za-z0-9_-]{0,62})=(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(
        raw,
      );
    const port = m?.[3] === undefined ? undefined : Number(m[3]);
    if (m === null || (port !== undefined && (port < 1 || port > 65535))) {
      throw agentError('AGENT_USAGE', `bad peer entry "${raw}": expected NAME=HOST[:PORT]`, {
        details: { entry: raw },
      });
    }
    const host = (m[2] as string).replace(/^\[|\]$/g, '');
    out[m[1] as string] = port === undefined ? { host } : { host, port };
  }
  return out;
}

export interface MeshRoutes {
  readonly ingress: IngressRoute[];
  readonly egress: EgressRoute[];
}

/** The routes of `workload`; `bind` is the ingress bind address. */
export function meshRoutes(
  manifest: Manifest,
  workload: string,
  peers: PeerMap = {},
  bind?: string,
): MeshRoutes {
  const self = Object.hasOwn(manifest.workloads, workload)
    ? manifest.workloads[workload]
    : undefined;
  if (self === undefined) {
    throw agentError('AGENT_MESH_CONFIG_INVALID', `the manifest has no workload ${workload}`, {
      details: { workload },
    });
  }
  const ingress: IngressRoute[] = (self.mesh?.ingress ?? []).map((rule) => {
    const allow = Object.entries(manifest.workloads)
      .filter(([, w]) =>
        (w.mesh?.egress ?? []).some((e) => e.workload === workload && e.port === rule.port),
      )
      .map(([name]) => name)
      .sort();
    const external = (rule as { external?: unknown }).external === true;
    return {
      port: rule.port,
      to: rule.to,
      allow,
      ...(external ? { external } : {}),
      ...(bind === undefined ? {} : { bind }),
    };
  });
  const egress: EgressRoute[] = (self.mesh?.egress ?? []).map((rule) => {
    if (!Object.hasOwn(manifest.workloads, rule.workload)) {
      throw agentError(
        'AGENT_MESH_CONFIG_INVALID',
        `egress names unknown workload ${rule.workload}`,
        {
          details: { workload: rule.workload },
        },
      );
    }
    const p = Object.hasOwn(peers, rule.workload) ? peers[rule.workload] : undefined;
    return {
      listen: rule.listen,
      workload: rule.workload,
      host: p?.host ?? rule.workload,
      port: p?.port ?? rule.port,
    };
  });
  return { ingress, egress };
}
