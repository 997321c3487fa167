/**
 * A caching CollateralSource in front of the vendor services:
 *
 * - Intel PCS API v4 ("Intel SGX and Intel TDX Provisioning Certification Service for ECDSA
 *   Attestation", API v4): `GET /{sgx|tdx}/certification/v4/tcb?fmspc=` (issuer chain in the
 *   `TCB-Info-Issuer-Chain` header), `GET /{sgx|tdx}/certification/v4/qe/identity`
 *   (`SGX-Enclave-Identity-Issuer-Chain`), `GET /sgx/certification/v4/pckcrl?ca=&encoding=der`
 *   (`SGX-PCK-CRL-Issuer-Chain`), and the Intel SGX Root CA CRL. Headers are URL-encoded PEM.
 *   The signed `tcbInfo` / `enclaveIdentity` text is cut out of the body exactly, never
 *   re-serialised, since the signature covers those bytes.
 * - AMD KDS (AMD spec 57230 section 4): `GET /vcek/v1/{product}/{hwid}?blSPL=&teeSPL=&snpSPL=
 *   &ucodeSPL=` (+`fmcSPL` on Turin), `GET /{vcek|vlek}/v1/{product}/cert_chain`,
 *   `GET /{vcek|vlek}/v1/{product}/crl`.
 *
 * It is off unless a base URL is configured (verification never reaches the network by
 * surprise). Each response is cached until the collateral it carries stops being current
 * (nextUpdate, or notAfter for certificates). Requests to one host are spaced by
 * `minIntervalMs` and a 429 answer is retried after its Retry-After, because both services
 * rate-limit. Only the global (or injected) `fetch` is used, so it runs in any engine.
 */
import { fromHex, toHex } from '../bytes.js';
import { intelCollateralFromPcs, parseIntelCollateral } from '../dcap/collateral.js';
import { evidenceError } from '../error-codes.js';
import { parseCertificate, parseCertificates, parseCrl } from '../pki/x509.js';
import { readAmdKeyCert } from '../snp/vcek-cert.js';
import { normaliseHwid } from './offline.js';
import type {
  CollateralSource,
  IntelCollateralJson,
  IntelCollateralQuery,
  SnpCollateral,
  SnpCollateralQuery,
} from './types.js';

/** The real service hosts, for callers that opt in to them. */
export const INTEL_PCS_URL = 'https://api.trustedservices.intel.com';
export const INTEL_ROOT_CA_CRL_URL =
  'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der';
export const AMD_KDS_URL = 'https://kdsintf.amd.com';

export interface CachingFetcherOptions {
  /** Intel PCS (or a PCCS mirror) base URL; Intel collateral is off when absent. */
  readonly intelBaseUrl?: string;
  /**
   * The root CA CRL URL. Default: Intel's certificates host for Intel's PCS, otherwise the
   * mirror's `/sgx/certification/v4/rootcacrl` (as a PCCS serves it).
   */
  readonly intelRootCaCrlUrl?: string;
  /** AMD KDS base URL; AMD collateral is off when absent. */
  readonly amdBaseUrl?: string;
  /** Fetch the KDS CRL of revoked ASKs/ASVKs with every chain (default true). */
  readonly amdCrl?: boolean;
  /** The fetch implementation (default: the global one). */
  readonly fetch?: typeof globalThis.fetch;
  /** The clock that decides whether cached collateral is still current. */
  readonly now?: () => Date;
  /** Minimum time between two requests to the same host (default 200 ms). */
  readonly minIntervalMs?: number;
  /** How many times a 429 answer is retried (default 3). */
  readonly maxRetries?: number;
  /** A Retry-After longer than this fails instead of waiting (default 60 s). */
  readonly maxRetryAfterMs?: number;
  /** A request that takes longer than this fails (default 30 s). */
  readonly timeoutMs?: number;
  /** Largest accepted response body (default 4 MiB). */
  readonly maxResponseBytes?: number;
  /** Waits; injectable so tests need not. */
  readonly sleep?: (ms: number) => Promise<void>;
}

interface Fetched {
  readonly body: Uint8Array;
  readonly headers: Headers;
}

interface CacheEntry<T> {
  readonly value: T;
  /** Epoch ms after which the value is no longer served. */
  readonly until: number;
}

function fetchFailed(
  url: string,
  message: string,
  details: Record<string, unknown>,
  cause?: unknown,
): Error {
  return evidenceError('COLLATERAL_FETCH_FAILED', `${message} (${url})`, {
    ...(cause === undefined ? {} : { cause }),
    details: { url, ...details },
  });
}

function malformed(what: string, cause?: unknown): Error {
  return evidenceError('COLLATERAL_MALFORMED', `${what} is malformed`, {
    ...(cause === undefined ? {} : { cause }),
    details: { field: what },
  });
}

function trimSlash(u: string): string {
  return u.replace(/\/+$/, '');
}

/** Parses a Retry-After value (delay-seconds or HTTP-date) into milliseconds from `now`. */
function retryAfterMs(value: string | null, now: Date): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now.getTime());
}

/**
 * Like Promise.all, but waits for every request to finish before failing, so a failed query
 * leaves no request running behind the caller's back.
 */
async function settleAll<T extends readonly unknown[]>(
  ps: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}

const FMSPC = /^[0-9a-fA-F]{12}$/;
const PRODUCTS = new Set(['Milan', 'Genoa', 'Turin']);

function checkSpl(n: unknown, name: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 255) {
    throw evidenceError('EVIDENCE_BAD_FIELD', `SNP collateral query: ${name} is not a byte`, {
      details: { field: name },
    });
  }
  return n;
}

/**
 * Builds the caching fetcher. Each query validates its inputs before they reach a URL (stops
 * path and query injection through a crafted FMSPC or hwID).
 */
export function cachingFetcher(opts: CachingFetcherOptions = {}): CollateralSource {
  const doFetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const now = opts.now ?? (() => new Date());
  const minInterval = opts.minIntervalMs ?? 200;
  const maxRetries = opts.maxRetries ?? 3;
  const maxRetryAfter = opts.maxRetryAfterMs ?? 60_000;
  const maxBytes = opts.maxResponseBytes ?? 4 * 1024 * 1024;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const sleep =
    opts.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const intelBase = opts.intelBaseUrl === undefined ? undefined : trimSlash(opts.intelBaseUrl);
  const amdBase = opts.amdBaseUrl === undefined ? undefined : trimSlash(opts.amdBaseUrl);
  const rootCrlUrl =
    opts.intelRootCaCrlUrl ??
    (intelBase === undefined
      ? undefined
      : intelBase === INTEL_PCS_URL
        ? INTEL_ROOT_CA_CRL_URL
        : `${intelBase}/sgx/certification/v4/rootcacrl`);

  const cache = new Map<string, CacheEntry<unknown>>();
  const inflight = new Map<string, Promise<unknown>>();
  const hostQueue = new Map<string, Promise<void>>();
  const lastRequest = new Map<string, number>();
  const mono = (): number => globalThis.performance.now();

  /** Serialises requests per host and spaces them by `minInterval`. */
  async function throttled<T>(host: string, fn: () => Promise<T>): Promise<T> {
    const prev = hostQueue.get(host) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    hostQueue.set(host, tail);
    await prev;
    try {
      const last = lastRequest.get(host);
      if (last !== undefined) {
        const wait = last + minInterval - mono();
        if (wait > 0) await sleep(wait);
      }
      return await fn();
    } finally {
      lastRequest.set(host, mono());
      release();
      if (hostQueue.get(host) === tail) hostQueue.delete(host);
    }
  }

  /**
   * Reads a body and stops at `maxBytes`: a chunked answer carries no Content-Length, and
   * buffering it whole before measuring would let a hostile or broken service exhaust memory.
   */
  async function readCapped(r: Response, url: string): Promise<Uint8Array> {
    if (r.body === null) return new Uint8Array(0);
    const reader = r.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (cause) {
        throw fetchFailed(url, 'response body could not be read', {}, cause);
      }
      if (chunk.done) break;
      total += chunk.value.length;
      if (total > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw fetchFailed(url, 'response too large', { length: total });
      }
      chunks.push(chunk.value);
    }
    const body = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      body.set(c, at);
      at += c.length;
    }
    return body;
  }

  async function get(url: string): Promise<Fetched> {
    const host = new URL(url).host;
    for (let attempt = 0; ; attempt++) {
      const res = await throttled(host, async () => {
        let r: Response;
        try {
          r = await doFetch(url, {
            method: 'GET',
            redirect: 'error',
            signal: AbortSignal.timeout(timeoutMs),
          });
        } catch (cause) {
          throw fetchFailed(url, 'collateral service unreachable', {}, cause);
        }
        if (r.status === 429) {
          await r.body?.cancel();
          return { status: 429, retryAfter: r.headers.get('retry-after') } as const;
        }
        if (!r.ok) {
          await r.body?.cancel();
          throw fetchFailed(url, `collateral service answered ${r.status}`, { status: r.status });
        }
        const len = Number(r.headers.get('content-length') ?? '0');
        if (len > maxBytes) {
          await r.body?.cancel();
          throw fetchFailed(url, 'response too large', { length: len });
        }
        const body = await readCapped(r, url);
        return { status: 200, fetched: { body, headers: r.headers } } as const;
      });
      if (res.status === 200) return res.fetched;
      const wait = retryAfterMs(res.retryAfter, now()) ?? Math.max(minInterval, 1000);
      if (attempt >= maxRetries || wait > maxRetryAfter) {
        throw fetchFailed(url, 'collateral service is rate-limiting', {
          status: 429,
          retryAfterMs: wait,
          attempts: attempt + 1,
        });
      }
      await sleep(wait);
    }
  }

  /**
   * Fetches `url` through the cache: `decode` turns the response into a value and says until
   * when it is current. Concurrent callers of one URL share one request.
   */
  async function cached<T>(
    url: string,
    decode: (f: Fetched) => { value: T; until: number },
  ): Promise<T> {
    const hit = cache.get(url) as CacheEntry<T> | undefined;
    if (hit !== undefined && now().getTime() < hit.until) return hit.value;
    const running = inflight.get(url) as Promise<T> | undefined;
    if (running !== undefined) return running;
    const p = (async () => {
      const f = await get(url);
      const { value, until } = decode(f);
      cache.set(url, { value, until });
      return value;
    })();
    inflight.set(url, p);
    try {
      return await p;
    } finally {
      inflight.delete(url);
    }
  }

  const text = (b: Uint8Array, what: string): string => {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(b);
    } catch (cause) {
      throw malformed(what, cause);
    }
  };
  const header = (f: Fetched, name: string): string => {
    const h = f.headers.get(name);
    if (h === null || h === '') throw malformed(`${name} header`);
    let pem: string;
    try {
      pem = decodeURIComponent(h);
    } catch (cause) {
      throw malformed(`${name} header`, cause);
    }
    try {
      parseCertificates(new TextEncoder().encode(pem), name);
    } catch (cause) {
      throw malformed(`${name} header`, cause);
    }
    return pem;
  };
  /** CRL bodies: DER, or hex as some PCCS versions answer. */
  const crlBody = (b: Uint8Array, what: string): { der: Uint8Array; until: number } => {
    let der = b;
    if (b.length > 0 && b[0] !== 0x30) {
      const t = text(b, what).trim();
      try {
        der = fromHex(t, what);
      } catch (cause) {
        throw malformed(what, cause);
      }
    }
    let crl;
    try {
      crl = parseCrl(der, what);
    } catch (cause) {
      throw malformed(what, cause);
    }
    return { der, until: crl.nextUpdate?.getTime() ?? 0 };
  };

  interface SignedBody {
    readonly body: string;
    readonly chain: string;
  }

  return {
    async intel(query: IntelCollateralQuery): Promise<IntelCollateralJson> {
      if (intelBase === undefined || rootCrlUrl === undefined) {
        throw evidenceError(
          'COLLATERAL_MISSING',
          'Intel collateral is not available: no PCS URL is configured and none was supplied',
          { details: { tee: query.tee, fmspc: query.fmspc } },
        );
      }
      if (query.tee !== 'sgx' && query.tee !== 'tdx') {
        throw evidenceError('EVIDENCE_BAD_FIELD', 'Intel collateral query: unknown tee', {
          details: { field: 'tee' },
        });
      }
      if (!FMSPC.test(query.fmspc)) {
        throw evidenceError(
          'EVIDENCE_BAD_FIELD',
          'Intel collateral query: fmspc is not 6 bytes of hex',
          {
            details: { field: 'fmspc' },
          },
        );
      }
      if (query.ca !== 'processor' && query.ca !== 'platform') {
        throw evidenceError(
          'EVIDENCE_BAD_FIELD',
          'Intel collateral query: ca is not processor or platform',
          {
            details: { field: 'ca' },
          },
        );
      }
      const base = `${intelBase}/${query.tee}/certification/v4`;
      // Each resource is cached on its own: QE identity and CRLs are shared between FMSPCs.
      const signedJson = (
        url: string,
        member: string,
        chainHeader: string,
        check?: (o: Record<string, unknown>) => void,
      ): Promise<SignedBody> =>
        cached(url, (f) => {
          const body = text(f.body, member);
          const chain = header(f, chainHeader);
          let next: number;
          let o: Record<string, { nextUpdate?: unknown } | undefined>;
          try {
            o = JSON.parse(body) as typeof o;
            next = Date.parse(String(o[member]?.nextUpdate));
          } catch (cause) {
            throw malformed(member, cause);
          }
          const m = o[member];
          // A body without the member is not cached (no nextUpdate) and is refused as malformed.
          if (typeof m === 'object' && m !== null) check?.(m);
          return { value: { body, chain }, until: Number.isNaN(next) ? 0 : next };
        });
      const mismatch = (fmspc: unknown): Error =>
        evidenceError('COLLATERAL_MISMATCH', 'PCS answered with TCB info for another platform', {
          details: { fmspc, expected: query.fmspc },
        });
      const [tcb, qe, pck, root] = await settleAll([
        // Checked before it is cached: an answer for another platform would otherwise be
        // replayed to every later query until the nextUpdate it claims for itself.
        signedJson(
          `${base}/tcb?fmspc=${query.fmspc.toLowerCase()}`,
          'tcbInfo',
          'TCB-Info-Issuer-Chain',
          (t) => {
            if (
              String(t['fmspc']).toLowerCase() !== query.fmspc.toLowerCase() ||
              (t['id'] === 'TDX') !== (query.tee === 'tdx')
            ) {
              throw mismatch(t['fmspc']);
            }
          },
        ),
        signedJson(`${base}/qe/identity`, 'enclaveIdentity', 'SGX-Enclave-Identity-Issuer-Chain'),
        cached(`${intelBase}/sgx/certification/v4/pckcrl?ca=${query.ca}&encoding=der`, (f) => {
          const c = crlBody(f.body, 'PCK CRL');
          return {
            value: { der: c.der, chain: header(f, 'SGX-PCK-CRL-Issuer-Chain') },
            until: c.until,
          };
        }),
        cached(rootCrlUrl, (f) => {
          const c = crlBody(f.body, 'root CA CRL');
          return { value: c.der, until: c.until };
        }),
      ]);
      const json = intelCollateralFromPcs({
        tcbInfoBody: tcb.body,
        tcbInfoIssuerChain: tcb.chain,
        qeIdentityBody: qe.body,
        qeIdentityIssuerChain: qe.chain,
        pckCrl: pck.der,
        pckCrlIssuerChain: pck.chain,
        rootCaCrl: root,
      });
      // Fail here, not later in the verifier, if the service answered for another platform.
      const parsed = parseIntelCollateral(json);
      if (
        parsed.tcbInfo.fmspc.toLowerCase() !== query.fmspc.toLowerCase() ||
        (parsed.tcbInfo.id === 'TDX') !== (query.tee === 'tdx')
      ) {
        throw mismatch(parsed.tcbInfo.fmspc);
      }
      return json;
    },

    async snp(query: SnpCollateralQuery): Promise<SnpCollateral> {
      if (amdBase === undefined) {
        throw evidenceError(
          'COLLATERAL_MISSING',
          'AMD collateral is not available: no KDS URL is configured and no VCEK was supplied',
          { details: { product: query.product } },
        );
      }
      if (!PRODUCTS.has(query.product)) {
        throw evidenceError('EVIDENCE_BAD_FIELD', 'SNP collateral query: unknown product', {
          details: { field: 'product' },
        });
      }
      const kind = query.signingKey === 'vlek' ? 'vlek' : 'vcek';
      const base = `${amdBase}/${kind}/v1/${query.product}`;
      // Validate the whole query before the first request starts.
      let vcekUrl: string | undefined;
      let hwid = '';
      if (kind === 'vcek') {
        hwid = normaliseHwid(query.product, query.hwid);
        const t = query.reportedTcb;
        const q = new URLSearchParams({
          blSPL: String(checkSpl(t.bootloader, 'blSPL')),
          teeSPL: String(checkSpl(t.tee, 'teeSPL')),
          snpSPL: String(checkSpl(t.snp, 'snpSPL')),
          ucodeSPL: String(checkSpl(t.microcode, 'ucodeSPL')),
        });
        if (query.product === 'Turin') q.set('fmcSPL', String(checkSpl(t.fmc, 'fmcSPL')));
        vcekUrl = `${base}/${hwid}?${q.toString()}`;
      }

      const chain = cached(`${base}/cert_chain`, (f) => {
        let certs;
        try {
          certs = parseCertificates(f.body, 'KDS cert_chain');
        } catch (cause) {
          throw malformed('KDS cert_chain', cause);
        }
        return {
          value: certs.map((c) => new Uint8Array(c.rawData)),
          until: Math.min(...certs.map((c) => c.notAfter.getTime())),
        };
      });
      const crl =
        opts.amdCrl === false
          ? undefined
          : cached(`${base}/crl`, (f) => {
              const c = crlBody(f.body, 'KDS CRL');
              return { value: c.der, until: c.until };
            });

      let vcek: Promise<Uint8Array> | undefined;
      if (vcekUrl !== undefined) {
        vcek = cached(vcekUrl, (f) => {
          let cert;
          try {
            cert = parseCertificate(f.body, 'VCEK');
          } catch (cause) {
            throw malformed('VCEK', cause);
          }
          let info;
          try {
            info = readAmdKeyCert(cert);
          } catch (cause) {
            throw malformed('VCEK', cause);
          }
          // Checked before it is cached (for the years until its notAfter): a VCEK of another
          // chip, product or TCB can never verify this report, and replaying it would refuse
          // this chip's evidence long after the service answers correctly again.
          const t = query.reportedTcb;
          if (
            info.kind !== 'vcek' ||
            info.product !== query.product ||
            info.hwId === undefined ||
            toHex(info.hwId) !== hwid ||
            info.spl.bootloader !== t.bootloader ||
            info.spl.tee !== t.tee ||
            info.spl.snp !== t.snp ||
            info.spl.microcode !== t.microcode ||
            (query.product === 'Turin' && info.spl.fmc !== t.fmc)
          ) {
            throw evidenceError(
              'COLLATERAL_MISMATCH',
              'KDS answered with a VCEK for another chip or TCB',
              { details: { product: info.product, expected: query.product, spl: info.spl } },
            );
          }
          return { value: new Uint8Array(cert.rawData), until: cert.notAfter.getTime() };
        });
      }
      const [chainDers, crlDer, vcekDer] = await settleAll([chain, crl, vcek] as const);
      return {
        ...(vcekDer === undefined ? {} : { endorsementKeyCert: vcekDer }),
        chain: chainDers,
        ...(crlDer === undefined ? {} : { crl: crlDer }),
      };
    },
  };
}
