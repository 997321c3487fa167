import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { webcrypto } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import {
  ROUTES,
  checkBody,
  decryptBundle,
  manifestHash,
  ownerSignedBytes,
  releaseSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  verifyHistory,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import type { LightMyRequestResponse } from 'fastify';
import {
  agentKey,
  baseManifest,
  signTransition,
  simActivation,
  simEvidence,
  startFixture,
} from './helpers.js';
import type { Fixture } from './helpers.js';

type Inject = (
  m: string,
  url: string,
  body?: unknown,
  headers?: Record<string, string>,
) => Promise<LightMyRequestResponse>;

function injector(f: Fixture): Inject {
  return (method, url, body, headers) =>
    f.coord.server.inject({
      method: method as 'GET',
      url,
      ...(body === undefined
        ? {}
        : typeof body === 'string'
          ? { payload: body }
          : { payload: body as object }),
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
    });
}

function problem(r: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  assert.equal(r.headers['content-type'], 'application/problem+json; charset=utf-8', r.body);
  const p = r.json<Record<string, unknown>>();
  assert.equal(p.code, code, r.body);
  assert.equal(r.statusCode, status, r.body);
  assert.equal(p.status, status);
  return p;
}

async function setManifest(f: Fixture, inj: Inject, m: Manifest): Promise<LightMyRequestResponse> {
  const sig = await signTransition(m, 0, ZERO_HASH, 'set', f.install);
  return inj('PUT', '/v1/manifest', { manifest: m, signatures: [sig] });
}

describe('coordinator API (in process)', () => {
  let f: Fixture;
  let inj: Inject;
  let m: Manifest;
  before(async () => {
    f = await startFixture();
    inj = injector(f);
    m = baseManifest({}, { alice: f.alice });
  });
  after(async () => f.cleanup());

  it('before the first manifest: status, readyz, manifest and activation say so', async () => {
    const s = await inj('GET', '/v1/status');
    const st = checkBody(ROUTES.status.response, s.json());
    assert.equal(st.state, 'accepting-manifest');
    assert.equal(st.tee, 'sim');
    assert.equal(st.historyHead, ZERO_HASH);
    problem(await inj('GET', '/readyz'), 503, 'COORDINATOR_NOT_READY');
    problem(await inj('GET', '/v1/manifest'), 409, 'COORDINATOR_NO_MANIFEST');
    const { r } = await simActivation(f);
    problem(r, 409, 'COORDINATOR_NO_MANIFEST');
    assert.equal((await inj('GET', '/healthz')).json<{ ok: boolean }>().ok, true);
  });

  it('refuses a first manifest not signed by the install key, and an invalid manifest', async () => {
    problem(
      await inj('PUT', '/v1/manifest', { manifest: m, signatures: [] }),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    const asUpdate = await signTransition(m, 0, ZERO_HASH, 'update', f.install);
    problem(
      await inj('PUT', '/v1/manifest', { manifest: m, kind: 'update', signatures: [asUpdate] }),
      403,
      'COORDINATOR_TRANSITION_INVALID',
    );
    const byAlice = await signTransition(m, 0, ZERO_HASH, 'set', f.alice);
    problem(
      await inj('PUT', '/v1/manifest', { manifest: m, signatures: [byAlice] }),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    // Signed by the right key, but for another manifest: the transition hash differs.
    const other = await signTransition(
      { ...m, trustDomain: 'other.example' },
      0,
      ZERO_HASH,
      'set',
      f.install,
    );
    problem(
      await inj('PUT', '/v1/manifest', { manifest: m, signatures: [other] }),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    const bad = { ...m, workloads: { x: { package: 'nope' } } } as unknown as Manifest;
    const p = problem(await setManifest(f, inj, bad), 400, 'COORDINATOR_MANIFEST_INVALID');
    const problems = (p.details as { problems: { path: string }[] }).problems;
    assert.ok(
      problems.some((x) => x.path === '/workloads/x/package'),
      JSON.stringify(problems),
    );
    const badTemplate = baseManifest({
      workloads: { frontend: { package: 'dev', env: { X: '{{ pem .secrets.nope }}' } } },
    });
    problem(await setManifest(f, inj, badTemplate), 400, 'COORDINATOR_MANIFEST_INVALID');
    assert.equal(
      checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json()).state,
      'accepting-manifest',
    );
  });

  it('accepts the first manifest signed by the install key', async () => {
    const r = await setManifest(f, inj, m);
    assert.equal(r.statusCode, 200, r.body);
    const out = checkBody(ROUTES.setManifest.response, r.json());
    assert.equal(out.manifestHash, await manifestHash(m));
    assert.equal(out.seq, 0);
    const g = checkBody(ROUTES.getManifest.response, (await inj('GET', '/v1/manifest')).json());
    assert.equal(g.manifestHash, out.manifestHash);
    const h = checkBody(ROUTES.history.response, (await inj('GET', '/v1/manifest/history')).json());
    const v = await verifyHistory(h.entries, { manifests: h.manifests ?? {} });
    assert.equal(v.head, out.transitionHash);
    assert.equal((await inj('GET', '/readyz')).statusCode, 200);
    // Replaying the same set is refused: a manifest is already set.
    problem(await setManifest(f, inj, m), 401, 'COORDINATOR_SIGNATURE_INVALID');
    const again = await signTransition(m, 0, ZERO_HASH, 'set', f.install);
    problem(
      await inj('PUT', '/v1/manifest', { manifest: m, kind: 'set', signatures: [again] }),
      403,
      'COORDINATOR_TRANSITION_INVALID',
    );
  });

  it('uploads a user-defined secret only with an owner signature of the right role and version', async () => {
    const rootDer = new x509.X509Certificate(f.coord.rootCaPem).rawData;
    const value = new TextEncoder().encode('s3cret-Pa55');
    const sign = async (version: number, v = value, who = f.alice) =>
      signAsOwner(
        ownerSignedBytes(
          'secret',
          await secretDigest({
            rootCaDer: new Uint8Array(rootDer),
            name: 'dbPassword',
            version,
            value: v,
          }),
        ),
        who.name === 'install' ? 'alice' : who.name,
        who.keys.privateKey,
      );
    const body = async (version: number, who = f.alice) => ({
      value: toBase64Url(value),
      version,
      signature: await sign(version, value, who),
    });
    problem(
      await inj('PUT', '/v1/secrets/dbPassword', await body(0, f.install)),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    problem(
      await inj('PUT', '/v1/secrets/dbPassword', await body(1)),
      409,
      'COORDINATOR_HISTORY_CONFLICT',
    );
    problem(
      await inj('PUT', '/v1/secrets/apiKey', await body(0)),
      409,
      'COORDINATOR_SECRET_NOT_USER_DEFINED',
    );
    problem(await inj('PUT', '/v1/secrets/nosuch', await body(0)), 404, 'COORDINATOR_NOT_FOUND');
    // Before the upload, a workload whose template needs it cannot activate.
    problem((await simActivation(f)).r, 409, 'COORDINATOR_SECRET_MISSING');
    const ok = await inj('PUT', '/v1/secrets/dbPassword', await body(0));
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(checkBody(ROUTES.setSecret.response, ok.json()), {
      name: 'dbPassword',
      version: 0,
    });
    // Replaying the same signed upload is refused (version is single-use).
    problem(
      await inj('PUT', '/v1/secrets/dbPassword', await body(0)),
      409,
      'COORDINATOR_HISTORY_CONFLICT',
    );
  });

  it('activates a sim workload and returns a bundle only the agent key opens', async () => {
    const { r, agent } = await simActivation(f);
    assert.equal(r.statusCode, 200, r.body);
    const out = checkBody(ROUTES.activate.response, r.json());
    const bundle = await decryptBundle(out.bundle, agent.bundlePrivate);
    assert.deepEqual(bundle.args, ['/usr/bin/app', '--listen', ':8080']);
    assert.match(bundle.env.API_KEY ?? '', /^[0-9a-f]{64}$/);
    assert.match(bundle.env.INSTANCE_KEY ?? '', /^[0-9a-f]{32}$/);
    assert.equal(
      Buffer.from(bundle.files['/etc/app/key.bin'] ?? '', 'base64url').toString('hex'),
      bundle.env.API_KEY,
    );
    const leaf = new x509.X509Certificate(bundle.mesh.cert);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
    assert.deepEqual(
      san?.names.items.map((n) => [n.type, n.value]),
      [
        ['url', 'spiffe://shop.example/frontend'],
        ['dns', 'frontend'],
      ],
    );
    assert.equal(
      Buffer.from(bundle.files['/run/cloister/tls.crt'] ?? '', 'base64url')
        .toString()
        .trim(),
      leaf.toString('pem').trim(),
    );
    assert.deepEqual(new Uint8Array(leaf.publicKey.rawData), agent.spki);
    const inter = new x509.X509Certificate(bundle.mesh.intermediateCa);
    assert.ok(await leaf.verify({ publicKey: inter.publicKey }));
    assert.equal(bundle.mesh.rootCa.trim(), f.coord.rootCaPem.trim());
    // Another key cannot open it.
    const other = await agentKey();
    await assert.rejects(decryptBundle(out.bundle, other.bundlePrivate), {
      code: 'BUNDLE_INVALID',
    });
  });

  it('refuses: unknown workload, wrong measurement, debug, reused nonce, other key, bad CSR', async () => {
    problem(
      (await simActivation(f, { workload: 'nosuch' })).r,
      403,
      'COORDINATOR_UNKNOWN_WORKLOAD',
    );
    const wrong = problem(
      (await simActivation(f, { measurement: 'b2'.repeat(48) })).r,
      403,
      'COORDINATOR_APPRAISAL_FAILED',
    );
    assert.deepEqual(
      { rule: (wrong.details as Record<string, unknown>).rule, layer: wrong.layer },
      { rule: 'measurement', layer: 'POLICY' },
    );
    const dbg = problem(
      (await simActivation(f, { debug: true })).r,
      403,
      'COORDINATOR_APPRAISAL_FAILED',
    );
    assert.equal((dbg.details as Record<string, unknown>).rule, 'debug');

    const { r, nonce, evidence, agent } = await simActivation(f, { workload: 'backend' });
    assert.equal(r.statusCode, 200, r.body);
    const replay = await inj('POST', '/v1/activate', {
      workload: 'backend',
      nonce,
      evidence,
      csr: agent.csr,
      bundleKey: agent.bundleKey,
    });
    problem(replay, 403, 'COORDINATOR_NONCE_INVALID');

    // Evidence bound to agent A's keys, sent with agent B's (relay / key substitution), or with
    // A's certificate key and B's bundle key (a relay that would read the bundle).
    const a = await agentKey();
    const b = await agentKey();
    {
      const { nonce } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
      problem(
        await inj('POST', '/v1/activate', {
          workload: 'backend',
          nonce,
          evidence: await simEvidence(f.hw, nonce, a),
          csr: a.csr,
          bundleKey: b.bundleKey,
        }),
        403,
        'COORDINATOR_BINDING_MISMATCH',
      );
    }
    const { nonce: n2 } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    const ev2 = await simEvidence(f.hw, n2, a);
    const p = problem(
      await inj('POST', '/v1/activate', {
        workload: 'backend',
        nonce: n2,
        evidence: ev2,
        csr: b.csr,
        bundleKey: b.bundleKey,
      }),
      403,
      'COORDINATOR_BINDING_MISMATCH',
    );
    assert.equal(p.layer, 'BINDING');

    // Evidence for another nonce.
    const { nonce: n3 } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    const { nonce: n4 } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    const ev3 = await simEvidence(f.hw, n4, a);
    problem(
      await inj('POST', '/v1/activate', {
        workload: 'backend',
        nonce: n3,
        evidence: ev3,
        csr: a.csr,
        bundleKey: a.bundleKey,
      }),
      403,
      'COORDINATOR_BINDING_MISMATCH',
    );

    // A CSR that is not a CSR.
    const { nonce: n5 } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    problem(
      await inj('POST', '/v1/activate', {
        workload: 'backend',
        nonce: n5,
        evidence: ev3,
        csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----',
        bundleKey: a.bundleKey,
      }),
      400,
      'COORDINATOR_KEY_INVALID',
    );
    // A certificate key off the curve, and bundle keys nobody can agree a secret with (a
    // low-order point, the zero point), each bound by valid evidence: refused before anything
    // is committed.
    const offCurve = Buffer.from(a.spki);
    offCurve[90] = (offCurve[90] as number) ^ 1;
    const lowOrder = Buffer.alloc(32);
    lowOrder[0] = 1;
    for (const [spki, bundleRaw] of [
      [offCurve, a.bundleRaw],
      [a.spki, lowOrder],
      [a.spki, Buffer.alloc(32)],
    ] as const) {
      const { nonce } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
      problem(
        await inj('POST', '/v1/activate', {
          workload: 'backend',
          nonce,
          evidence: await simEvidence(f.hw, nonce, { spki, bundleRaw }),
          publicKey: Buffer.from(spki).toString('base64url'),
          bundleKey: Buffer.from(bundleRaw).toString('base64url'),
        }),
        400,
        'COORDINATOR_KEY_INVALID',
      );
    }
    // Forged sim evidence: one flipped byte in the signed region.
    const { nonce: n6 } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    const ev6 = await simEvidence(f.hw, n6, a);
    const raw = Buffer.from(ev6.data, 'base64url');
    raw[0x30] = (raw[0x30] ?? 0) ^ 1;
    const forged = await inj('POST', '/v1/activate', {
      workload: 'backend',
      nonce: n6,
      evidence: { type: 'sim', data: raw.toString('base64url') },
      csr: a.csr,
      bundleKey: a.bundleKey,
    });
    assert.equal(forged.statusCode, 403, forged.body);
    assert.equal(forged.json<{ layer: string }>().layer, 'SIGNATURE');
  });

  it('enforces maxInstances and lets a live instance renew without a new slot', async () => {
    const before = checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json());
    assert.equal(before.state, 'ready');
    const ids: string[] = [];
    const bundles: { keys: CryptoKeyPair; bundlePrivate: CryptoKey; bundle: string }[] = [];
    // One frontend is already live from the happy path test: two more reach the limit of 3.
    for (let i = 0; i < 2; i++) {
      const { r, agent } = await simActivation(f);
      assert.equal(r.statusCode, 200, r.body);
      ids.push(r.json<{ instanceId: string }>().instanceId);
      bundles.push({
        keys: agent.keys,
        bundlePrivate: agent.bundlePrivate,
        bundle: r.json<{ bundle: string }>().bundle,
      });
    }
    // An id is the activation time in ms (12 hex digits) and 80 random bits.
    for (const id of ids) {
      assert.match(id, /^[0-9a-f]{32}$/);
      assert.ok(Math.abs(parseInt(id.slice(0, 12), 16) - Date.now()) < 60_000, id);
    }
    assert.notEqual(ids[0], ids[1]);
    const p = problem((await simActivation(f)).r, 429, 'COORDINATOR_TOO_MANY_INSTANCES');
    assert.equal((p.details as Record<string, unknown>).rule, 'maxInstances');
    const renewed = await simActivation(f, {
      instanceId: ids[0] as string,
      instanceKey: bundles[0]?.keys.privateKey as CryptoKey,
    });
    assert.equal(renewed.r.statusCode, 200, renewed.r.body);
    assert.equal(renewed.r.json<{ instanceId: string }>().instanceId, ids[0]);
    const b0 = await decryptBundle(
      bundles[0]?.bundle ?? '',
      bundles[0]?.bundlePrivate as CryptoKey,
    );
    const b1 = await decryptBundle(
      renewed.r.json<{ bundle: string }>().bundle,
      renewed.agent.bundlePrivate,
    );
    // Per-instance secret stays across renewal; the shared one is the same for everyone.
    assert.equal(b1.env.INSTANCE_KEY, b0.env.INSTANCE_KEY);
    assert.equal(b1.env.API_KEY, b0.env.API_KEY);
    const other = await decryptBundle(
      bundles[1]?.bundle ?? '',
      bundles[1]?.bundlePrivate as CryptoKey,
    );
    assert.notEqual(other.env.INSTANCE_KEY, b0.env.INSTANCE_KEY);
    problem(
      (await simActivation(f, { instanceId: 'f'.repeat(32) })).r,
      404,
      'COORDINATOR_NOT_FOUND',
    );
    const metrics = (await inj('GET', '/metrics')).body;
    assert.match(
      metrics,
      /cloister_activation_refusals_total\{code="COORDINATOR_TOO_MANY_INSTANCES"\} 1/,
    );

    // Release: only the instance's current mesh key can free its slot, once per nonce.
    const release = async (id: string, keys: CryptoKeyPair, nonceOverride?: string) => {
      const nonce =
        nonceOverride ??
        (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>().nonce;
      const sig = await webcrypto.subtle.sign(
        { name: 'ECDSA', hash: 'SHA-256' },
        keys.privateKey,
        releaseSignedBytes(id, nonce),
      );
      const r = await inj('DELETE', `/v1/instances/${id}`, {
        nonce,
        signature: Buffer.from(sig).toString('base64url'),
      });
      return { r, nonce };
    };
    const id0 = ids[0] as string;
    const id1 = ids[1] as string;
    // Another instance's key, and the instance's key before its renewal, cannot release it.
    problem(
      (await release(id0, bundles[1]?.keys as CryptoKeyPair)).r,
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    problem(
      (await release(id0, bundles[0]?.keys as CryptoKeyPair)).r,
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    const live0 = checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json());
    assert.equal(live0.instances?.['frontend'], 3);
    const ok1 = await release(id1, bundles[1]?.keys as CryptoKeyPair);
    assert.equal(ok1.r.statusCode, 200, ok1.r.body);
    assert.deepEqual(checkBody(ROUTES.releaseInstance.response, ok1.r.json()), {
      instanceId: id1,
      released: true,
    });
    // A replayed release (same nonce) and a second release are refused.
    problem(
      (await release(id1, bundles[1]?.keys as CryptoKeyPair, ok1.nonce)).r,
      403,
      'COORDINATOR_NONCE_INVALID',
    );
    problem(
      (await release(id1, bundles[1]?.keys as CryptoKeyPair)).r,
      404,
      'COORDINATOR_NOT_FOUND',
    );
    problem(
      await inj('DELETE', '/v1/instances/not-an-id', { nonce: ok1.nonce, signature: 'AA' }),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    // The released instance cannot renew; its slot is free for a new one.
    problem((await simActivation(f, { instanceId: id1 })).r, 404, 'COORDINATOR_NOT_FOUND');
    const after1 = checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json());
    assert.equal(after1.instances?.['frontend'], 2);
    const again = await simActivation(f);
    assert.equal(again.r.statusCode, 200, again.r.body);
    problem((await simActivation(f)).r, 429, 'COORDINATOR_TOO_MANY_INSTANCES');
    const ok0 = await release(id0, renewed.agent.keys);
    assert.equal(ok0.r.statusCode, 200, ok0.r.body);
  });

  it('updates need owner signatures over the right transition', async () => {
    const cur = checkBody(ROUTES.getManifest.response, (await inj('GET', '/v1/manifest')).json());
    const head = checkBody(
      ROUTES.status.response,
      (await inj('GET', '/v1/status')).json(),
    ).historyHead;
    const next = { ...m, workloads: { ...m.workloads, extra: { package: 'dev' } } } as Manifest;
    // Signed by the install key (not an owner of the current manifest).
    const byInstall = await signTransition(next, 1, head, 'update', f.install);
    problem(
      await inj('PUT', '/v1/manifest', {
        manifest: next,
        kind: 'update',
        signatures: [{ ...byInstall, owner: 'alice' }],
      }),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    problem(
      await inj('PUT', '/v1/manifest', { manifest: next, kind: 'update', signatures: [] }),
      401,
      'COORDINATOR_THRESHOLD_NOT_MET',
    );
    // Signed against a stale head.
    const stale = await signTransition(next, 1, ZERO_HASH, 'update', f.alice);
    problem(
      await inj('PUT', '/v1/manifest', { manifest: next, kind: 'update', signatures: [stale] }),
      401,
      'COORDINATOR_SIGNATURE_INVALID',
    );
    const good = await signTransition(next, 1, head, 'update', f.alice);
    const r = await inj('PUT', '/v1/manifest', {
      manifest: next,
      kind: 'update',
      signatures: [good],
    });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json<{ seq: number }>().seq, cur.seq + 1);
    const h = checkBody(ROUTES.history.response, (await inj('GET', '/v1/manifest/history')).json());
    assert.equal(h.entries.length, 2);
    await verifyHistory(h.entries, { manifests: h.manifests ?? {} });
    // The uploaded user-defined secret and the shared secrets survive the update.
    const { r: a, agent } = await simActivation(f, { workload: 'extra' });
    assert.equal(a.statusCode, 200, a.body);
    void agent;
    // Now make it immutable: an update that removes every owner.
    const head2 = r.json<{ transitionHash: string }>().transitionHash;
    const { updates: _u, ...rest } = next;
    const frozen = { ...rest, owners: {} } as Manifest;
    const s2 = await signTransition(frozen, 2, head2, 'update', f.alice);
    const fr = await inj('PUT', '/v1/manifest', {
      manifest: frozen,
      kind: 'update',
      signatures: [s2],
    });
    assert.equal(fr.statusCode, 200, fr.body);
    const head3 = checkBody(
      ROUTES.status.response,
      (await inj('GET', '/v1/status')).json(),
    ).historyHead;
    const s3 = await signTransition(next, 3, head3, 'update', f.alice);
    problem(
      await inj('PUT', '/v1/manifest', { manifest: next, kind: 'update', signatures: [s3] }),
      409,
      'COORDINATOR_MANIFEST_IMMUTABLE',
    );
    assert.equal(await f.coord.service.verifyHistory(), head3);
  });

  it('attests with evidence bound to nonce, root CA, history head and TLS key', async () => {
    const { nonce } = (await inj('POST', '/v1/activate/challenge')).json<{ nonce: string }>();
    const r = await inj('POST', '/v1/attest', { nonce });
    assert.equal(r.statusCode, 200, r.body);
    const a = checkBody(ROUTES.attest.response, r.json());
    assert.equal(a.evidence.type, 'sim');
    assert.equal(a.history.length, 3);
    const st = checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json());
    assert.equal(a.historyHead, st.historyHead);
    assert.equal(a.manifestHash, st.manifestHash);
    assert.match(a.intermediateCa ?? '', /-----BEGIN CERTIFICATE-----/);
    assert.notEqual(a.intermediateCa, a.rootCa);
    problem(
      await inj('POST', '/v1/attest', { nonce: 'short' }),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
  });

  it('answers malformed requests with 4xx problems and changes nothing', async () => {
    const head = checkBody(
      ROUTES.status.response,
      (await inj('GET', '/v1/status')).json(),
    ).historyHead;
    problem(
      await inj('POST', '/v1/activate', '{"workload":'),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    problem(
      await inj('POST', '/v1/activate', { workload: 'frontend' }),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    problem(
      await inj('PUT', '/v1/manifest', { manifest: {}, signatures: [], extra: 1 }),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    problem(
      await inj('PUT', '/v1/manifest', '{"__proto__":{"x":1},"manifest":{},"signatures":[]}'),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    problem(
      await inj('PUT', '/v1/manifest', 'x'.repeat(2_000_000)),
      413,
      'COORDINATOR_BODY_TOO_LARGE',
    );
    problem(
      await inj('PUT', '/v1/manifest', '<a/>', { 'content-type': 'application/xml' }),
      422,
      'COORDINATOR_UNSUPPORTED_MEDIA_TYPE',
    );
    problem(await inj('GET', '/v1/nothing'), 404, 'COORDINATOR_NOT_FOUND');
    problem(await inj('DELETE', '/v1/manifest'), 404, 'COORDINATOR_NOT_FOUND');
    problem(
      await inj('PUT', '/v1/secrets/%00bad', {
        value: '',
        version: 0,
        signature: { owner: 'a', alg: 'ES256', signature: '' },
      }),
      400,
      'COORDINATOR_MALFORMED_REQUEST',
    );
    assert.equal(
      checkBody(ROUTES.status.response, (await inj('GET', '/v1/status')).json()).historyHead,
      head,
    );
  });

  it('publishes an OpenAPI document generated from the route schemas', async () => {
    const doc = (await inj('GET', '/v1/openapi.json')).json<{
      openapi: string;
      paths: Record<string, Record<string, { requestBody?: unknown }>>;
    }>();
    assert.equal(doc.openapi, '3.1.0');
    for (const p of [
      '/v1/activate/challenge',
      '/v1/activate',
      '/v1/attest',
      '/v1/manifest',
      '/v1/manifest/history',
      '/v1/secrets/{name}',
      '/v1/status',
      '/healthz',
      '/readyz',
      '/metrics',
    ]) {
      assert.ok(doc.paths[p] !== undefined, p);
    }
    assert.ok(doc.paths['/v1/activate']?.post?.requestBody !== undefined);
  });
});
