import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { COORDINATOR_CERT_URI } from '@cloister/protocol';
import { CoordinatorClient } from '../src/coordinator-client.js';
import { createIntermediate, createRoot, issueLeaf } from './test-pki.js';
import type { Issued } from './test-pki.js';

let root: Issued;
let server: Server;
let url: string;

before(async () => {
  root = await createRoot();
  const leaf = await issueLeaf(root, [COORDINATOR_CERT_URI], {
    dns: ['localhost'],
    ips: ['127.0.0.1'],
  });
  server = createServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => {
    switch (req.url ?? '') {
      case '/ok':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"a":1}');
        return;
      case '/text':
        res.writeHead(200).end('<html>');
        return;
      case '/big':
        res.writeHead(200);
        res.end(Buffer.alloc(17 * 1024 * 1024, 0x20));
        return;
      case '/busy':
        res.writeHead(503, { 'content-type': 'application/problem+json' });
        res.end('{"code":"COORDINATOR_NO_MANIFEST","status":503}');
        return;
      default:
        res.writeHead(403, { 'content-type': 'application/problem+json' });
        res.end('{"code":"X_REFUSED","detail":"no","details":{"rule":"r"}}');
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

test('answers are mapped to typed errors', async () => {
  const c = new CoordinatorClient({ url, rootCa: root.certPem });
  assert.deepEqual(await c.getJson('/ok'), { a: 1 });
  await assert.rejects(c.getJson('/text'), { code: 'AGENT_COORDINATOR_BAD_RESPONSE' });
  await assert.rejects(c.getJson('/big'), { code: 'AGENT_COORDINATOR_BAD_RESPONSE' });
  await assert.rejects(c.getJson('/busy'), { code: 'AGENT_COORDINATOR_UNREACHABLE' });
  await assert.rejects(
    c.postJson('/refuse', {}),
    (e: Error & { code?: string; details?: Record<string, unknown> }) => {
      assert.equal(e.code, 'AGENT_COORDINATOR_REFUSED');
      assert.deepEqual(e.details?.['problem'], {
        status: 403,
        code: 'X_REFUSED',
        detail: 'no',
        details: { rule: 'r' },
      });
      return true;
    },
  );
  assert.throws(() => new CoordinatorClient({ url: 'http://127.0.0.1:1' }), {
    code: 'AGENT_USAGE',
  });
  assert.throws(() => new CoordinatorClient({ url: 'not a url' }), { code: 'AGENT_USAGE' });
});

test('first contact records the certificate and checks it against the root later', async () => {
  const c = new CoordinatorClient({ url });
  assert.equal(c.pinned, false);
  await c.getJson('/ok');
  c.assertPeersChainTo(root.certPem);
  const other = await createRoot('Other');
  assert.throws(() => c.assertPeersChainTo(other.certPem), {
    code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH',
  });
  assert.throws(() => c.assertPeersChainTo('garbage'), { code: 'AGENT_BUNDLE_INVALID' });
  // The certificate must also name the host the agent dialled.
  const misnamed = await issueLeaf(root, [], { dns: ['other.example'] });
  const s2 = createServer({ key: misnamed.keyPem, cert: misnamed.certPem }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  s2.listen(0, '127.0.0.1');
  await once(s2, 'listening');
  const wrongHost = new CoordinatorClient({
    url: `https://127.0.0.1:${(s2.address() as AddressInfo).port}`,
  });
  await wrongHost.getJson('/');
  assert.throws(() => wrongHost.assertPeersChainTo(root.certPem), {
    code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH',
  });
  s2.closeAllConnections();
  s2.close();
  c.pin(root.certPem);
  assert.equal(c.pinned, true);
  c.assertSameRoot(root.certPem);
  assert.throws(() => c.assertSameRoot(other.certPem), {
    code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH',
  });
});

test('a mesh leaf or a certificate secret naming the host is not the coordinator', async () => {
  // A workload's certificate chains to the same root (through a mesh CA) and may name the host
  // (its ingress serves `localhost`); its program may hold the key.
  const meshCa = await createIntermediate(root);
  const meshLeaf = await issueLeaf(meshCa, ['spiffe://t.example/web'], {
    dns: ['localhost'],
    ips: ['127.0.0.1'],
  });
  const impostor = createServer(
    { key: meshLeaf.keyPem, cert: `${meshLeaf.certPem}\n${meshCa.certPem}` },
    (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'),
  );
  impostor.listen(0, '127.0.0.1');
  await once(impostor, 'listening');
  try {
    const c = new CoordinatorClient({
      url: `https://127.0.0.1:${(impostor.address() as AddressInfo).port}`,
      rootCa: root.certPem,
    });
    await assert.rejects(c.getJson('/ok'), { code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH' });
  } finally {
    impostor.closeAllConnections();
    impostor.close();
  }
  // Nor is a certificate secret: the root signs it itself, with names the owner chose, and a
  // workload holds its key; only the coordinator's certificate carries the coordinator's name.
  const secretCert = await issueLeaf(root, [], { dns: ['localhost'], ips: ['127.0.0.1'] });
  const holder = createServer({ key: secretCert.keyPem, cert: secretCert.certPem }, (_req, res) =>
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}'),
  );
  holder.listen(0, '127.0.0.1');
  await once(holder, 'listening');
  try {
    const holderUrl = `https://127.0.0.1:${(holder.address() as AddressInfo).port}`;
    const pinned = new CoordinatorClient({ url: holderUrl, rootCa: root.certPem });
    await assert.rejects(pinned.getJson('/'), { code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH' });
    const firstContact = new CoordinatorClient({ url: holderUrl });
    await firstContact.getJson('/');
    assert.throws(() => firstContact.assertPeersChainTo(root.certPem), {
      code: 'AGENT_COORDINATOR_IDENTITY_MISMATCH',
    });
  } finally {
    holder.closeAllConnections();
    holder.close();
  }
  // The coordinator's own certificate (issued by the root itself, with its name) still is.
  assert.deepEqual(await new CoordinatorClient({ url, rootCa: root.certPem }).getJson('/ok'), {
    a: 1,
  });
});
