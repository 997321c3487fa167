/**
 * HTTPS client of the coordinator API as the agent uses it.
 *
 * Trust: with `--root-ca` the coordinator's certificate must chain to that root and name the
 * host, like any TLS client. Without it (first contact, when the root is not yet known inside
 * the TEE) the agent records the certificate of every connection instead of verifying it, and
 * `assertPeersChainTo(root)` must be called once the bundle has been decrypted: every recorded
 * certificate must chain to the bundle's root CA and name the host, or the activation fails
 * closed and nothing is written. After that, `pin(root)` makes every later request (manifest,
 * renewal) verify against that root.
 *
 * What this gives: a network attacker who terminates TLS to read or alter the exchange is
 * detected, because it cannot present a certificate from the coordinator's root that the real
 * coordinator also put in the bundle (the bundle is encrypted to the agent's attested key, so
 * only a coordinator that verified our evidence can write it). What it cannot give: protection
 * against an impostor coordinator that answers everything itself (its own root, its own bundle);
 * such a coordinator can only hand out its own secrets and certificates, which no peer trusts.
 * Pass `--root-ca` (saved by `cloister verify`) to close that too.
 */
import { X509Certificate } from 'node:crypto';
import { request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { checkServerIdentity } from 'node:tls';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { namesCoordinator } from '@cloister/protocol';
import { agentError } from './error-codes.js';

const MAX_RESPONSE = 16 * 1024 * 1024;

export interface CoordinatorClientOptions {
  /** `https://host:port` of the coordinator. */
  readonly url: string;
  /** PEM root CA to verify the coordinator against; absent means first-contact mode. */
  readonly rootCa?: string;
  readonly timeoutMs?: number;
}

/** A problem+json refusal from the coordinator, as the agent reports it. */
export interface CoordinatorProblem {
  readonly status: number;
  readonly code?: string;
  readonly title?: string;
  readonly detail?: string;
  readonly details?: unknown;
}

const NOT_THE_COORDINATOR = 'ERR_CLOISTER_NOT_THE_COORDINATOR';
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * The host name check of a pinned connection, plus: the certificate must be the coordinator's
 * (the same rules as first contact): signed by a root itself and carrying the coordinator's
 * name (COORDINATOR_CERT_URI). The root also certifies the mesh CAs, whose workload leaves name
 * hosts such as `localhost`, and certificate secrets with whatever names the owner chose; a
 * workload holds those keys. Without this, such a workload with the network on its side could
 * answer for the coordinator.
 */
function coordinatorIdentity(
  rootCaPem: string,
): (host: string, cert: PeerCertificate) => Error | undefined {
  const roots = (rootCaPem.match(PEM_CERTIFICATE) ?? []).map((p) => new X509Certificate(p));
  return (host, cert) => {
    const err = checkServerIdentity(host, cert);
    if (err !== undefined) return err;
    const leaf = new X509Certificate(cert.raw);
    if (
      namesCoordinator(leaf.subjectAltName) &&
      roots.some((r) => leaf.checkIssued(r) && leaf.verify(r.publicKey))
    )
      return undefined;
    return Object.assign(new Error('not the coordinator certificate the root CA issued'), {
      code: NOT_THE_COORDINATOR,
    });
  };
}

export class CoordinatorClient {
  readonly url: URL;
  #rootCa: string | undefined;
  readonly #timeoutMs: number;
  readonly #seen = new Map<string, X509Certificate>();

  constructor(options: CoordinatorClientOptions) {
    let u: URL;
    try {
      u = new URL(options.url);
    } catch (cause) {
      throw agentError('AGENT_USAGE', `not a URL: ${options.url}`, { cause });
    }
    // Plain HTTP would expose the evidence exchange and let anyone swap the coordinator.
    if (u.protocol !== 'https:') {
      throw agentError('AGENT_USAGE', 'the coordinator URL must be https://', {
        details: { url: options.url },
      });
    }
    this.url = u;
    this.#rootCa = options.rootCa;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** True when requests are verified against a root CA. */
  get pinned(): boolean {
    return this.#rootCa !== undefined;
  }

  /** From now on verify every connection against `rootCaPem`. */
  pin(rootCaPem: string): void {
    this.#rootCa = rootCaPem;
  }

  /**
   * Checks every certificate seen in first-contact mode against `rootCaPem` (signature by the
   * root, validity now, host name). Throws AGENT_COORDINATOR_IDENTITY_MISMATCH otherwise.
   */
  assertPeersChainTo(rootCaPem: string, now = new Date()): void {
    let root: X509Certificate;
    try {
      root = new X509Certificate(rootCaPem);
    } catch (cause) {
      throw agentError('AGENT_BUNDLE_INVALID', 'the bundle root CA is not a certificate', {
        cause,
      });
    }
    for (const [fp, cert] of this.#seen) {
      const fail = (rule: string): never => {
        throw agentError(
          'AGENT_COORDINATOR_IDENTITY_MISMATCH',
          `the coordinator's TLS certificate ${rule}`,
          { details: { rule, fingerprint: fp, root: root.fingerprint256 } },
        );
      };
      if (!cert.checkIssued(root) || !cert.verify(root.publicKey))
        fail('is not issued by the root CA');
      // The root signs certificate secrets too, which workloads hold: only the coordinator's
      // carries its name.
      if (!namesCoordinator(cert.subjectAltName)) fail('is not the coordinator certificate');
      if (Date.parse(cert.validFrom) > now.getTime() || Date.parse(cert.validTo) < now.getTime()) {
        fail('is not valid now');
      }
      const host = this.url.hostname.replace(/^\[|\]$/g, '');
      const err = checkServerIdentity(host, cert.toLegacyObject());
      if (err !== undefined) fail(`does not name ${host}`);
    }
  }

  /**
   * With `--root-ca`: the bundle's root must be that root (one of them, if the file holds
   * several). Stops a coordinator of another deployment, with a certificate from a root the
   * operator also trusts, from provisioning this workload.
   */
  assertSameRoot(bundleRootPem: string): void {
    const pinned = this.#rootCa ?? '';
    const want = (
      pinned.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
    ).map((p) => new X509Certificate(p).fingerprint256);
    let got: string;
    try {
      got = new X509Certificate(bundleRootPem).fingerprint256;
    } catch (cause) {
      throw agentError('AGENT_BUNDLE_INVALID', 'the bundle root CA is not a certificate', {
        cause,
      });
    }
    if (!want.includes(got)) {
      throw agentError(
        'AGENT_COORDINATOR_IDENTITY_MISMATCH',
        'the bundle root CA is not the --root-ca the agent was given',
        { details: { rule: 'rootCa', expected: want, actual: got } },
      );
    }
  }

  /** POSTs JSON; resolves with the parsed JSON body of a 2xx answer. */
  postJson(path: string, body: unknown): Promise<unknown> {
    return this.#send('POST', path, JSON.stringify(body));
  }

  /** DELETEs with a JSON body; resolves with the parsed JSON body of a 2xx answer. */
  deleteJson(path: string, body: unknown): Promise<unknown> {
    return this.#send('DELETE', path, JSON.stringify(body));
  }

  /** GETs; resolves with the parsed JSON body of a 2xx answer. `signal` aborts the request. */
  getJson(path: string, signal?: AbortSignal): Promise<unknown> {
    return this.#send('GET', path, undefined, signal);
  }

  #send(
    method: string,
    path: string,
    body: string | undefined,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const target = new URL(path, this.url);
    const rootCa = this.#rootCa;
    return new Promise((resolve, reject) => {
      const req = request(
        target,
        {
          method,
          agent: false,
          timeout: this.#timeoutMs,
          ...(signal === undefined ? {} : { signal }),
          headers: {
            accept: 'application/json, application/problem+json',
            ...(body === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
          },
          ...(rootCa === undefined
            ? { rejectUnauthorized: false }
            : {
                ca: rootCa,
                rejectUnauthorized: true,
                checkServerIdentity: coordinatorIdentity(rootCa),
              }),
          minVersion: 'TLSv1.2',
        },
        (res) => {
          if (rootCa === undefined) {
            const cert = (res.socket as TLSSocket).getPeerX509Certificate();
            if (cert === undefined) {
              res.destroy();
              reject(agentError('AGENT_COORDINATOR_IDENTITY_MISMATCH', 'no server certificate'));
              return;
            }
            this.#seen.set(cert.fingerprint256, cert);
          }
          readBody(res).then((text) => {
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text.length === 0 ? undefined : JSON.parse(text);
            } catch (cause) {
              reject(
                agentError(
                  'AGENT_COORDINATOR_BAD_RESPONSE',
                  `${method} ${path}: body is not JSON`,
                  {
                    cause,
                    details: { status },
                  },
                ),
              );
              return;
            }
            if (status >= 200 && status < 300) {
              resolve(json);
              return;
            }
            const p = (typeof json === 'object' && json !== null ? json : {}) as Record<
              string,
              unknown
            >;
            const problem: CoordinatorProblem = {
              status,
              ...(typeof p['code'] === 'string' ? { code: p['code'] } : {}),
              ...(typeof p['title'] === 'string' ? { title: p['title'] } : {}),
              ...(typeof p['detail'] === 'string' ? { detail: p['detail'] } : {}),
              ...(p['details'] === undefined ? {} : { details: p['details'] }),
            };
            // 5xx and rate limits are transient (retried); the instance limit is a refusal:
            // retrying cannot free a slot, so it must fail the agent, not loop.
            const transient =
              status >= 500 ||
              (status === 429 && problem.code !== 'COORDINATOR_TOO_MANY_INSTANCES');
            const code = transient ? 'AGENT_COORDINATOR_UNREACHABLE' : 'AGENT_COORDINATOR_REFUSED';
            reject(
              agentError(
                code,
                `${method} ${path}: ${status} ${problem.code ?? ''} ${problem.detail ?? problem.title ?? ''}`.trim(),
                { details: { problem } },
              ),
            );
          }, reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e: Error & { code?: string }) => {
        reject(
          agentError(
            // A pinned coordinator that shows another kind of certificate is not one that is
            // down: retrying cannot help.
            e.code === NOT_THE_COORDINATOR
              ? 'AGENT_COORDINATOR_IDENTITY_MISMATCH'
              : 'AGENT_COORDINATOR_UNREACHABLE',
            `${method} ${target.href}: ${e.code ?? e.message}`,
            {
              cause: e,
              details: { url: target.href, errno: e.code ?? null },
            },
          ),
        );
      });
      req.end(body);
    });
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_RESPONSE) {
        res.destroy();
        reject(
          agentError('AGENT_COORDINATOR_BAD_RESPONSE', 'response too large', {
            details: { max: MAX_RESPONSE },
          }),
        );
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', (e) =>
      reject(
        agentError('AGENT_COORDINATOR_UNREACHABLE', 'connection lost while reading', { cause: e }),
      ),
    );
  });
}
