/**
 * OCI distribution client (OCI distribution-spec v1.1 `spec.md`: pull, push, chunked and
 * monolithic upload, cross-repository mount) with Bearer token auth (distribution
 * `docs/spec/auth/token.md`: `WWW-Authenticate: Bearer realm,service,scope`).
 *
 * Everything a registry sends is untrusted: manifests are size-capped and digest-checked when
 * the reference pins a digest; blobs stream through a verifier; `Authorization` never follows
 * a redirect to another origin (a registry that redirects blob reads to a CDN must not receive
 * our token there); plain HTTP only for loopback unless explicitly allowed.
 */
import { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import {
  HashingStream,
  VerifyingStream,
  parseDigest,
  sha256Digest,
  verifyBytes,
  type Digest,
} from './digest.js';
import { imageError } from './error-codes.js';
import { MAX_METADATA_BYTES } from './json.js';
import { MANIFEST_ACCEPT, type Descriptor } from './manifest.js';
import type { ImageDestination, ImageSource, ManifestBlob, PutBlobResult } from './transport.js';

/** A parsed `docker://` reference. */
export interface RegistryReference {
  /** `host[:port]` as used in URLs (docker.io → registry-1.docker.io). */
  readonly registry: string;
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

/** Parses `HOST[:PORT]/REPO[:TAG][@DIGEST]` (the part after `docker://`). */
export function parseRegistryReference(ref: string): RegistryReference {
  const bad = (why: string): never => {
    throw imageError('IMAGE_BAD_REFERENCE', `docker://${ref}: ${why}`, { details: { ref } });
  };
  let rest = ref;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1), 'reference digest');
    } catch {
      bad('invalid digest');
    }
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) bad('invalid tag');
  }
  const parts = rest.split('/');
  let registry = 'docker.io';
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    parts.shift();
  }
  if (parts.length === 0 || parts.some((p) => !REPO_COMPONENT.test(p))) bad('invalid repository');
  // index.docker.io is Docker Hub's legacy name; Docker normalises it like docker.io.
  if (registry === 'docker.io' || registry === 'index.docker.io') {
    registry = 'registry-1.docker.io';
    if (parts.length === 1) parts.unshift('library');
  }
  // The URL parser also rejects what the pattern lets through (port 99999, a broken IPv6
  // literal), which would otherwise surface as a TypeError at the first request.
  if (
    !/^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:]+\](?::\d{1,5})?$/.test(registry) ||
    !URL.canParse(`http://${registry}/`)
  )
    bad('invalid registry host');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return {
    registry,
    repository: parts.join('/'),
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
  };
}

/** True for hosts that never leave this machine (plain HTTP is acceptable there). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export interface RegistryClientOptions {
  /** Default: https, or http for loopback registries and with `allowInsecureHttp`. */
  readonly scheme?: 'https' | 'http';
  /**
   * Speak plain HTTP to a registry that is not on loopback (a lab registry without TLS), and
   * permit plain-HTTP token realms and redirects.
   */
  readonly allowInsecureHttp?: boolean;
  readonly credentials?: RegistryCredentials;
  readonly maxManifestBytes?: number;
  /** Chunk size of chunked uploads (default 16 MiB; memory use is about one chunk). */
  readonly chunkSize?: number;
  /**
   * Retries of a GET or HEAD that failed to connect or was answered 429, 502, 503 or 504
   * (default 3), after `retryDelayMs` (default 500) doubling each time, or after the server's
   * `Retry-After` (a longer one than 30 s fails at once).
   */
  readonly retries?: number;
  readonly retryDelayMs?: number;
  readonly dispatcher?: Dispatcher;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` header (RFC 9110 §11.6.1 auth-params). */
export function parseWwwAuthenticate(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2] ?? '')) !== null) {
    params[(p[1] ?? '').toLowerCase()] =
      p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: (m[1] ?? '').toLowerCase(), params };
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface SendOptions {
  headers?: Record<string, string>;
  body?: Uint8Array | Readable;
  /** Token scopes this request needs, e.g. `repository:a/b:pull`. */
  scopes: string[];
  followRedirects?: boolean;
}

/** Answers that mean "not now" rather than "no": worth the same request again later. */
const RETRY_STATUSES = new Set([429, 502, 503, 504]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function header(h: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Resolves a `Location` header against the URL of the request it answered: relative values are
 * relative to that request, not to the registry root (RFC 7231 §7.1.2; distribution-spec allows
 * both forms), and an upload URL on another host keeps its later relative Locations there.
 */
function resolveLocation(loc: string, requestUrl: URL): URL {
  try {
    return new URL(loc, requestUrl);
  } catch (cause) {
    throw imageError('IMAGE_REGISTRY_PROTOCOL', 'Location header is not a URL', { cause });
  }
}

async function drain(res: Dispatcher.ResponseData): Promise<void> {
  try {
    await res.body.dump({ limit: 64 * 1024 });
  } catch {
    /* the body is discarded either way */
  }
}

/** A client for one registry host. */
export class RegistryClient {
  readonly registry: string;
  readonly #base: string;
  readonly #opts: RegistryClientOptions;
  readonly #tokens = new Map<string, string>();
  #basic = false;

  constructor(registry: string, opts: RegistryClientOptions = {}) {
    this.registry = registry;
    const loopback = isLoopbackHost(registry);
    const scheme = opts.scheme ?? (loopback || opts.allowInsecureHttp === true ? 'http' : 'https');
    if (scheme === 'http' && !loopback && opts.allowInsecureHttp !== true)
      throw imageError('IMAGE_REGISTRY_INSECURE', `refusing plain HTTP to ${registry}`, {
        details: { registry },
      });
    if (
      opts.chunkSize !== undefined &&
      !(Number.isSafeInteger(opts.chunkSize) && opts.chunkSize > 0)
    )
      throw new RangeError(`chunkSize must be a positive integer, not ${opts.chunkSize}`);
    this.#base = `${scheme}://${registry}`;
    this.#opts = opts;
  }

  #checkUrl(u: URL): void {
    if (u.protocol === 'https:') return;
    if (u.protocol === 'http:' && (isLoopbackHost(u.host) || this.#opts.allowInsecureHttp === true))
      return;
    throw imageError('IMAGE_REGISTRY_INSECURE', `refusing ${u.protocol} URL to ${u.host}`, {
      details: { host: u.host },
    });
  }

  #authHeader(scopes: string[]): string | undefined {
    const t = this.#tokens.get(scopes.join(' '));
    if (t !== undefined) return `Bearer ${t}`;
    if (this.#basic && this.#opts.credentials !== undefined)
      return `Basic ${Buffer.from(`${this.#opts.credentials.username}:${this.#opts.credentials.password}`).toString('base64')}`;
    return undefined;
  }

  async #fetchToken(ch: Challenge, scopes: string[]): Promise<void> {
    const realm = ch.params.realm;
    if (realm === undefined)
      throw imageError('IMAGE_REGISTRY_PROTOCOL', 'Bearer challenge without realm', {});
    let url: URL;
    try {
      url = new URL(realm);
    } catch (cause) {
      throw imageError('IMAGE_REGISTRY_PROTOCOL', 'Bearer realm is not a URL', { cause });
    }
    this.#checkUrl(url);
    if (ch.params.service !== undefined) url.searchParams.set('service', ch.params.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = { accept: 'application/json' };
    const c = this.#opts.credentials;
    if (c !== undefined)
      headers.authorization = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'GET',
        headers,
        ...(this.#opts.dispatcher ? { dispatcher: this.#opts.dispatcher } : {}),
      });
    } catch (cause) {
      throw imageError('IMAGE_REGISTRY_UNAVAILABLE', `token server ${url.host} unreachable`, {
        cause,
      });
    }
    if (res.statusCode !== 200) {
      await drain(res);
      // A failing token server says nothing about the credentials: report it as an outage.
      throw imageError(
        res.statusCode >= 500 ? 'IMAGE_REGISTRY_UNAVAILABLE' : 'IMAGE_REGISTRY_UNAUTHORIZED',
        `token server answered ${res.statusCode}`,
        { details: { status: res.statusCode } },
      );
    }
    const text = await readCapped(res, 1024 * 1024, 'token response');
    let token: unknown;
    try {
      const body = JSON.parse(Buffer.from(text).toString('utf8')) as Record<string, unknown>;
      token = body.token ?? body.access_token;
    } catch (cause) {
      throw imageError('IMAGE_REGISTRY_UNAUTHORIZED', 'token response is not JSON', { cause });
    }
    if (typeof token !== 'string' || token === '' || /[\r\n]/.test(token))
      throw imageError('IMAGE_REGISTRY_UNAUTHORIZED', 'token response has no token', {});
    this.#tokens.set(scopes.join(' '), token);
  }

  /**
   * Sends one request (see `#sendOnce`). A GET or HEAD is tried again when the registry is
   * briefly unable to answer (rate limit, overloaded or restarting, a dropped connection), as
   * the distribution spec asks of clients; other methods are not idempotent (an upload chunk,
   * a mount) and fail at once.
   */
  async send(method: Method, pathOrUrl: string, o: SendOptions): Promise<Dispatcher.ResponseData> {
    const retries = method === 'GET' || method === 'HEAD' ? (this.#opts.retries ?? 3) : 0;
    for (let retry = 0; ; retry++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await this.#sendOnce(method, pathOrUrl, o);
      } catch (e) {
        if (retry >= retries || (e as { code?: string }).code !== 'IMAGE_REGISTRY_UNAVAILABLE')
          throw e;
        await sleep((this.#opts.retryDelayMs ?? 500) * 2 ** retry);
        continue;
      }
      if (retry >= retries || !RETRY_STATUSES.has(res.statusCode)) return res;
      const wait = this.#retryDelay(retry, header(res.headers, 'retry-after'));
      // Told to come back much later: failing now says so sooner than a long wait would.
      if (wait === undefined) return res;
      await drain(res);
      await sleep(wait);
    }
  }

  /**
   * The wait before retry `n` (0-based): the server's Retry-After (seconds or an HTTP date),
   * else backoff; undefined when Retry-After is beyond 30 s.
   */
  #retryDelay(n: number, retryAfter: string | undefined): number | undefined {
    const backoff = (this.#opts.retryDelayMs ?? 500) * 2 ** n;
    if (retryAfter === undefined) return backoff;
    const seconds = /^\d+$/.test(retryAfter)
      ? Number(retryAfter)
      : (Date.parse(retryAfter) - Date.now()) / 1000;
    if (!Number.isFinite(seconds)) return backoff;
    return seconds > 30 ? undefined : Math.max(seconds, 0) * 1000;
  }

  /**
   * Sends one request: authenticates on a 401 challenge (once, only for replayable bodies),
   * follows redirects for GET/HEAD, dropping `Authorization` when the origin changes.
   */
  async #sendOnce(
    method: Method,
    pathOrUrl: string,
    o: SendOptions,
  ): Promise<Dispatcher.ResponseData> {
    let url = new URL(pathOrUrl, this.#base);
    this.#checkUrl(url);
    const origin = new URL(this.#base).origin;
    const replayable = !(o.body instanceof Readable);
    for (let attempt = 0; ; attempt++) {
      let redirects = 0;
      let current = url;
      for (;;) {
        const headers: Record<string, string> = { ...(o.headers ?? {}) };
        // Never send our credentials to a host other than the registry (redirect to a CDN).
        const auth = current.origin === origin ? this.#authHeader(o.scopes) : undefined;
        if (auth !== undefined) headers.authorization = auth;
        let res: Dispatcher.ResponseData;
        try {
          res = await request(current, {
            method,
            headers,
            ...(o.body === undefined ? {} : { body: o.body }),
            ...(this.#opts.dispatcher ? { dispatcher: this.#opts.dispatcher } : {}),
          });
        } catch (cause) {
          if ((cause as { code?: string }).code?.startsWith('IMAGE_')) throw cause;
          throw imageError(
            'IMAGE_REGISTRY_UNAVAILABLE',
            `${this.registry} unreachable: ${String(cause)}`,
            {
              cause,
              details: { registry: this.registry },
            },
          );
        }
        const loc = header(res.headers, 'location');
        if (
          (o.followRedirects ?? (method === 'GET' || method === 'HEAD')) &&
          [301, 302, 303, 307, 308].includes(res.statusCode) &&
          loc !== undefined
        ) {
          await drain(res);
          if (++redirects > 5)
            throw imageError('IMAGE_REGISTRY_PROTOCOL', 'too many redirects', {
              details: { url: current.pathname },
            });
          current = resolveLocation(loc, current);
          this.#checkUrl(current);
          continue;
        }
        // Only the registry's own challenge is answered: a 401 from a redirect target (a CDN)
        // would otherwise choose the realm our credentials go to, and its token would then be
        // sent to the registry.
        if (res.statusCode === 401 && attempt === 0 && replayable && current.origin === origin) {
          const ch = parseWwwAuthenticate(header(res.headers, 'www-authenticate') ?? '');
          await drain(res);
          if (ch?.scheme === 'bearer') await this.#fetchToken(ch, o.scopes);
          else if (ch?.scheme === 'basic' && this.#opts.credentials !== undefined)
            this.#basic = true;
          else
            throw imageError(
              'IMAGE_REGISTRY_UNAUTHORIZED',
              `${this.registry} requires authentication`,
              {
                details: { registry: this.registry },
              },
            );
          url = current;
          break;
        }
        return res;
      }
    }
  }

  async #fail(res: Dispatcher.ResponseData, what: string): Promise<never> {
    await drain(res);
    if (res.statusCode === 401 || res.statusCode === 403)
      throw imageError('IMAGE_REGISTRY_UNAUTHORIZED', `${what}: ${res.statusCode}`, {
        details: { status: res.statusCode, registry: this.registry },
      });
    if (res.statusCode === 404)
      throw imageError('IMAGE_NOT_FOUND', `${what}: not found`, {
        details: { registry: this.registry },
      });
    throw imageError('IMAGE_REGISTRY_UNAVAILABLE', `${what}: unexpected status ${res.statusCode}`, {
      details: { status: res.statusCode, registry: this.registry },
    });
  }

  /** `GET /v2/`: checks the registry speaks the API (and primes authentication). */
  async ping(): Promise<void> {
    const res = await this.send('GET', '/v2/', { scopes: [] });
    await drain(res);
    if (res.statusCode !== 200 && res.statusCode !== 401)
      throw imageError('IMAGE_REGISTRY_UNAVAILABLE', `${this.registry} is not an OCI registry`, {
        details: { status: res.statusCode },
      });
  }

  /** Fetches a manifest or index: size-capped, digest-checked when `ref` is a digest. */
  async getManifest(repo: string, ref: string, expected?: Descriptor): Promise<ManifestBlob> {
    const max = this.#opts.maxManifestBytes ?? MAX_METADATA_BYTES;
    if (expected !== undefined && expected.size > max)
      throw imageError(
        'IMAGE_TOO_LARGE',
        `manifest ${expected.digest} is larger than ${max} bytes`,
        {
          details: { size: expected.size, limit: max },
        },
      );
    const res = await this.send('GET', `/v2/${repo}/manifests/${ref}`, {
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [`repository:${repo}:pull`],
    });
    if (res.statusCode !== 200) return this.#fail(res, `manifest ${repo}:${ref}`);
    const bytes = await readCapped(res, max, 'manifest');
    const mediaType = (header(res.headers, 'content-type') ?? '').split(';')[0]?.trim() ?? '';
    if (expected !== undefined) verifyBytes(bytes, expected.digest, expected.size);
    else if (ref.startsWith('sha256:')) verifyBytes(bytes, parseDigest(ref));
    return { bytes, mediaType: expected?.mediaType ?? mediaType, digest: sha256Digest(bytes) };
  }

  /** A blob as a stream that fails unless it matches the descriptor. */
  async getBlob(repo: string, d: Descriptor): Promise<Readable> {
    const res = await this.send('GET', `/v2/${repo}/blobs/${d.digest}`, {
      scopes: [`repository:${repo}:pull`],
    });
    if (res.statusCode !== 200) return this.#fail(res, `blob ${d.digest}`);
    const v = new VerifyingStream(d.digest, d.size);
    const body = res.body as unknown as Readable;
    body.on('error', (e) => v.destroy(e));
    return body.pipe(v);
  }

  async hasBlob(repo: string, d: Digest): Promise<boolean> {
    const res = await this.send('HEAD', `/v2/${repo}/blobs/${d}`, {
      scopes: [`repository:${repo}:pull`],
    });
    await drain(res);
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    return this.#fail(res, `blob ${d}`);
  }

  /** Cross-repository mount; false when the registry started an upload instead (cancelled). */
  async mountBlob(repo: string, d: Digest, from: string): Promise<boolean> {
    const path = `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(d)}&from=${encodeURIComponent(from)}`;
    const res = await this.send('POST', path, {
      scopes: [`repository:${repo}:pull,push`, `repository:${from}:pull`],
    });
    await drain(res);
    if (res.statusCode === 201) return true;
    if (res.statusCode === 202) {
      const loc = header(res.headers, 'location');
      if (loc !== undefined) {
        const upload = resolveLocation(loc, new URL(path, this.#base));
        const del = await this.send('DELETE', upload.href, {
          scopes: [`repository:${repo}:pull,push`],
        });
        await drain(del);
      }
      return false;
    }
    return this.#fail(res, `mount ${d}`);
  }

  async #startUpload(repo: string): Promise<string> {
    const path = `/v2/${repo}/blobs/uploads/`;
    const res = await this.send('POST', path, {
      scopes: [`repository:${repo}:pull,push`],
      headers: { 'content-length': '0' },
    });
    await drain(res);
    if (res.statusCode !== 202) return this.#fail(res, `start upload to ${repo}`);
    const loc = header(res.headers, 'location');
    if (loc === undefined)
      throw imageError('IMAGE_REGISTRY_PROTOCOL', 'upload started without Location', {});
    return resolveLocation(loc, new URL(path, this.#base)).href;
  }

  #withDigest(loc: string, d: Digest): string {
    const u = new URL(loc, this.#base);
    u.searchParams.set('digest', d);
    return u.toString();
  }

  /**
   * Uploads a blob. With `known`, one monolithic PUT streams the body (the registry checks the
   * digest); without, fixed-size chunks are PATCHed with Content-Range while we hash, then the
   * upload is closed with the computed digest.
   */
  async pushBlob(repo: string, stream: Readable, known?: Descriptor): Promise<PutBlobResult> {
    const scopes = [`repository:${repo}:pull,push`];
    let loc = await this.#startUpload(repo);
    if (known !== undefined) {
      const v = new VerifyingStream(known.digest, known.size);
      stream.on('error', (e) => v.destroy(e));
      const res = await this.send('PUT', this.#withDigest(loc, known.digest), {
        scopes,
        body: stream.pipe(v),
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(known.size),
        },
      });
      await drain(res);
      if (res.statusCode !== 201) return this.#fail(res, `upload ${known.digest}`);
      return { digest: known.digest, size: known.size };
    }
    const chunkSize = this.#opts.chunkSize ?? 16 * 1024 * 1024;
    const hasher = new HashingStream();
    stream.on('error', (e) => hasher.destroy(e));
    const hashed = stream.pipe(hasher);
    let offset = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      const body = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      const res = await this.send('PATCH', loc, {
        scopes,
        body,
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${offset + body.length - 1}`,
          'content-length': String(body.length),
        },
        followRedirects: false,
      });
      await drain(res);
      if (res.statusCode !== 202) return this.#fail(res, `upload chunk at ${offset}`);
      offset += body.length;
      const next = header(res.headers, 'location');
      if (next === undefined)
        throw imageError('IMAGE_REGISTRY_PROTOCOL', 'chunk accepted without Location', {});
      loc = resolveLocation(next, new URL(loc)).href;
    };
    for await (const chunk of hashed as AsyncIterable<Buffer>) {
      let c = chunk;
      while (c.length > 0) {
        const take = Math.min(c.length, chunkSize - pendingBytes);
        pending.push(c.subarray(0, take));
        pendingBytes += take;
        c = c.subarray(take);
        if (pendingBytes === chunkSize) await flush();
      }
    }
    await flush();
    const digest = hasher.digest;
    const res = await this.send('PUT', this.#withDigest(loc, digest), {
      scopes,
      headers: { 'content-length': '0' },
      followRedirects: false,
    });
    await drain(res);
    if (res.statusCode !== 201) return this.#fail(res, `close upload ${digest}`);
    return { digest, size: hasher.bytes };
  }

  /** Stores a manifest under a tag or digest; returns the digest of the exact bytes. */
  async putManifest(
    repo: string,
    ref: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<Digest> {
    const res = await this.send('PUT', `/v2/${repo}/manifests/${ref}`, {
      scopes: [`repository:${repo}:pull,push`],
      body: bytes,
      headers: { 'content-type': mediaType },
    });
    await drain(res);
    if (res.statusCode !== 201) return this.#fail(res, `manifest ${repo}:${ref}`);
    return sha256Digest(bytes);
  }
}

/** Reads a response body up to `max` bytes; beyond that the request is aborted. */
async function readCapped(
  res: Dispatcher.ResponseData,
  max: number,
  what: string,
): Promise<Uint8Array> {
  const declared = Number(header(res.headers, 'content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw imageError('IMAGE_TOO_LARGE', `${what} is larger than ${max} bytes`, {
      details: { what, size: declared, limit: max },
    });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    total += c.length;
    if (total > max) {
      res.body.destroy();
      throw imageError('IMAGE_TOO_LARGE', `${what} is larger than ${max} bytes`, {
        details: { what, limit: max },
      });
    }
    chunks.push(c);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/** A registry repository as an image source. */
export class RegistrySource implements ImageSource {
  readonly description: string;
  readonly client: RegistryClient;
  readonly ref: RegistryReference;

  constructor(ref: RegistryReference, opts: RegistryClientOptions = {}) {
    this.ref = ref;
    this.client = new RegistryClient(ref.registry, opts);
    this.description = `docker://${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
  }

  getManifest(): Promise<ManifestBlob> {
    return this.client.getManifest(
      this.ref.repository,
      this.ref.digest ?? this.ref.tag ?? 'latest',
    );
  }

  getManifestByDescriptor(d: Descriptor): Promise<ManifestBlob> {
    return this.client.getManifest(this.ref.repository, d.digest, d);
  }

  getBlob(d: Descriptor): Promise<Readable> {
    return this.client.getBlob(this.ref.repository, d);
  }

  async close(): Promise<void> {}
}

/**
 * A registry repository as a destination. Blobs are pushed as they come (invisible until a
 * manifest references them); the tag moves only in `commit`.
 */
export class RegistryDestination implements ImageDestination {
  readonly description: string;
  readonly supportsEncryption = true;
  readonly client: RegistryClient;
  readonly ref: RegistryReference;
  /** Repository on the same registry to mount blobs from (cross-repository mount). */
  mountFrom: string | undefined;

  constructor(ref: RegistryReference, opts: RegistryClientOptions = {}) {
    this.ref = ref;
    this.client = new RegistryClient(ref.registry, opts);
    this.description = `docker://${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}`;
  }

  hasBlob(d: Descriptor): Promise<boolean> {
    return this.client.hasBlob(this.ref.repository, d.digest);
  }

  async tryMount(d: Descriptor): Promise<boolean> {
    if (this.mountFrom === undefined || this.mountFrom === this.ref.repository) return false;
    return this.client.mountBlob(this.ref.repository, d.digest, this.mountFrom);
  }

  putBlob(stream: Readable, known?: Descriptor): Promise<PutBlobResult> {
    return this.client.pushBlob(this.ref.repository, stream, known);
  }

  async putManifest(bytes: Uint8Array, mediaType: string): Promise<Digest> {
    // Pushed by digest first so child manifests of an index exist before the index.
    return this.client.putManifest(this.ref.repository, sha256Digest(bytes), bytes, mediaType);
  }

  async commit(top: ManifestBlob): Promise<void> {
    await this.client.putManifest(
      this.ref.repository,
      this.ref.tag ?? top.digest,
      top.bytes,
      top.mediaType,
    );
  }

  async abort(): Promise<void> {}
}
