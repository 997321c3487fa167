/**
 * A fake Intel PCS (API v4) and AMD KDS on a loopback port, for tests of collateral fetching.
 * It answers the same paths, bodies and issuer-chain headers as the real services, built from
 * the stored collateral of the vectors, so no test ever reaches the real hosts. It records every
 * request and can be told to answer the next requests with an error (for example 429 with a
 * Retry-After) to exercise retry and caching behaviour.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IntelCollateralJson } from '@cloister/evidence';

/** Intel collateral served for one platform (dcap-qvl JSON form). */
export interface FakeIntelEntry {
  readonly tee: 'sgx' | 'tdx';
  readonly fmspc: string;
  readonly ca: 'processor' | 'platform';
  readonly collateral: IntelCollateralJson;
}

/** A VCEK served for one chip and TCB. */
export interface FakeVcekEntry {
  readonly product: 'Milan' | 'Genoa' | 'Turin';
  /** Lowercase hex as it appears in the URL (16 hex characters on Turin). */
  readonly hwid: string;
  /** The exact query parameters KDS requires, e.g. { blSPL: '2', teeSPL: '0', ... }. */
  readonly spl: Readonly<Record<string, string>>;
  readonly der: Uint8Array;
}

export interface FakeKdsChain {
  readonly kind: 'vcek' | 'vlek';
  readonly product: 'Milan' | 'Genoa' | 'Turin';
  /** ASK (or ASVK) then ARK, PEM, as KDS answers cert_chain. */
  readonly pem: string;
  readonly crl?: Uint8Array;
}

export interface FakeVendorConfig {
  readonly intel?: readonly FakeIntelEntry[];
  /** The Intel SGX Root CA CRL (DER), served at /sgx/certification/v4/rootcacrl. */
  readonly intelRootCaCrl?: Uint8Array;
  readonly vceks?: readonly FakeVcekEntry[];
  readonly chains?: readonly FakeKdsChain[];
}

export interface RecordedRequest {
  readonly method: string;
  /** Path and query as received. */
  readonly url: string;
  readonly at: number;
}

export interface ScriptedResponse {
  /** Never answer (the connection stays open until the server closes): for timeout tests. */
  readonly hang?: boolean;
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array;
}

export interface FakeVendorServices {
  /** http://127.0.0.1:<port>, usable as both the PCS and the KDS base URL. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Answers the next `count` requests (any path) with `response`. */
  failNext(count: number, response: ScriptedResponse): void;
  close(): Promise<void>;
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function send(
  res: ServerResponse,
  status: number,
  body: string | Uint8Array,
  headers: Record<string, string> = {},
): void {
  const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
  res.writeHead(status, { 'content-length': String(buf.length), ...headers });
  res.end(buf);
}

/** Starts the fake services on 127.0.0.1 with an ephemeral port. */
export async function startFakeVendorServices(
  config: FakeVendorConfig,
): Promise<FakeVendorServices> {
  const requests: RecordedRequest[] = [];
  const scripted: ScriptedResponse[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const raw = req.url ?? '/';
    requests.push({ method: req.method ?? 'GET', url: raw, at: Date.now() });
    const next = scripted.shift();
    if (next !== undefined) {
      if (next.hang !== true) send(res, next.status, next.body ?? '', { ...next.headers });
      return;
    }
    if (req.method !== 'GET') return send(res, 405, '');
    const u = new URL(raw, 'http://fake');
    const p = u.pathname;
    const q = u.searchParams;

    // Intel PCS v4.
    let m = /^\/(sgx|tdx)\/certification\/v4\/tcb$/.exec(p);
    if (m !== null) {
      const fmspc = (q.get('fmspc') ?? '').toLowerCase();
      const e = config.intel?.find((x) => x.tee === m?.[1] && x.fmspc.toLowerCase() === fmspc);
      if (e === undefined) return send(res, 404, '');
      const c = e.collateral;
      return send(res, 200, `{"tcbInfo":${c.tcb_info},"signature":"${c.tcb_info_signature}"}`, {
        'content-type': 'application/json',
        'TCB-Info-Issuer-Chain': encodeURIComponent(c.tcb_info_issuer_chain),
      });
    }
    m = /^\/(sgx|tdx)\/certification\/v4\/qe\/identity$/.exec(p);
    if (m !== null) {
      const e = config.intel?.find((x) => x.tee === m?.[1]);
      if (e === undefined) return send(res, 404, '');
      const c = e.collateral;
      return send(
        res,
        200,
        `{"enclaveIdentity":${c.qe_identity},"signature":"${c.qe_identity_signature}"}`,
        {
          'content-type': 'application/json',
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(c.qe_identity_issuer_chain),
        },
      );
    }
    if (p === '/sgx/certification/v4/pckcrl') {
      const e = config.intel?.find((x) => x.ca === q.get('ca'));
      if (e === undefined || q.get('encoding') !== 'der') return send(res, 404, '');
      return send(res, 200, hexToBytes(e.collateral.pck_crl), {
        'content-type': 'application/pkix-crl',
        'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(e.collateral.pck_crl_issuer_chain),
      });
    }
    if (p === '/sgx/certification/v4/rootcacrl') {
      const crl =
        config.intelRootCaCrl ??
        (config.intel?.[0] === undefined
          ? undefined
          : hexToBytes(config.intel[0].collateral.root_ca_crl));
      if (crl === undefined) return send(res, 404, '');
      return send(res, 200, crl, { 'content-type': 'application/pkix-crl' });
    }

    // AMD KDS.
    m = /^\/(vcek|vlek)\/v1\/(Milan|Genoa|Turin)\/(cert_chain|crl)$/.exec(p);
    if (m !== null) {
      const e = config.chains?.find((x) => x.kind === m?.[1] && x.product === m?.[2]);
      if (e === undefined) return send(res, 404, '');
      if (m[3] === 'cert_chain') {
        return send(res, 200, e.pem, { 'content-type': 'application/x-pem-file' });
      }
      if (e.crl === undefined) return send(res, 404, '');
      return send(res, 200, e.crl, { 'content-type': 'application/pkix-crl' });
    }
    m = /^\/vcek\/v1\/(Milan|Genoa|Turin)\/([0-9a-fA-F]+)$/.exec(p);
    if (m !== null) {
      const e = config.vceks?.find(
        (x) =>
          x.product === m?.[1] &&
          x.hwid.toLowerCase() === m?.[2]?.toLowerCase() &&
          Object.keys(x.spl).length === [...q.keys()].length &&
          Object.entries(x.spl).every(([k, v]) => q.get(k) === v),
      );
      if (e === undefined) return send(res, 404, '');
      return send(res, 200, e.der, { 'content-type': 'application/pkix-cert' });
    }
    send(res, 404, '');
  };

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    failNext(count, response) {
      for (let i = 0; i < count; i++) scripted.push(response);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e === undefined ? resolve() : reject(e)));
      }),
  };
}
