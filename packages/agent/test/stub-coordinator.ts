/**
 * A small HTTPS coordinator for agent tests: challenge, activate (verifying the sim evidence,
 * its binding to the nonce and the CSR key, the measurement and, for a renewal, the signature
 * by the instance's current mesh key), GET manifest (which a test can update or take down).
 * Bundles are real JWEs made with the protocol package's encryptBundle.
 */
import 'reflect-metadata';
import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, verify as nodeVerify, webcrypto } from 'node:crypto';
import { once } from 'node:events';
import * as x509 from '@peculiar/x509';
import {
  activationReportData,
  COORDINATOR_CERT_URI,
  encryptBundle,
  fromBase64Url,
  manifestHash,
  nonceFromBase64Url,
  renewalSignedBytes,
  toBase64Url,
} from '@cloister/protocol';
import type { ActivateRequest, ActivationBundle, Manifest } from '@cloister/protocol';
import { simRootAnchor, verifySimReport, toHex } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { issueLeaf, newKeys } from './test-pki.js';
import type { Issued } from './test-pki.js';

export interface StubOptions {
  readonly manifest: Manifest;
  readonly workload: string;
  /** The mesh CA (intermediate) and the root put in bundles. */
  readonly meshCa: Issued;
  readonly root: Issued;
  /** Root whose certificate the TLS listener presents (default: `root`; a MITM uses another). */
  readonly tlsRoot?: Issued;
  readonly sim: SimHardware;
  /** The measurement evidence must carry. */
  readonly measurement: Uint8Array;
  readonly files?: Record<string, Uint8Array>;
  readonly env?: Record<string, string>;
  readonly args?: string[];
  readonly renewAfterMs?: number;
  /** Listen on this port (default: any free port). */
  readonly port?: number;
  /** Issue the mesh certificate for this workload instead of the requested one. */
  readonly certWorkload?: string;
  /** Answer activations with this problem instead. */
  readonly refuse?: { status: number; code: string };
  /** Answer renewals (activations naming an instance) with this problem instead. */
  readonly refuseRenewal?: { status: number; code: string };
  /** Make the mesh key and ship it in the bundle, as a coordinator does for `.mesh.key`. */
  readonly meshKeyInBundle?: boolean;
}

/** The instance a request renews, if it is a renewal. */
export function renewedInstance(r: ActivateRequest): string | undefined {
  return 'instanceId' in r ? r.instanceId : undefined;
}

export interface Stub {
  readonly url: string;
  readonly requests: ActivateRequest[];
  readonly serials: string[];
  /** Change the bundle for later activations. */
  bundleOverride?: (b: ActivationBundle) => ActivationBundle;
  /** Answer GET /v1/manifest with 503 while true (a coordinator that is down). */
  manifestDown?: boolean;
  /** Updates the manifest GET /v1/manifest serves, with the next history seq. */
  setManifest(m: Manifest): Promise<void>;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json') {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const t = Buffer.concat(chunks).toString();
  return t.length === 0 ? undefined : JSON.parse(t);
}

export async function startStub(o: StubOptions): Promise<Stub> {
  const td = o.manifest.trustDomain;
  const tlsRoot = o.tlsRoot ?? o.root;
  const tlsLeaf = await issueLeaf(tlsRoot, [COORDINATOR_CERT_URI], {
    ips: ['127.0.0.1'],
    dns: ['localhost'],
  });
  const nonces = new Set<string>();
  const requests: ActivateRequest[] = [];
  const serials: string[] = [];
  /** Instance id -> SPKI DER of its current mesh key (what a renewal must be signed with). */
  const meshKeys = new Map<string, Buffer>();
  let served = { manifest: o.manifest, manifestHash: await manifestHash(o.manifest), seq: 0 };
  const stub: Stub = {
    url: '',
    requests,
    serials,
    setManifest: async (manifest) => {
      served = { manifest, manifestHash: await manifestHash(manifest), seq: served.seq + 1 };
    },
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  const problem = (res: ServerResponse, status: number, code: string) =>
    send(
      res,
      status,
      { type: 'about:blank', title: code, status, code },
      'application/problem+json',
    );

  const activate = async (body: ActivateRequest, res: ServerResponse) => {
    requests.push(body);
    if (o.refuse !== undefined) return problem(res, o.refuse.status, o.refuse.code);
    if (o.refuseRenewal !== undefined && renewedInstance(body) !== undefined)
      return problem(res, o.refuseRenewal.status, o.refuseRenewal.code);
    if (!nonces.delete(body.nonce)) return problem(res, 403, 'NONCE_UNKNOWN');
    let spki: Uint8Array;
    if ('csr' in body) {
      const csr = new x509.Pkcs10CertificateRequest(body.csr);
      if (!(await csr.verify())) return problem(res, 400, 'CSR_SIGNATURE');
      spki = new Uint8Array(csr.publicKey.rawData);
    } else {
      spki = fromBase64Url(body.publicKey);
    }
    if (body.evidence.type !== 'sim') return problem(res, 403, 'TEE');
    const claims = await verifySimReport(fromBase64Url(body.evidence.data), {
      now: new Date(),
      roots: [simRootAnchor(o.sim)],
      allowSimulation: true,
    });
    const bundleKey = fromBase64Url(body.bundleKey);
    const expected = await activationReportData(nonceFromBase64Url(body.nonce), spki, bundleKey);
    if (claims.reportData !== toHex(expected)) return problem(res, 403, 'BINDING');
    if (claims.measurement !== toHex(o.measurement)) return problem(res, 403, 'MEASUREMENT');
    if ('instanceId' in body) {
      const key = meshKeys.get(body.instanceId);
      if (key === undefined) return problem(res, 404, 'COORDINATOR_NOT_FOUND');
      const signed = nodeVerify(
        'sha256',
        renewalSignedBytes(body.instanceId, body.nonce, expected),
        { key, format: 'der', type: 'spki', dsaEncoding: 'ieee-p1363' },
        fromBase64Url(body.instanceSignature),
      );
      if (!signed) return problem(res, 401, 'COORDINATOR_SIGNATURE_INVALID');
    }
    const instanceId = renewedInstance(body) ?? randomBytes(8).toString('hex');
    const uri = `spiffe://${td}/${o.certWorkload ?? body.workload}`;
    const leaf =
      o.meshKeyInBundle === true
        ? await issueLeaf(o.meshCa, [uri])
        : await issueLeaf(o.meshCa, [uri], {
            publicKey: await webcrypto.subtle.importKey(
              'spki',
              spki,
              { name: 'ECDSA', namedCurve: 'P-256' },
              true,
              ['verify'],
            ),
          });
    meshKeys.set(instanceId, Buffer.from(leaf.cert.publicKey.rawData));
    serials.push(leaf.cert.serialNumber);
    let bundle: ActivationBundle = {
      files: Object.fromEntries(Object.entries(o.files ?? {}).map(([k, v]) => [k, toBase64Url(v)])),
      env: o.env ?? {},
      args: o.args ?? [],
      mesh: {
        cert: leaf.certPem,
        ...(o.meshKeyInBundle === true ? { key: leaf.keyPem } : {}),
        rootCa: o.root.certPem,
        intermediateCa: o.meshCa.certPem,
      },
      renewAfter: new Date(Date.now() + (o.renewAfterMs ?? 3_600_000)).toISOString(),
    };
    if (stub.bundleOverride !== undefined) bundle = stub.bundleOverride(bundle);
    const sealTo = await webcrypto.subtle.importKey('raw', bundleKey, { name: 'X25519' }, true, []);
    send(res, 200, {
      bundle: await encryptBundle(bundle, sealTo),
      certificate: `${leaf.certPem}\n${o.meshCa.certPem}`,
      expiresAt: leaf.cert.notAfter.toISOString(),
      instanceId,
    });
  };

  const server = createServer(
    { key: tlsLeaf.keyPem, cert: `${tlsLeaf.certPem}\n${tlsRoot.certPem}` },
    (req, res) => {
      const route = `${req.method ?? ''} ${req.url ?? ''}`;
      readJson(req)
        .then(async (body) => {
          if (route === 'POST /v1/activate/challenge') {
            const nonce = toBase64Url(new Uint8Array(randomBytes(32)));
            nonces.add(nonce);
            return send(res, 200, {
              nonce,
              expiresAt: new Date(Date.now() + 60_000).toISOString(),
            });
          }
          if (route === 'POST /v1/activate') return activate(body as ActivateRequest, res);
          if (route === 'GET /v1/manifest') {
            if (stub.manifestDown === true) return problem(res, 503, 'COORDINATOR_UNAVAILABLE');
            return send(res, 200, served);
          }
          return problem(res, 404, 'NOT_FOUND');
        })
        .catch((e: unknown) => {
          send(res, 500, { code: 'STUB_ERROR', detail: String(e) });
        });
    },
  );
  server.listen(o.port ?? 0, '127.0.0.1');
  await once(server, 'listening');
  (stub as { url: string }).url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  void newKeys;
  return stub;
}
