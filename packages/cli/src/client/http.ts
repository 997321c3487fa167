/**
 * HTTPS transport to the coordinator (DESIGN §3 "Verify"), in two trust modes:
 *
 * - pinned: the server certificate must chain to the saved root CA and name the host (undici
 *   Agent with `ca`), like any TLS client, and be the coordinator's own (signed by the root itself,
 *   with its name; see `pinnedIdentity`). Used after `cloister verify` has saved the root.
 * - attested-first-contact: the server certificate is not checked during the handshake; instead
 *   the SPKI of every connection is recorded, and the caller must compare it with the TLS key
 *   the coordinator's evidence attests (`coordinatorReportData` binds that key). A machine in
 *   the middle cannot present the attested key, so comparing after the fact is as strong as
 *   pinning; nothing read over such a connection may be trusted before that check passes.
 *
 * Errors: RFC 9457 problem+json answers become CloisterErrors carrying the server's code, kind
 * (from the HTTP status) and layer, so a remote refusal exits like a local one.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { checkServerIdentity } from 'node:tls';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { Agent, buildConnector, request } from 'undici';
import type { Dispatcher } from 'undici';
import { CloisterError, VERIFICATION_LAYERS, VerificationError } from '@cloister/errors';
import type { ErrorKind, VerificationLayer } from '@cloister/errors';
import { namesCoordinator } from '@cloister/protocol';
import { cliError } from '../error-codes.js';
import { clientError } from './error-codes.js';

/** Largest response body read (manifests with literal files, full histories). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export interface TransportOptions {
  /** `https://host:port` of the coordinator. */
  readonly url: string;
  /** PEM root CA: pinned mode. Absent: attested-first-contact mode. */
  readonly rootCaPem?: string;
  readonly timeoutMs?: number;
}

/** The TLS certificate of one connection, as seen in first-contact mode. */
export interface PeerSeen {
  /** SubjectPublicKeyInfo DER of the server's certificate. */
  readonly spkiDer: Uint8Array;
  readonly fingerprint256: string;
}

const STATUS_KIND: Record<number, ErrorKind> = {
  400: 'malformed',
  401: 'unauthorized',
  403: 'rejected',
  404: 'not-found',
  409: 'conflict',
  422: 'unsupported',
  429: 'limit',
  503: 'unavailable',
};

/** A pinned connection whose certificate the root did not sign itself (see `pinnedIdentity`). */
const NOT_ISSUED_BY_ROOT = 'ERR_CLOISTER_CERT_NOT_ISSUED_BY_ROOT';

/** TLS verification failures of a pinned connection (Node / OpenSSL error codes). */
const TLS_TRUST_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  NOT_ISSUED_BY_ROOT,
]);

/** SPKI DER of a certificate. */
export function spkiOf(cert: X509Certificate): Uint8Array {
  return new Uint8Array(cert.publicKey.export({ type: 'spki', format: 'der' }));
}

/**
 * The host name check of a pinned connection, plus: the server's certificate must be the
 * coordinator's, signed by the root itself and carrying the coordinator's name
 * (COORDINATOR_CERT_URI). The root also certifies the mesh CAs, whose workload leaves are valid
 * server certificates for DNS names such as the workload's name and `localhost`, and
 * certificate secrets with the names the owner chose; workloads hold those keys. Without this
 * check such a workload, with the network on its side, could answer for the coordinator:
 * receive secret values, owner signatures, and hand out its own image key.
 */
function pinnedIdentity(
  roots: readonly X509Certificate[],
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const err = checkServerIdentity(host, cert);
    if (err !== undefined) return err;
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(cert.raw);
    } catch (cause) {
      return Object.assign(new Error('the server certificate cannot be parsed', { cause }), {
        code: NOT_ISSUED_BY_ROOT,
      });
    }
    if (
      namesCoordinator(leaf.subjectAltName) &&
      roots.some((r) => leaf.checkIssued(r) && leaf.verify(r.publicKey))
    )
      return undefined;
    return Object.assign(
      new Error('the server certificate is not the coordinator certificate the root CA issued'),
      { code: NOT_ISSUED_BY_ROOT },
    );
  };
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The certificates of a saved root CA file. */
function rootsOf(pemText: string): X509Certificate[] {
  let roots: X509Certificate[];
  try {
    roots = (pemText.match(PEM_CERTIFICATE) ?? []).map((p) => new X509Certificate(p));
  } catch (cause) {
    throw cliError('CLI_BAD_INPUT', 'the saved root CA is not a valid PEM certificate', { cause });
  }
  if (roots.length === 0) {
    throw cliError('CLI_BAD_INPUT', 'the saved root CA holds no PEM certificate');
  }
  return roots;
}

/** Lowercase hex SHA-256. */
export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Maps a problem+json answer to a CloisterError carrying the server's code and layer. */
export function errorFromProblem(status: number, body: unknown, what: string): CloisterError {
  const p = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const code =
    typeof p['code'] === 'string' && /^[A-Z][A-Z0-9_]{1,80}$/.test(p['code'])
      ? p['code']
      : undefined;
  if (code === undefined) {
    return clientError('CLIENT_REMOTE_ERROR', `${what}: HTTP ${status} without a problem code`, {
      details: { status },
    });
  }
  const kind: ErrorKind = STATUS_KIND[status] ?? 'internal';
  // The text comes from whoever answered (before `cloister verify` has checked the TLS key, that
  // may be a machine in the middle) and is printed as is: control and format characters would
  // let it rewrite the terminal, e.g. erase the REJECTED line and print a VERIFIED one.
  const detail = (
    typeof p['detail'] === 'string'
      ? p['detail']
      : typeof p['title'] === 'string'
        ? p['title']
        : code
  ).replace(/[\p{Cc}\p{Cf}]/gu, '\uFFFD');
  const details = {
    status,
    ...(typeof p['details'] === 'object' && p['details'] !== null
      ? (p['details'] as Record<string, unknown>)
      : {}),
  };
  const layer = p['layer'];
  if (typeof layer === 'string' && (VERIFICATION_LAYERS as readonly string[]).includes(layer)) {
    return new VerificationError(
      { code, kind, layer: layer as VerificationLayer },
      `${what}: ${detail}`,
      {
        details,
      },
    );
  }
  return new CloisterError({ code, kind }, `${what}: ${detail}`, { details });
}

/** One coordinator endpoint with its trust mode; close() when done. */
export class CoordinatorTransport {
  readonly url: URL;
  readonly pinned: boolean;
  readonly #dispatcher: Dispatcher & { close(): Promise<void> };
  readonly #timeoutMs: number;
  readonly #seen: PeerSeen[] = [];

  constructor(options: TransportOptions) {
    let u: URL;
    try {
      u = new URL(options.url);
    } catch (cause) {
      throw clientError('CLIENT_COORDINATOR_UNREACHABLE', `not a URL: ${options.url}`, { cause });
    }
    // Plain HTTP would let anyone on the path swap the coordinator's answers.
    if (u.protocol !== 'https:' || u.pathname !== '/' || u.search !== '' || u.username !== '') {
      throw clientError(
        'CLIENT_COORDINATOR_UNREACHABLE',
        `the coordinator URL must be https://host:port`,
        {
          details: { url: options.url },
        },
      );
    }
    this.url = u;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.pinned = options.rootCaPem !== undefined;
    if (options.rootCaPem !== undefined) {
      const roots = rootsOf(options.rootCaPem);
      this.#dispatcher = new Agent({
        connect: {
          ca: options.rootCaPem,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
          checkServerIdentity: pinnedIdentity(roots),
        },
        connectTimeout: this.#timeoutMs,
      });
    } else {
      const base = buildConnector({ rejectUnauthorized: false, minVersion: 'TLSv1.2' });
      this.#dispatcher = new Agent({
        connectTimeout: this.#timeoutMs,
        connect: (opts, cb) => {
          base(opts, (err, socket) => {
            if (err !== null) {
              cb(err, null);
              return;
            }
            // Record the key of this very connection; the caller checks it against the evidence.
            const cert = (socket as TLSSocket).getPeerX509Certificate?.();
            if (cert === undefined) {
              socket.destroy();
              cb(new Error('the server presented no certificate'), null);
              return;
            }
            this.#seen.push({ spkiDer: spkiOf(cert), fingerprint256: cert.fingerprint256 });
            cb(null, socket);
          });
        },
      });
    }
  }

  /** The certificates of every connection made so far (first-contact mode). */
  get peers(): readonly PeerSeen[] {
    return this.#seen;
  }

  async close(): Promise<void> {
    await this.#dispatcher.close();
  }

  /** Sends a JSON request; resolves with the parsed body of a 2xx answer. */
  async json(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<unknown> {
    const target = new URL(path, this.url);
    const what = `${method} ${target.pathname}`;
    // The idle timeouts below restart with every byte: a server (or a machine in the middle)
    // that trickles its answer would hold the client forever. The whole exchange has a deadline.
    const deadline = new AbortController();
    const timer = setTimeout(() => {
      deadline.abort(
        clientError(
          'CLIENT_COORDINATOR_UNREACHABLE',
          `${what} to ${this.url.origin}: no complete answer within ${this.#timeoutMs} ms`,
          { details: { url: this.url.origin, timeoutMs: this.#timeoutMs } },
        ),
      );
    }, this.#timeoutMs);
    let res: Dispatcher.ResponseData;
    let text: string;
    try {
      try {
        res = await request(target, {
          method,
          dispatcher: this.#dispatcher,
          signal: deadline.signal,
          headersTimeout: this.#timeoutMs,
          bodyTimeout: this.#timeoutMs,
          headers: {
            accept: 'application/json, application/problem+json',
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      } catch (e) {
        throw this.#transportError(e, what);
      }
      text = await readLimited(res, what);
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown;
    try {
      parsed = text.length === 0 ? undefined : JSON.parse(text);
    } catch (cause) {
      throw clientError('CLIENT_BAD_RESPONSE', `${what}: the answer is not JSON`, {
        cause,
        details: { status: res.statusCode },
      });
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return parsed;
    throw errorFromProblem(res.statusCode, parsed, what);
  }

  #transportError(e: unknown, what: string): CloisterError {
    // The deadline's own error.
    if (e instanceof CloisterError) return e;
    const err = e as Error & { code?: string; cause?: { code?: string } };
    const code = err.code ?? err.cause?.code ?? '';
    if (TLS_TRUST_ERRORS.has(code)) {
      return clientError(
        'CLIENT_COORDINATOR_UNTRUSTED',
        `${what}: the coordinator's certificate is not trusted (${code}); run \`cloister verify\` again`,
        { cause: e, details: { url: this.url.origin, tls: code } },
      );
    }
    return clientError(
      'CLIENT_COORDINATOR_UNREACHABLE',
      `${what} to ${this.url.origin}: ${code || err.message}`,
      {
        cause: e,
        details: { url: this.url.origin, errno: code || null },
      },
    );
  }
}

async function readLimited(res: Dispatcher.ResponseData, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of res.body) {
      const b = c as Buffer;
      size += b.length;
      if (size > MAX_RESPONSE_BYTES) {
        res.body.destroy();
        throw clientError(
          'CLIENT_BAD_RESPONSE',
          `${what}: the answer exceeds ${MAX_RESPONSE_BYTES} bytes`,
        );
      }
      chunks.push(b);
    }
  } catch (e) {
    if (e instanceof CloisterError) throw e;
    throw clientError('CLIENT_COORDINATOR_UNREACHABLE', `${what}: connection lost while reading`, {
      cause: e,
    });
  }
  return Buffer.concat(chunks).toString('utf8');
}
