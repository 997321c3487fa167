import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';
import { startMeshProxy, parseHostPort } from '../src/mesh/proxy.js';
import type { MeshCredentials, MeshEvent, MeshProxy } from '../src/mesh/proxy.js';
import { spiffeIdOfCert, workloadOf } from '../src/mesh/spiffe.js';
import { createIntermediate, createRoot, issueLeaf } from './test-pki.js';
import type { Issued } from './test-pki.js';

const TD = 'shop.test';
let root: Issued;
let mesh: Issued;
const creds: Record<string, MeshCredentials> = {};
const closers: (() => Promise<void> | void)[] = [];

async function credsFor(ca: Issued, r: Issued, name: string): Promise<MeshCredentials> {
  const leaf = await issueLeaf(ca, [`spiffe://${TD}/${name}`]);
  return { key: leaf.keyPem, cert: `${leaf.certPem}\n${ca.certPem}\n`, ca: r.certPem };
}

before(async () => {
  root = await createRoot();
  mesh = await createIntermediate(root);
  for (const n of ['frontend', 'backend', 'intruder']) creds[n] = await credsFor(mesh, root, n);
});

after(async () => {
  for (const c of closers.reverse()) await c();
});

/** A backend that records connections, and on end of input replies with what it got, upper-cased. */
async function backend(): Promise<{ server: Server; port: number; conns: number }> {
  const state = { server: undefined as unknown as Server, port: 0, conns: 0 };
  state.server = createServer({ allowHalfOpen: true }, (s) => {
    state.conns++;
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      // Half-close: the client finished sending; we still answer on the other direction.
      s.end(Buffer.concat(chunks).toString().toUpperCase());
    });
  });
  state.server.listen(0, '127.0.0.1');
  await once(state.server, 'listening');
  state.port = (state.server.address() as AddressInfo).port;
  closers.push(() => new Promise<void>((r) => state.server.close(() => r())));
  return state;
}

async function proxy(
  opts: Parameters<typeof startMeshProxy>[0],
): Promise<{ p: MeshProxy; events: MeshEvent[] }> {
  const events: MeshEvent[] = [];
  const p = await startMeshProxy({ ...opts, onEvent: (e) => events.push(e) });
  closers.push(() => p.close());
  return { p, events };
}

/** Sends `msg`, half-closes, and resolves with everything received until the server closes. */
async function roundTrip(sock: Socket, msg: string): Promise<string> {
  const got: Buffer[] = [];
  sock.on('data', (c: Buffer) => got.push(c));
  sock.end(msg);
  await new Promise<void>((resolve) => {
    sock.on('close', () => resolve());
    sock.on('error', () => undefined);
  });
  return Buffer.concat(got).toString();
}

async function waitFor(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(pred(), 'condition not reached');
}

async function setupPair(allow: readonly string[], external = false) {
  const be = await backend();
  const ing = await proxy({
    trustDomain: TD,
    credentials: creds.backend as MeshCredentials,
    ingress: [{ port: 0, to: be.port, allow, bind: '127.0.0.1', external }],
    egress: [],
  });
  const port = (ing.p.ingress[0] as AddressInfo).port;
  return { be, ing, port };
}

async function egressTo(workload: string, as: string, port: number, target = 'backend') {
  const eg = await proxy({
    trustDomain: TD,
    credentials: creds[as] as MeshCredentials,
    ingress: [],
    egress: [{ listen: '127.0.0.1:0', workload: target, host: '127.0.0.1', port }],
  });
  void workload;
  return { eg, port: (eg.p.egress[0] as AddressInfo).port };
}

test('SPIFFE helpers', async () => {
  const leaf = await issueLeaf(mesh, [`spiffe://${TD}/x`]);
  assert.equal(spiffeIdOfCert(new Uint8Array(leaf.cert.rawData)), `spiffe://${TD}/x`);
  const two = await issueLeaf(mesh, [`spiffe://${TD}/x`, `spiffe://${TD}/y`]);
  assert.equal(spiffeIdOfCert(new Uint8Array(two.cert.rawData)), null);
  assert.equal(spiffeIdOfCert(new Uint8Array([1, 2, 3])), null);
  assert.equal(workloadOf(`spiffe://${TD}/x`, TD), 'x');
  assert.equal(workloadOf(`spiffe://other.test/x`, TD), null);
  assert.equal(workloadOf(`spiffe://${TD}/x/y`, TD), null);
  assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
  assert.throws(() => parseHostPort('127.0.0.1'), { code: 'AGENT_MESH_CONFIG_INVALID' });
  assert.throws(() => parseHostPort('127.0.0.1:70000'), { code: 'AGENT_MESH_CONFIG_INVALID' });
});

test('allowed peer: bytes pass both ways through egress -> ingress, with half-close', async () => {
  const { be, ing, port } = await setupPair(['frontend']);
  const { eg, port: local } = await egressTo('backend', 'frontend', port);
  const big = 'x'.repeat(2_000_000);
  const reply = await roundTrip(connect(local, '127.0.0.1'), `hello ${big}`);
  assert.equal(reply.length, 6 + big.length);
  assert.ok(reply.startsWith('HELLO XXX'));
  assert.equal(be.conns, 1);
  assert.ok(ing.events.some((e) => e.type === 'accepted' && e.peer === 'frontend'));
  assert.ok(eg.events.some((e) => e.type === 'accepted' && e.peer === 'backend'));
});

test('a peer with another SPIFFE ID is refused and never reaches the program', async () => {
  const { be, ing, port } = await setupPair(['frontend']);
  const { port: local } = await egressTo('backend', 'intruder', port);
  const reply = await roundTrip(connect(local, '127.0.0.1'), 'let me in');
  assert.equal(reply, '');
  await waitFor(() => ing.events.some((e) => e.type === 'refused'));
  const ev = ing.events.find((e) => e.type === 'refused');
  assert.equal(ev?.type === 'refused' && ev.peer, `spiffe://${TD}/intruder`);
  assert.equal(be.conns, 0);
});

test('egress refuses a server whose SPIFFE ID is not the target', async () => {
  const { be, port } = await setupPair(['frontend']);
  // frontend thinks it is dialling "billing", but the address serves "backend".
  const { eg, port: local } = await egressTo('billing', 'frontend', port, 'billing');
  const reply = await roundTrip(connect(local, '127.0.0.1'), 'secret');
  assert.equal(reply, '');
  await waitFor(() => eg.events.some((e) => e.type === 'refused'));
  assert.equal(be.conns, 0);
});

test('a client without a certificate is refused on a mesh-only ingress', async () => {
  const { be, ing, port } = await setupPair(['frontend']);
  const s = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    servername: 'backend',
    checkServerIdentity: () => undefined,
  });
  const reply = await roundTrip(s, 'anonymous');
  assert.equal(reply, '');
  await waitFor(() => ing.events.some((e) => e.type === 'refused'));
  assert.equal(be.conns, 0);
});

test('a certificate from another CA is refused, even on an external ingress', async () => {
  const otherRoot = await createRoot('Evil Root');
  const otherCa = await createIntermediate(otherRoot, 'Evil Mesh');
  const fake = await credsFor(otherCa, otherRoot, 'frontend');
  const { be, ing, port } = await setupPair(['frontend'], true);
  const s = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    key: fake.key,
    cert: fake.cert,
    checkServerIdentity: () => undefined,
  });
  const reply = await roundTrip(s, 'forged');
  assert.equal(reply, '');
  await waitFor(() => ing.events.some((e) => e.type === 'refused'));
  assert.equal(be.conns, 0);
});

test('external ingress admits clients without a certificate; they verify us by the root CA', async () => {
  const { be, ing, port } = await setupPair([], true);
  const s = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    checkServerIdentity: (_h, c) =>
      spiffeIdOfCert(c.raw) === `spiffe://${TD}/backend` ? undefined : new Error('wrong server'),
  });
  assert.equal(await roundTrip(s, 'public'), 'PUBLIC');
  assert.equal(be.conns, 1);
  assert.ok(ing.events.some((e) => e.type === 'accepted' && e.peer === 'external'));
  // A client that trusts another root does not accept our certificate.
  const other = await createRoot('Other');
  const bad = tlsConnect({ host: '127.0.0.1', port, ca: other.certPem });
  const [err] = (await once(bad, 'error')) as [Error & { code?: string }];
  assert.ok(err.code !== undefined);
});

test('certificate hot reload: new connections get the new certificate, old ones keep going', async () => {
  const { be, ing, port } = await setupPair(['frontend'], true);
  const serialOf = async (): Promise<string> => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: root.certPem,
      checkServerIdentity: () => undefined,
    });
    await once(s, 'secureConnect');
    const serial = s.getPeerCertificate().serialNumber;
    s.destroy();
    return serial;
  };
  const before = await serialOf();
  // An open connection across the swap.
  const held = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    checkServerIdentity: () => undefined,
  });
  await once(held, 'secureConnect');
  held.write('still ');
  // Renewal after a manifest update: new mesh CA under the same root.
  const rotated = await createIntermediate(root, 'Rotated Mesh CA');
  const next = await credsFor(rotated, root, 'backend');
  ing.p.updateCredentials(next);
  const afterSerial = await serialOf();
  assert.notEqual(afterSerial, before);
  assert.equal(
    afterSerial.toLowerCase().replace(/^0+/, ''),
    new (await import('@peculiar/x509')).X509Certificate(
      next.cert.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----',
    ).serialNumber.replace(/^0+/, ''),
  );
  assert.equal(await roundTrip(held, 'open'), 'STILL OPEN');
  // Egress picks up new client credentials too: a frontend with a rotated cert still gets in.
  const { eg, port: local } = await egressTo('backend', 'frontend', port);
  eg.p.updateCredentials(await credsFor(rotated, root, 'frontend'));
  assert.equal(await roundTrip(connect(local, '127.0.0.1'), 'rotated'), 'ROTATED');
  assert.ok(be.conns >= 2, `conns ${be.conns}`);
  // A broken credential is refused and leaves the old one in place.
  assert.throws(() => ing.p.updateCredentials({ ...next, key: 'garbage' }));
  assert.equal(await serialOf(), afterSerial);
});

test('egress listeners must be loopback; port clashes are reported', async () => {
  await assert.rejects(
    startMeshProxy({
      trustDomain: TD,
      credentials: creds.frontend as MeshCredentials,
      ingress: [],
      egress: [{ listen: '0.0.0.0:0', workload: 'backend', host: '127.0.0.1', port: 1 }],
    }),
    { code: 'AGENT_MESH_CONFIG_INVALID' },
  );
  const { port } = await setupPair([]);
  await assert.rejects(
    startMeshProxy({
      trustDomain: TD,
      credentials: creds.frontend as MeshCredentials,
      ingress: [{ port, to: 1, allow: [], bind: '127.0.0.1' }],
      egress: [],
    }),
    { code: 'AGENT_MESH_LISTEN_FAILED' },
  );
});

test('idle connections and silent handshakes are cut by their timeouts', async () => {
  const be = await backend();
  const events: MeshEvent[] = [];
  const p = await startMeshProxy({
    trustDomain: TD,
    credentials: creds.backend as MeshCredentials,
    ingress: [{ port: 0, to: be.port, allow: ['frontend'], bind: '127.0.0.1' }],
    egress: [],
    handshakeTimeoutMs: 150,
    idleTimeoutMs: 150,
    onEvent: (e) => events.push(e),
  });
  closers.push(() => p.close());
  const port = (p.ingress[0] as AddressInfo).port;
  // A TCP client that never starts TLS.
  const silent = connect(port, '127.0.0.1');
  silent.on('error', () => undefined);
  await once(silent, 'close');
  // A mesh peer that completes the handshake, then goes quiet.
  const fe = creds.frontend as MeshCredentials;
  const idle = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    key: fe.key,
    cert: fe.cert,
    checkServerIdentity: () => undefined,
  });
  idle.on('error', () => undefined);
  await once(idle, 'secureConnect');
  await once(idle, 'close');
  assert.ok(events.some((e) => e.type === 'accepted'));
});

/** A TLS client of an ingress, with `c`'s certificate or none; open until the test ends it. */
async function meshClient(port: number, c?: MeshCredentials) {
  const s = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    ...(c === undefined ? {} : { key: c.key, cert: c.cert }),
    checkServerIdentity: () => undefined,
  });
  s.on('error', () => undefined);
  await once(s, 'secureConnect');
  return s;
}

test('updateRoutes: a revoked peer loses its open connection and is refused from then on', async () => {
  const { be, ing, port } = await setupPair(['frontend', 'intruder']);
  const kept = await meshClient(port, creds.frontend);
  const revoked = await meshClient(port, creds.intruder);
  await waitFor(() => be.conns === 2);
  kept.write('still ');
  assert.equal(ing.p.updateRoutes([{ port: 0, allow: ['frontend'] }]), 1);
  await once(revoked, 'close');
  assert.ok(ing.events.some((e) => e.type === 'revoked' && e.peer === 'intruder'));
  // The peer still allowed keeps its connection; the revoked one cannot come back.
  assert.equal(await roundTrip(kept, 'here'), 'STILL HERE');
  const { port: local } = await egressTo('backend', 'intruder', port);
  assert.equal(await roundTrip(connect(local, '127.0.0.1'), 'again'), '');
  assert.equal(be.conns, 2);
  // A newly allowed workload gets in without a restart.
  ing.p.updateRoutes([{ port: 0, allow: ['frontend', 'intruder'] }]);
  const { port: local2 } = await egressTo('backend', 'intruder', port);
  assert.equal(await roundTrip(connect(local2, '127.0.0.1'), 'back'), 'BACK');
  // A port the proxy does not listen on, or external on a mesh-only listener: nothing swapped.
  assert.throws(
    () =>
      ing.p.updateRoutes([
        { port: 0, allow: [] },
        { port: 1, allow: [] },
      ]),
    { code: 'AGENT_MESH_CONFIG_INVALID' },
  );
  assert.throws(() => ing.p.updateRoutes([{ port: 0, allow: [], external: true }]), {
    code: 'AGENT_MESH_CONFIG_INVALID',
  });
  assert.equal(await roundTrip(await meshClient(port, creds.intruder), 'kept'), 'KEPT');
});

test('updateRoutes: revoking external closes and refuses clients without a certificate', async () => {
  const { be, ing, port } = await setupPair(['frontend'], true);
  const anonymous = await meshClient(port);
  const member = await meshClient(port, creds.frontend);
  await waitFor(() => be.conns === 2);
  assert.equal(ing.p.updateRoutes([{ port: 0, allow: ['frontend'], external: false }]), 1);
  await once(anonymous, 'close');
  assert.ok(ing.events.some((e) => e.type === 'revoked' && e.peer === 'external'));
  assert.equal(await roundTrip(member, 'member'), 'MEMBER');
  assert.equal(await roundTrip(await meshClient(port), 'anyone'), '');
  assert.equal(be.conns, 2);
});

test('an ingress resumes no TLS session: every connection shows a certificate that is checked now', async () => {
  const { port } = await setupPair(['frontend']);
  const first = await meshClient(port, creds.frontend);
  // TLS 1.3 sends tickets after the handshake: wait for one, if the server issues any.
  const session = await Promise.race([
    once(first, 'session').then(([s]) => s as Buffer),
    new Promise<undefined>((r) => setTimeout(() => r(undefined), 300)),
  ]);
  first.destroy();
  const again = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    key: (creds.frontend as MeshCredentials).key,
    cert: (creds.frontend as MeshCredentials).cert,
    checkServerIdentity: () => undefined,
    ...(session === undefined ? {} : { session }),
  });
  again.on('error', () => undefined);
  await once(again, 'secureConnect');
  // OpenSSL still hands out a TLS 1.3 session (stateful, without a ticket); the client offers
  // it, and the ingress, which keeps no session cache, does a full handshake anyway.
  assert.notEqual(session, undefined, 'the client had a session to offer');
  assert.equal(again.isSessionReused(), false);
  again.destroy();
});
