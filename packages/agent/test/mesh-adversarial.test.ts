/**
 * Adversarial tests of the mesh proxy: peer certificates that chain to the root but are not
 * workload identities, and listener addresses that the untrusted host can redirect.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dns from 'node:dns';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { webcrypto } from 'node:crypto';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { once } from 'node:events';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { startMeshProxy } from '../src/mesh/proxy.js';
import type { MeshCredentials, MeshEvent } from '../src/mesh/proxy.js';
import { spiffeIdOfCert } from '../src/mesh/spiffe.js';
import { createIntermediate, createRoot, issueLeaf, newKeys } from './test-pki.js';
import type { Issued } from './test-pki.js';

const TD = 'shop.test';
let root: Issued;
let mesh: Issued;
const creds: Record<string, MeshCredentials> = {};
const closers: (() => Promise<void> | void)[] = [];

async function credsFor(name: string): Promise<MeshCredentials> {
  const leaf = await issueLeaf(mesh, [`spiffe://${TD}/${name}`]);
  return { key: leaf.keyPem, cert: `${leaf.certPem}\n${mesh.certPem}\n`, ca: root.certPem };
}

/** A certificate under the mesh CA with a workload's SPIFFE ID but the given CA flag and key usage. */
async function signingCert(
  name: string,
  ca: boolean,
  usage: number,
): Promise<{ der: Uint8Array; creds: MeshCredentials }> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '7a01',
    subject: 'CN=not a leaf',
    issuer: mesh.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    publicKey: keys.publicKey,
    signingKey: mesh.keys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(ca, undefined, true),
      new x509.KeyUsagesExtension(usage, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${TD}/${name}` }]),
      await x509.AuthorityKeyIdentifierExtension.create(mesh.keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    der: new Uint8Array(cert.rawData),
    creds: {
      key: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
      cert: `${cert.toString('pem')}\n${mesh.certPem}\n`,
      ca: root.certPem,
    },
  };
}

async function backend(): Promise<{ server: Server; port: number; conns: number }> {
  const state = { server: undefined as unknown as Server, port: 0, conns: 0 };
  state.server = createServer((s) => {
    state.conns++;
    s.end('reached');
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  closers.push(() => new Promise<void>((r) => state.server.close(() => r())));
  return state;
}

async function waitFor(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(pred(), 'condition not reached');
}

before(async () => {
  root = await createRoot();
  mesh = await createIntermediate(root);
  for (const n of ['frontend', 'backend']) creds[n] = await credsFor(n);
});

after(async () => {
  for (const c of closers.reverse()) await c();
});

test('a CA certificate is not a workload identity, even with a SPIFFE URI SAN', async () => {
  const K = x509.KeyUsageFlags;
  // SPIFFE X509-SVID §5.2: a leaf SVID has cA false and neither keyCertSign nor cRLSign.
  const caFlag = await signingCert('frontend', true, K.digitalSignature | K.keyCertSign);
  const certSign = await signingCert('frontend', false, K.digitalSignature | K.keyCertSign);
  const crlSign = await signingCert('frontend', false, K.digitalSignature | K.cRLSign);
  assert.equal(spiffeIdOfCert(caFlag.der), null);
  assert.equal(spiffeIdOfCert(certSign.der), null);
  assert.equal(spiffeIdOfCert(crlSign.der), null);

  // Over the wire: the ingress refuses a client presenting the CA certificate.
  const be = await backend();
  const events: MeshEvent[] = [];
  const ing = await startMeshProxy({
    trustDomain: TD,
    credentials: creds.backend as MeshCredentials,
    ingress: [{ port: 0, to: be.port, allow: ['frontend'], bind: '127.0.0.1' }],
    egress: [],
    onEvent: (e) => events.push(e),
  });
  closers.push(() => ing.close());
  const s = tlsConnect({
    host: '127.0.0.1',
    port: (ing.ingress[0] as AddressInfo).port,
    ca: root.certPem,
    key: caFlag.creds.key,
    cert: caFlag.creds.cert,
    checkServerIdentity: () => undefined,
  });
  s.on('error', () => undefined);
  s.resume();
  await new Promise((r) => s.on('close', r));
  await waitFor(() => events.some((e) => e.type === 'refused'));
  assert.equal(be.conns, 0);
  assert.ok(!events.some((e) => e.type === 'accepted'));

  // And an egress refuses a server presenting it as the target's identity.
  const got: Buffer[] = [];
  const impostor = createTlsServer(
    { key: caFlag.creds.key, cert: caFlag.creds.cert, ca: root.certPem },
    (c) => {
      c.on('data', (d: Buffer) => got.push(d));
      c.on('error', () => undefined);
    },
  );
  impostor.listen(0, '127.0.0.1');
  await once(impostor, 'listening');
  closers.push(() => new Promise<void>((r) => impostor.close(() => r())));
  const egEvents: MeshEvent[] = [];
  const eg = await startMeshProxy({
    trustDomain: TD,
    credentials: creds.backend as MeshCredentials,
    ingress: [],
    egress: [
      {
        listen: '127.0.0.1:0',
        workload: 'frontend',
        host: '127.0.0.1',
        port: (impostor.address() as AddressInfo).port,
      },
    ],
    onEvent: (e) => egEvents.push(e),
  });
  closers.push(() => eg.close());
  const local = connect((eg.egress[0] as AddressInfo).port, '127.0.0.1');
  local.on('error', () => undefined);
  local.write('secret');
  await new Promise((r) => local.on('close', r));
  await waitFor(() => egEvents.some((e) => e.type === 'refused'));
  assert.ok(!egEvents.some((e) => e.type === 'accepted'));
  assert.equal(Buffer.concat(got).length, 0);
});

test('an egress listener on "localhost" that resolves off loopback is refused', async (t) => {
  // The host (for example the orchestrator's /etc/hosts) decides what "localhost" resolves to
  // and is not trusted: pretend it maps localhost to every interface.
  const real = dns.lookup;
  const lookup = ((host: string, opts: unknown, cb?: unknown) => {
    const done = (typeof opts === 'function' ? opts : cb) as (
      e: Error | null,
      a: string,
      f: number,
    ) => void;
    if (host === 'localhost') return done(null, '0.0.0.0', 4);
    return (real as (...a: unknown[]) => void)(host, opts, cb);
  }) as typeof dns.lookup;
  dns.lookup = lookup;
  t.after(() => {
    dns.lookup = real;
  });
  let proxy: Awaited<ReturnType<typeof startMeshProxy>> | undefined;
  await assert.rejects(
    (async () => {
      proxy = await startMeshProxy({
        trustDomain: TD,
        credentials: creds.frontend as MeshCredentials,
        ingress: [],
        egress: [{ listen: 'localhost:0', workload: 'backend', host: '127.0.0.1', port: 1 }],
      });
    })(),
    { code: 'AGENT_MESH_CONFIG_INVALID' },
  );
  await proxy?.close();
  dns.lookup = real;
  // A "localhost" that resolves to loopback still works.
  const ok = await startMeshProxy({
    trustDomain: TD,
    credentials: creds.frontend as MeshCredentials,
    ingress: [],
    egress: [{ listen: 'localhost:0', workload: 'backend', host: '127.0.0.1', port: 1 }],
  });
  closers.push(() => ok.close());
  assert.ok(['127.0.0.1', '::1'].includes((ok.egress[0] as AddressInfo).address));
});
