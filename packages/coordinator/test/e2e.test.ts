/**
 * End to end over real TLS sockets: the flows users run (verify the coordinator, set the
 * manifest, upload a secret, activate workloads), and every activation refusal.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { randomBytes, X509Certificate as NodeX509 } from 'node:crypto';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { Agent, request } from 'undici';
import { simRootAnchor, verifySimReport } from '@cloister/evidence';
import {
  ROUTES,
  checkBody,
  coordinatorReportData,
  decryptBundle,
  nonceFromBase64Url,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  verifyHistory,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { coordinatorSimMeasurement } from '../src/measurement.js';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { coordinatorError } from '../src/error-codes.js';
import { agentKey, baseManifest, signTransition, simEvidence, startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

interface Client {
  call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }>;
  close(): Promise<void>;
}

function client(f: Fixture): Client {
  const dispatcher = new Agent({ connect: { ca: f.coord.rootCaPem, servername: 'localhost' } });
  return {
    async call(method, path, body) {
      const r = await request(`${f.coord.url}${path}`, {
        method: method as 'GET',
        dispatcher,
        ...(body === undefined
          ? {}
          : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
      });
      const text = await r.body.text();
      return { status: r.statusCode, json: JSON.parse(text) as Record<string, unknown> };
    },
    close: () => dispatcher.close(),
  };
}

/** The certificate (DER) the TLS listener actually presents. */
function peerCert(url: string, ca: string): Promise<Buffer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(
      { host: u.hostname, port: Number(u.port), ca, servername: 'localhost' },
      () => {
        const der = s.getPeerCertificate(true).raw;
        s.end();
        resolve(der);
      },
    );
    s.on('error', reject);
  });
}

async function uploadDbPassword(f: Fixture, c: Client, value: string): Promise<void> {
  const rootDer = new Uint8Array(new x509.X509Certificate(f.coord.rootCaPem).rawData);
  const v = new TextEncoder().encode(value);
  const signature = await signAsOwner(
    ownerSignedBytes(
      'secret',
      await secretDigest({ rootCaDer: rootDer, name: 'dbPassword', version: 0, value: v }),
    ),
    'alice',
    f.alice.keys.privateKey,
  );
  const r = await c.call('PUT', '/v1/secrets/dbPassword', {
    value: toBase64Url(v),
    version: 0,
    signature,
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

async function tryActivate(
  f: Fixture,
  c: Client,
  o: {
    workload?: string;
    measurement?: string;
    otherKey?: boolean;
    reuse?: { nonce: string };
  } = {},
) {
  const agent = await agentKey();
  const nonce =
    o.reuse?.nonce ??
    checkBody(
      ROUTES.activateChallenge.response,
      (await c.call('POST', '/v1/activate/challenge')).json,
    ).nonce;
  const bound = o.otherKey === true ? await agentKey() : agent;
  const evidence = await simEvidence(
    f.hw,
    nonce,
    bound,
    o.measurement === undefined ? {} : { measurement: o.measurement },
  );
  const r = await c.call('POST', '/v1/activate', {
    workload: o.workload ?? 'frontend',
    nonce,
    evidence,
    csr: agent.csr,
    bundleKey: agent.bundleKey,
  });
  return { ...r, agent, nonce };
}

describe('coordinator end to end over TLS', () => {
  let f: Fixture;
  let c: Client;
  let clock = Date.now();
  before(async () => {
    f = await startFixture({ now: () => new Date(clock) });
    c = client(f);
  });
  after(async () => {
    await c.close();
    await f.cleanup();
  });

  it('a client verifies the coordinator: evidence binds nonce, root CA, history head and the TLS key', async () => {
    const nonce = toBase64Url(randomBytes(32));
    const r = await c.call('POST', '/v1/attest', { nonce });
    assert.equal(r.status, 200);
    const a = checkBody(ROUTES.attest.response, r.json);
    const tlsDer = await peerCert(f.coord.url, f.coord.rootCaPem);
    const tlsSpki = new Uint8Array(
      new x509.X509Certificate(new Uint8Array(tlsDer)).publicKey.rawData,
    );
    assert.equal(a.tlsSpki, toBase64Url(tlsSpki));
    const claims = await verifySimReport(Buffer.from(a.evidence.data, 'base64url'), {
      now: new Date(),
      roots: [simRootAnchor(f.hw)],
      allowSimulation: true,
    });
    const rootDer = new Uint8Array(new x509.X509Certificate(a.rootCa).rawData);
    const expected = await coordinatorReportData(
      nonceFromBase64Url(nonce),
      rootDer,
      new Uint8Array(32),
      tlsSpki,
    );
    assert.equal(claims.reportData, Buffer.from(expected).toString('hex'));
    assert.equal(
      claims.measurement,
      Buffer.from(await coordinatorSimMeasurement()).toString('hex'),
    );
    // The TLS certificate is issued by the attested root.
    const root = new NodeX509(a.rootCa);
    const leaf = new NodeX509(tlsDer);
    assert.ok(leaf.checkIssued(root) && leaf.verify(root.publicKey));
  });

  it('sets the manifest, uploads a secret, activates, and refuses every bad activation', async () => {
    const m = baseManifest({}, { alice: f.alice });
    const sig = await signTransition(m, 0, ZERO_HASH, 'set', f.install);
    const set = await c.call('PUT', '/v1/manifest', { manifest: m, signatures: [sig] });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    await uploadDbPassword(f, c, 'correct horse');

    const ok = await tryActivate(f, c);
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const out = checkBody(ROUTES.activate.response, ok.json);
    const bundle = await decryptBundle(out.bundle, ok.agent.bundlePrivate);
    assert.equal(
      Buffer.from(bundle.files['/etc/app/db.conf'] ?? '', 'base64url').toString(),
      'password=correct horse',
    );
    assert.match(out.certificate, /BEGIN CERTIFICATE[\s\S]*BEGIN CERTIFICATE/);

    const code = (r: { json: Record<string, unknown> }) => r.json.code;
    assert.equal(
      code(await tryActivate(f, c, { measurement: 'ee'.repeat(48) })),
      'COORDINATOR_APPRAISAL_FAILED',
    );
    assert.equal(
      code(await tryActivate(f, c, { workload: 'ghost' })),
      'COORDINATOR_UNKNOWN_WORKLOAD',
    );
    assert.equal(code(await tryActivate(f, c, { otherKey: true })), 'COORDINATOR_BINDING_MISMATCH');
    const reused = await tryActivate(f, c, { reuse: { nonce: ok.nonce } });
    assert.equal(reused.status, 403);
    assert.equal(code(reused), 'COORDINATOR_NONCE_INVALID');
    // Expired: ask, then let the clock pass the 60 s TTL.
    const { nonce } = checkBody(
      ROUTES.activateChallenge.response,
      (await c.call('POST', '/v1/activate/challenge')).json,
    );
    clock += 61_000;
    const expired = await tryActivate(f, c, { reuse: { nonce } });
    assert.equal(code(expired), 'COORDINATOR_NONCE_INVALID');
    assert.equal((expired.json.details as Record<string, unknown>).rule, 'nonce.ttl');
    // Two more reach maxInstances = 3; the fourth is refused.
    assert.equal((await tryActivate(f, c)).status, 200);
    assert.equal((await tryActivate(f, c)).status, 200);
    const tooMany = await tryActivate(f, c);
    assert.equal(tooMany.status, 429);
    assert.equal(code(tooMany), 'COORDINATOR_TOO_MANY_INSTANCES');
    // When certificates expire, the slots free up.
    clock += 86_400_000 + 1000;
    assert.equal((await tryActivate(f, c)).status, 200);

    // The manifest stops allowing simulation: sim evidence is refused before verification.
    const head = (await c.call('GET', '/v1/status')).json.historyHead as string;
    const noSim = {
      ...m,
      packages: { dev: { tee: 'sev-snp', measurement: 'ab'.repeat(48) } },
      policy: { allowSimulation: false },
    } as Manifest;
    const s2 = await signTransition(noSim, 1, head, 'update', f.alice);
    const upd = await c.call('PUT', '/v1/manifest', {
      manifest: noSim,
      kind: 'update',
      signatures: [s2],
    });
    assert.equal(upd.status, 200, JSON.stringify(upd.json));
    const refused = await tryActivate(f, c, { workload: 'backend' });
    assert.equal(code(refused), 'COORDINATOR_SIMULATION_REFUSED');

    const h = checkBody(
      ROUTES.history.response,
      (await c.call('GET', '/v1/manifest/history')).json,
    );
    const v = await verifyHistory(h.entries, { manifests: h.manifests ?? {} });
    assert.equal(v.length, 2);
  });
});

describe('a coordinator started without --simulation', () => {
  it('refuses sim evidence even when the manifest allows it, and refuses to start without a TEE', async () => {
    const f = await startFixture({
      simulation: undefined as never,
      tee: {
        sealer: new DerivedKeySealer('test', randomBytes(32), randomBytes(48)),
        attester: {
          type: 'sev-snp',
          evidence: () =>
            Promise.reject(coordinatorError('COORDINATOR_NO_TEE', 'no hardware here')),
        },
      },
    });
    const c = client(f);
    try {
      const m = baseManifest({}, { alice: f.alice });
      const { dbPassword: _d, ...secrets } = m.secrets ?? {};
      const m2 = {
        ...m,
        secrets,
        workloads: { backend: { package: 'dev' } },
        owners: { alice: { publicKey: f.alice.pem, roles: ['update'] } },
      } as Manifest;
      const sig = await signTransition(m2, 0, ZERO_HASH, 'set', f.install);
      const set = await c.call('PUT', '/v1/manifest', { manifest: m2, signatures: [sig] });
      assert.equal(set.status, 200, JSON.stringify(set.json));
      const r = await tryActivate(f, c, { workload: 'backend' });
      assert.equal(r.json.code, 'COORDINATOR_SIMULATION_REFUSED');
      const d = r.json.details as { actual: Record<string, boolean> };
      assert.deepEqual(d.actual, { manifest: true, coordinator: false });
      const status = checkBody(ROUTES.status.response, (await c.call('GET', '/v1/status')).json);
      assert.equal(status.tee, 'sev-snp');
    } finally {
      await c.close();
      await f.cleanup();
    }
    const { createCoordinator } = await import('../src/coordinator.js');
    await assert.rejects(
      createCoordinator({
        dataDir: '/nonexistent',
        listen: '127.0.0.1:0',
        ownerKeyPem: f.install.pem,
      }),
      { code: 'COORDINATOR_NO_TEE' },
    );
  });
});
