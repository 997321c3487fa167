/**
 * The agent's mTLS proxy, for programs that do not speak TLS themselves.
 *
 * - Ingress: a TLS 1.3 listener on `port` that requires a mesh certificate chaining to the
 *   Cloister root CA and whose SPIFFE ID names a workload allowed to call this one (a workload
 *   whose egress names it); the plaintext goes to `127.0.0.1:<to>`, where the program listens.
 *   With `external: true`, clients presenting no certificate are let in too (they authenticate
 *   us, by the root CA saved by `cloister verify`); a client presenting a certificate must
 *   still pass the mesh checks.
 * - Egress: a plaintext listener on a loopback address; each connection is carried over mTLS
 *   to the target workload's ingress, whose certificate must carry the target's SPIFFE ID.
 *
 * Bytes flow through `stream.pipeline` in both directions (backpressure, error teardown),
 * half-close is propagated (each direction ends on its own), and idle, handshake and connect
 * timeouts bound what a slow or silent peer can hold. Certificates are swapped on renewal
 * without a restart: ingress servers get `setSecureContext`, egress builds each new connection
 * from the current context; connections already open keep theirs.
 *
 * Who may use an ingress is swapped without a restart too (`updateRoutes`, after a manifest
 * update): new connections are judged by the new allow-list, and open connections of a peer it
 * no longer admits are closed, so that a revoked workload loses its access at once.
 */
import { constants as tlsConstants } from 'node:crypto';
import { connect as netConnect, createServer as createNetServer, isIP } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { pipeline } from 'node:stream';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as createTlsServer,
} from 'node:tls';
import type { PeerCertificate, SecureContext, Server as TlsServer, TLSSocket } from 'node:tls';
import { agentError } from '../error-codes.js';
import { spiffeId, spiffeIdOfCert, workloadOf } from './spiffe.js';

/** The agent's mesh identity: PEM key, PEM chain (leaf first), PEM root CA(s) to trust. */
export interface MeshCredentials {
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
}

export interface IngressRoute {
  /** TLS port to listen on (0 picks a free port, for tests). */
  readonly port: number;
  /** Local port of the program. */
  readonly to: number;
  /** Accept clients without a certificate (external users). */
  readonly external?: boolean;
  /** Workloads allowed in (those whose egress names this workload). */
  readonly allow: readonly string[];
  /** Address to bind (default `0.0.0.0`). */
  readonly bind?: string;
}

export interface EgressRoute {
  /** Loopback `host:port` the program connects to. */
  readonly listen: string;
  /** Target workload (its SPIFFE ID is required of the server). */
  readonly workload: string;
  /** Where the target's ingress is. */
  readonly host: string;
  readonly port: number;
}

/** Who may use a running ingress listener (`MeshProxy.updateRoutes`). */
export interface IngressAccess {
  /** The route's `port`, as the proxy was started with it. */
  readonly port: number;
  /** Workloads allowed in. */
  readonly allow: readonly string[];
  /** Admit clients without a certificate; only a listener started `external` can. */
  readonly external?: boolean;
}

export type MeshEvent =
  | { type: 'accepted'; route: string; peer: string }
  | { type: 'refused'; route: string; reason: string; peer?: string }
  /** An open connection closed because its peer is no longer allowed in. */
  | { type: 'revoked'; route: string; peer: string }
  | { type: 'error'; route: string; reason: string };

export interface MeshProxyOptions {
  readonly trustDomain: string;
  readonly ingress: readonly IngressRoute[];
  readonly egress: readonly EgressRoute[];
  readonly credentials: MeshCredentials;
  readonly handshakeTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly onEvent?: (e: MeshEvent) => void;
}

export interface MeshProxy {
  /** Bound addresses, in the order of the routes. */
  readonly ingress: readonly AddressInfo[];
  readonly egress: readonly AddressInfo[];
  /** Uses new certificates for every connection opened from now on. */
  updateCredentials(credentials: MeshCredentials): void;
  /**
   * Swaps the allow-lists of the named ingress listeners, all at once, and closes the open
   * connections of peers they no longer admit; returns how many it closed. Throws
   * AGENT_MESH_CONFIG_INVALID, and swaps nothing, for a port the proxy does not listen on or
   * `external` on a listener started without it (its TLS server demands certificates).
   */
  updateRoutes(access: readonly IngressAccess[]): number;
  /** Stops listening and tears down open connections. */
  close(): Promise<void>;
}

/** Splits `host:port` / `[v6]:port`. */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  const host = m?.[1] ?? m?.[2];
  if (m === null || host === undefined || !Number.isInteger(port) || port > 65535) {
    throw agentError('AGENT_MESH_CONFIG_INVALID', `not a host:port address: ${s}`, {
      details: { field: 'listen', actual: s },
    });
  }
  return { host, port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function contextOptions(c: MeshCredentials) {
  return { key: c.key, cert: c.cert, ca: c.ca, minVersion: 'TLSv1.3' as const };
}

/**
 * Listens; a failure to start rejects. A listener's later errors (an accept failing) go to
 * `later`: an 'error' event without a handler would end the agent, and the program with it.
 */
function listen(
  server: NetServer,
  port: number,
  host: string,
  route: string,
  later: (e: Error) => void,
): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => {
      reject(
        agentError('AGENT_MESH_LISTEN_FAILED', `${route}: cannot listen on ${host}:${port}`, {
          cause: e,
          details: { route, host, port },
        }),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      server.on('error', later);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Starts every ingress and egress listener; rejects (and closes what started) on any failure. */
export async function startMeshProxy(options: MeshProxyOptions): Promise<MeshProxy> {
  const td = options.trustDomain;
  const emit = options.onEvent ?? (() => undefined);
  const idleMs = options.idleTimeoutMs ?? 300_000;
  const handshakeMs = options.handshakeTimeoutMs ?? 10_000;
  const connectMs = options.connectTimeoutMs ?? 10_000;
  let credentials = options.credentials;
  let clientContext: SecureContext = createSecureContext(contextOptions(credentials));
  const sockets = new Set<Socket>();
  const tlsServers: TlsServer[] = [];
  const servers: NetServer[] = [];

  const track = (s: Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  /** Joins two sockets both ways; either failing or idling tears down both. */
  const splice = (a: Socket, b: Socket): void => {
    const kill = () => {
      a.destroy();
      b.destroy();
    };
    // Two pipelines, tracking and timers put a fixed dozen 'close' listeners on one socket:
    // bounded per connection, not a leak, so raise the warning threshold for these sockets.
    a.setMaxListeners(24);
    b.setMaxListeners(24);
    a.setTimeout(idleMs, kill);
    b.setTimeout(idleMs, kill);
    let open = 2;
    const done = (err?: Error | null) => {
      if (err) kill();
      else if (--open === 0) kill();
    };
    pipeline(a, b, done);
    pipeline(b, a, done);
  };

  for (const route of options.egress) {
    const { host } = parseHostPort(route.listen);
    // A non-loopback egress listener would let any host on the network speak to the target
    // with this workload's identity (confused deputy): only loopback is allowed.
    if (!isLoopback(host)) {
      throw agentError(
        'AGENT_MESH_CONFIG_INVALID',
        `egress listener ${route.listen} is not a loopback address`,
        { details: { field: 'egress.listen', actual: route.listen } },
      );
    }
  }

  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  };

  /**
   * Per ingress listener: who may use it now and its open connections with their peer (the
   * workload, or undefined for a client without a certificate).
   */
  const listeners: {
    readonly route: IngressRoute;
    readonly name: string;
    allowed: ReadonlySet<string>;
    external: boolean;
    readonly open: Map<TLSSocket, string | undefined>;
  }[] = [];

  const ingressAddrs: AddressInfo[] = [];
  const egressAddrs: AddressInfo[] = [];
  try {
    for (const route of options.ingress) {
      const name = `ingress:${route.port}`;
      const live = {
        route,
        name,
        allowed: new Set(route.allow) as ReadonlySet<string>,
        external: route.external === true,
        open: new Map<TLSSocket, string | undefined>(),
      };
      listeners.push(live);
      const server = createTlsServer({
        ...contextOptions(credentials),
        requestCert: true,
        // Mesh-only ingress: no certificate, or one not from our CA, fails in the handshake.
        rejectUnauthorized: route.external !== true,
        handshakeTimeout: handshakeMs,
        allowHalfOpen: true,
        // No session tickets, hence no resumption: a resumed session skips the certificate
        // check, so a peer whose certificate has expired since could come back for the
        // ticket's lifetime (300 s). Every connection does a full handshake and its
        // certificate is judged now.
        secureOptions: tlsConstants.SSL_OP_NO_TICKET,
      });
      server.on('connection', track);
      // With a listener here Node leaves the socket open: destroy it, or a client that never
      // finishes its handshake would hold the connection forever (slowloris).
      server.on('tlsClientError', (e, socket) => {
        socket.destroy();
        emit({ type: 'refused', route: name, reason: e.message });
      });
      server.on('secureConnection', (s: TLSSocket) => {
        track(s);
        const refuse = (reason: string, peer?: string) => {
          emit(
            peer === undefined
              ? { type: 'refused', route: name, reason }
              : { type: 'refused', route: name, reason, peer },
          );
          s.destroy();
        };
        // Judged by the allow-list in force now: `updateRoutes` may have swapped it since the
        // listener started.
        const cert = s.getPeerCertificate();
        let peer: string | undefined;
        if (cert.raw === undefined) {
          if (!live.external) return refuse('no client certificate');
        } else {
          // A certificate is checked even on an external ingress: one not from our CA is an
          // impersonation attempt, not an anonymous client.
          if (!s.authorized)
            return refuse(`untrusted certificate: ${String(s.authorizationError)}`);
          const id = spiffeIdOfCert(cert.raw);
          const w = workloadOf(id, td);
          // Stops a valid mesh workload that this one does not expect from reaching it.
          if (w === null || !live.allowed.has(w))
            return refuse('workload not allowed', id ?? 'none');
          peer = w;
        }
        emit({ type: 'accepted', route: name, peer: peer ?? 'external' });
        live.open.set(s, peer);
        s.once('close', () => live.open.delete(s));
        const backend = netConnect({ host: '127.0.0.1', port: route.to, allowHalfOpen: true });
        track(backend);
        splice(s, backend);
      });
      servers.push(server);
      tlsServers.push(server);
      ingressAddrs.push(
        await listen(server, route.port, route.bind ?? '0.0.0.0', name, (e) =>
          emit({ type: 'error', route: name, reason: e.message }),
        ),
      );
    }

    for (const route of options.egress) {
      const name = `egress:${route.listen}`;
      const { host, port } = parseHostPort(route.listen);
      const want = spiffeId(td, route.workload);
      const server = createNetServer({ allowHalfOpen: true }, (local) => {
        track(local);
        // The TCP socket is made first so it is half-open capable; TLS wraps it.
        const tcp = netConnect({ host: route.host, port: route.port, allowHalfOpen: true });
        track(tcp);
        const remote = tlsConnect({
          socket: tcp,
          secureContext: clientContext,
          ...(isIP(route.host) === 0 ? { servername: route.host } : {}),
          minVersion: 'TLSv1.3',
          rejectUnauthorized: true,
          // Replaces host-name checks: the peer must prove the target workload's identity, so
          // a redirected connection (DNS, --peer map, routing) reaches nobody else.
          checkServerIdentity: (_host: string, c: PeerCertificate) => {
            const got = spiffeIdOfCert(c.raw);
            return got === want
              ? undefined
              : new Error(`server is ${got ?? 'no SPIFFE ID'}, expected ${want}`);
          },
        });
        track(remote);
        const timer = setTimeout(() => {
          emit({ type: 'error', route: name, reason: 'connect timeout' });
          remote.destroy();
          tcp.destroy();
          local.destroy();
        }, connectMs);
        remote.once('secureConnect', () => {
          clearTimeout(timer);
          emit({ type: 'accepted', route: name, peer: route.workload });
        });
        remote.once('error', (e: Error) => {
          clearTimeout(timer);
          emit({ type: 'refused', route: name, reason: e.message, peer: route.workload });
        });
        remote.once('close', () => clearTimeout(timer));
        splice(local, remote);
      });
      servers.push(server);
      const bound = await listen(server, port, host, name, (e) =>
        emit({ type: 'error', route: name, reason: e.message }),
      );
      // "localhost" is resolved through the host's resolver (/etc/hosts), which the untrusted
      // host controls: check where the listener actually is, not the name it was given.
      if (!isLoopback(bound.address)) {
        throw agentError(
          'AGENT_MESH_CONFIG_INVALID',
          `egress listener ${route.listen} resolved to ${bound.address}, not a loopback address`,
          { details: { field: 'egress.listen', actual: route.listen, address: bound.address } },
        );
      }
      egressAddrs.push(bound);
    }
  } catch (e) {
    await close();
    throw e;
  }

  return {
    ingress: ingressAddrs,
    egress: egressAddrs,
    updateCredentials(next) {
      const opts = contextOptions(next);
      const ctx = createSecureContext(opts); // throws on a bad key/cert: nothing swapped
      for (const s of tlsServers) s.setSecureContext(opts);
      clientContext = ctx;
      credentials = next;
    },
    updateRoutes(access) {
      const targets = access.map((a) => {
        const found = listeners.filter((l) => l.route.port === a.port);
        if (found.length === 0) {
          throw agentError('AGENT_MESH_CONFIG_INVALID', `no ingress listener on port ${a.port}`, {
            details: { port: a.port },
          });
        }
        if (a.external === true && found.some((l) => l.route.external !== true)) {
          throw agentError(
            'AGENT_MESH_CONFIG_INVALID',
            `ingress ${a.port} was started without external: a restart admits external clients`,
            { details: { port: a.port } },
          );
        }
        return { a, found };
      });
      for (const { a, found } of targets) {
        for (const l of found) {
          l.allowed = new Set(a.allow);
          l.external = a.external === true;
        }
      }
      // A revoked workload must not keep the access it already had: a connection it opened
      // before the manifest update would otherwise last as long as it kept it busy.
      let closed = 0;
      for (const l of listeners) {
        for (const [s, peer] of l.open) {
          if (peer === undefined ? l.external : l.allowed.has(peer)) continue;
          l.open.delete(s);
          emit({ type: 'revoked', route: l.name, peer: peer ?? 'external' });
          s.destroy();
          closed++;
        }
      }
      return closed;
    },
    close,
  };
}
