/**
 * Who may renew an instance. Instance ids are not secret (every mesh peer sees them in the
 * instance's certificate), so an attested sibling of the same workload that learned another
 * instance's id must not be able to renew it: it would take that instance's per-instance secrets
 * and replace its key. A renewal is signed with the instance's current mesh key over
 * `renewalSignedBytes(instanceId, nonce, report data)`.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { createPrivateKey, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import {
  ROUTES,
  activationReportData,
  checkBody,
  decryptBundle,
  nonceFromBase64Url,
  releaseSignedBytes,
  renewalSignedBytes,
  toBase64Url,
} from '@cloister/protocol';
import type { ActivationBundle, Manifest } from '@cloister/protocol';
import type { LightMyRequestResponse } from 'fastify';
import { coordinatorSimMeasurement } from '../src/measurement.js';
import type { InstanceRecord } from '../src/service.js';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { Store } from '../src/store/store.js';
import {
  agentKey,
  installManifest,
  renewalSignature,
  simActivation,
  simEvidence,
  startFixture,
} from './helpers.js';
import type { FakeAgent, Fixture } from './helpers.js';

const manifest: Manifest = {
  version: 1,
  trustDomain: 'renew.example',
  packages: { dev: { tee: 'sim', measurement: 'a1'.repeat(48) } },
  workloads: {
    frontend: { package: 'dev', env: { INSTANCE_KEY: '{{ hex .secrets.k }}' } },
    // The coordinator makes this workload's mesh key and ships it to the program.
    keyed: {
      package: 'dev',
      env: { INSTANCE_KEY: '{{ hex .secrets.k }}' },
      files: { '/run/tls/key.pem': '{{ pem .mesh.key }}' },
    },
  },
  secrets: { k: { type: 'symmetric', bits: 128, perInstance: true } },
  policy: { allowSimulation: true },
};

/** An activated (or renewed) instance as its agent knows it. */
interface Instance {
  readonly id: string;
  /** The instance's current mesh key. */
  readonly key: CryptoKey;
  /** Its per-instance secret (hex). */
  readonly secret: string | undefined;
  readonly bundle: ActivationBundle;
  readonly certificate: string;
  readonly expiresAt: string;
}

async function importMeshKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
    'sign',
  ]);
}

/** The instance an answer of 200 describes (its mesh key is the agent's, or the bundle's). */
async function instanceOf(r: LightMyRequestResponse, agent: FakeAgent): Promise<Instance> {
  assert.equal(r.statusCode, 200, r.body);
  const out = checkBody(ROUTES.activate.response, r.json());
  const bundle = await decryptBundle(out.bundle, agent.bundlePrivate);
  return {
    id: out.instanceId,
    key:
      bundle.mesh.key === undefined ? agent.keys.privateKey : await importMeshKey(bundle.mesh.key),
    secret: bundle.env['INSTANCE_KEY'],
    bundle,
    certificate: out.certificate,
    expiresAt: out.expiresAt,
  };
}

async function activated(f: Fixture, workload = 'frontend'): Promise<Instance> {
  const { r, agent } = await simActivation(f, { workload });
  return instanceOf(r, agent);
}

/** A fresh agent's activation body (`publicKey` form) for a fresh nonce, not yet a renewal. */
async function request(f: Fixture, workload = 'frontend') {
  const agent = await agentKey();
  const ch = await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' });
  const { nonce } = checkBody(ROUTES.activateChallenge.response, ch.json());
  const body = {
    workload,
    nonce,
    evidence: await simEvidence(f.hw, nonce, agent),
    publicKey: toBase64Url(agent.spki),
    bundleKey: agent.bundleKey,
  };
  return { agent, nonce, body };
}

async function post(f: Fixture, body: object): Promise<LightMyRequestResponse> {
  return f.coord.server.inject({ method: 'POST', url: '/v1/activate', payload: body });
}

/** Renews `inst` with a fresh agent, signed with `key` (default: the instance's key). */
async function renew(
  f: Fixture,
  inst: Pick<Instance, 'id' | 'key'>,
  workload = 'frontend',
  key = inst.key,
): Promise<{ r: LightMyRequestResponse; agent: FakeAgent }> {
  const { agent, nonce, body } = await request(f, workload);
  const instanceSignature = await renewalSignature(key, inst.id, nonce, agent);
  return { r: await post(f, { ...body, instanceId: inst.id, instanceSignature }), agent };
}

function refused(r: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  const p = r.json<Record<string, unknown>>();
  assert.equal(r.statusCode, status, r.body);
  assert.equal(p['code'], code, r.body);
  return p;
}

function refusedSignature(r: LightMyRequestResponse): void {
  const p = refused(r, 401, 'COORDINATOR_SIGNATURE_INVALID');
  assert.equal((p['details'] as Record<string, unknown>)['rule'], 'renewal.signature');
}

async function sign(key: CryptoKey, bytes: Uint8Array): Promise<string> {
  const sig = await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, bytes);
  return toBase64Url(new Uint8Array(sig));
}

/** The stored record of instance `id`, read after closing the coordinator (it locks the store). */
async function storedInstance(f: Fixture, id: string): Promise<InstanceRecord | undefined> {
  await f.coord.close();
  const jwk = JSON.parse(readFileSync(join(f.simDir, 'platform.key.jwk'), 'utf8')) as { d: string };
  const sealer = new DerivedKeySealer(
    'sim',
    new Uint8Array(Buffer.from(jwk.d, 'base64url')),
    await coordinatorSimMeasurement(),
  );
  const store = await Store.open(f.dataDir, sealer);
  try {
    return store.get<InstanceRecord>('instances', id);
  } finally {
    store.close();
  }
}

describe('instance renewal by an attested sibling', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
    await installManifest(f, manifest);
  });
  after(async () => f.cleanup());

  it('an attested sibling that knows an instance id cannot renew it; nothing changes', async () => {
    const victim = await simActivation(f);
    const inst = await instanceOf(victim.r, victim.agent);
    // The sibling is attested (same workload, same code) and is an instance itself.
    const sibling = await activated(f);

    // Naming the id alone is no longer a renewal request at all.
    const { body } = await request(f);
    refused(await post(f, { ...body, instanceId: inst.id }), 400, 'COORDINATOR_MALFORMED_REQUEST');
    // Signed with its own fresh key, or with its own instance's mesh key.
    refusedSignature((await simActivation(f, { instanceId: inst.id })).r);
    refusedSignature((await renew(f, inst, 'frontend', sibling.key)).r);
    // The csr form as well as the publicKey form.
    refusedSignature((await simActivation(f, { instanceId: inst.id, instanceKey: sibling.key })).r);

    const rec = await storedInstance(f, inst.id);
    assert.ok(rec !== undefined);
    assert.equal(rec.meshSpki, toBase64Url(victim.agent.spki), 'the key was replaced');
    assert.equal(rec.activations, 1);
    assert.equal(rec.notAfter, new Date(inst.expiresAt).toISOString());
    const leaf = new x509.X509Certificate(
      inst.certificate.split(/(?<=-----END CERTIFICATE-----)/)[0] ?? '',
    );
    assert.equal(BigInt(`0x${rec.serial}`), BigInt(`0x${leaf.serialNumber}`));
    const stored = rec.perInstance['k']?.value;
    assert.ok(stored?.type === 'bytes');
    assert.equal(Buffer.from(stored.value, 'base64url').toString('hex'), inst.secret);
  });
});

describe('instance renewal signatures', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
    await installManifest(f, manifest);
  });
  after(async () => f.cleanup());

  it("renews with the instance's current key; the key it replaced no longer renews", async () => {
    const first = await activated(f);
    const a = await simActivation(f, { instanceId: first.id, instanceKey: first.key });
    const second = await instanceOf(a.r, a.agent);
    assert.equal(second.id, first.id);
    assert.equal(second.secret, first.secret);
    refusedSignature((await renew(f, first)).r);
    const b = await renew(f, second);
    const third = await instanceOf(b.r, b.agent);
    assert.equal(third.id, first.id);
    assert.equal(third.secret, first.secret);
  });

  it('.mesh.key: renews with the key the coordinator made, not the activation key', async () => {
    const { r, agent } = await simActivation(f, { workload: 'keyed' });
    const first = await instanceOf(r, agent);
    assert.ok(first.bundle.mesh.key !== undefined);
    refusedSignature((await renew(f, first, 'keyed', agent.keys.privateKey)).r);
    const b = await renew(f, first, 'keyed');
    const second = await instanceOf(b.r, b.agent);
    assert.equal(second.id, first.id);
    assert.equal(second.secret, first.secret);
    assert.notEqual(second.bundle.mesh.key, first.bundle.mesh.key);
    refusedSignature((await renew(f, first, 'keyed')).r);
    const c = await renew(f, second, 'keyed');
    assert.equal((await instanceOf(c.r, c.agent)).secret, first.secret);
  });

  it('a renewal without its signature, or a signature without an instance, is malformed', async () => {
    const inst = await activated(f);
    const good = await renew(f, inst);
    const cur = await instanceOf(good.r, good.agent);
    const { agent, nonce, body } = await request(f);
    const sig = await renewalSignature(cur.key, cur.id, nonce, agent);
    const malformed = [
      { ...body, instanceId: cur.id },
      { ...body, instanceSignature: sig },
      { ...body, instanceId: cur.id, instanceSignature: '' },
      { ...body, instanceId: cur.id, instanceSignature: sig.slice(1) },
      { ...body, instanceId: cur.id, instanceSignature: `${sig}A` },
      { ...body, instanceId: cur.id, instanceSignature: `${sig}==` },
      { ...body, instanceId: cur.id, instanceSignature: `${sig.slice(2)}+/` },
      { ...body, instanceId: cur.id, instanceSignature: '!'.repeat(86) },
      { ...body, instanceId: cur.id, instanceSignature: 64 },
      { ...body, instanceId: cur.id, instanceSignature: [sig] },
      { ...body, instanceId: cur.id, instanceSignature: null },
      { ...body, instanceId: null, instanceSignature: sig },
    ];
    for (const m of malformed) {
      const p = refused(await post(f, m), 400, 'COORDINATOR_MALFORMED_REQUEST');
      assert.match(String((p['details'] as Record<string, unknown>)['path']), /^body/);
    }
    // None of them consumed the nonce or changed the instance: the same request, whole, renews.
    const ok = await post(f, { ...body, instanceId: cur.id, instanceSignature: sig });
    const renewed = await instanceOf(ok, agent);
    assert.equal(renewed.secret, inst.secret);
  });

  it("a signature by the instance's key over other bytes is refused", async () => {
    const inst = await activated(f);
    type Req = Awaited<ReturnType<typeof request>>;
    const reportData = (q: Req) =>
      activationReportData(nonceFromBase64Url(q.nonce), q.agent.spki, q.agent.bundleRaw);
    const variants: [string, (q: Req) => Promise<string>][] = [
      [
        'another nonce',
        async (q) =>
          sign(
            inst.key,
            renewalSignedBytes(inst.id, (await request(f)).nonce, await reportData(q)),
          ),
      ],
      [
        'other new keys',
        async (q) => renewalSignature(inst.key, inst.id, q.nonce, await agentKey()),
      ],
      [
        'another instance',
        async (q) => renewalSignature(inst.key, 'f'.repeat(32), q.nonce, q.agent),
      ],
      ['a release', async (q) => sign(inst.key, releaseSignedBytes(inst.id, q.nonce))],
      ['zeros', () => Promise.resolve(toBase64Url(new Uint8Array(64)))],
      ['ones', () => Promise.resolve(toBase64Url(new Uint8Array(64).fill(0xff)))],
    ];
    for (const [what, signature] of variants) {
      const q = await request(f);
      const r = await post(f, {
        ...q.body,
        instanceId: inst.id,
        instanceSignature: await signature(q),
      });
      assert.equal(r.statusCode, 401, `${what}: ${r.body}`);
      refusedSignature(r);
    }
    const ok = await renew(f, inst);
    assert.equal((await instanceOf(ok.r, ok.agent)).secret, inst.secret);
  });

  it('any instanceSignature but the right one is refused with a typed error (property)', async () => {
    const inst = await activated(f);
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ maxLength: 120 }),
          fc.stringMatching(/^[A-Za-z0-9_-]{80,90}$/),
          fc.uint8Array({ minLength: 62, maxLength: 66 }).map((b) => toBase64Url(b)),
        ),
        async (instanceSignature) => {
          const q = await request(f);
          const r = await post(f, { ...q.body, instanceId: inst.id, instanceSignature });
          const code = r.json<{ code?: string }>().code ?? String(r.statusCode);
          codes.set(code, (codes.get(code) ?? 0) + 1);
          if (r.statusCode === 400) refused(r, 400, 'COORDINATOR_MALFORMED_REQUEST');
          else refusedSignature(r);
        },
      ),
      { numRuns: 150, seed: 20261130 },
    );
    // Both kinds were exercised.
    assert.ok((codes.get('COORDINATOR_MALFORMED_REQUEST') ?? 0) > 10, JSON.stringify([...codes]));
    assert.ok((codes.get('COORDINATOR_SIGNATURE_INVALID') ?? 0) > 10, JSON.stringify([...codes]));
    const ok = await renew(f, inst);
    assert.equal((await instanceOf(ok.r, ok.agent)).secret, inst.secret);
  });

  it('of two renewals signed with the same key, one wins; the other is a conflict', async () => {
    const inst = await activated(f);
    const a = await request(f);
    const b = await request(f);
    // Both read the instance (same key) before either commits.
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its store
    const get = Store.prototype.get;
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its store
    const commit = Store.prototype.commit;
    let reads = 0;
    let bothRead!: () => void;
    const read = new Promise<void>((res) => (bothRead = res));
    const spies = [
      mock.method(
        Store.prototype,
        'get',
        function (this: Store, ...args: Parameters<Store['get']>) {
          if (args[0] === 'instances' && args[1] === inst.id && ++reads === 2) bothRead();
          return get.apply(this, args);
        },
      ),
      mock.method(Store.prototype, 'commit', async function <R>(this: Store, fn: () => R) {
        await read;
        return commit.call(this, fn) as Promise<R>;
      }),
    ];
    let answers: LightMyRequestResponse[];
    try {
      answers = await Promise.all(
        [a, b].map(async (q) =>
          post(f, {
            ...q.body,
            instanceId: inst.id,
            instanceSignature: await renewalSignature(inst.key, inst.id, q.nonce, q.agent),
          }),
        ),
      );
    } finally {
      for (const s of spies) s.mock.restore();
    }
    const statuses = answers.map((r) => r.statusCode).sort();
    assert.deepEqual(statuses, [200, 409], answers.map((r) => r.body).join('\n'));
    const w = answers.findIndex((r) => r.statusCode === 200);
    const [winner, loser] = w === 0 ? [a, b] : [b, a];
    const p = refused(
      answers[1 - w] as LightMyRequestResponse,
      409,
      'COORDINATOR_HISTORY_CONFLICT',
    );
    assert.equal((p['details'] as Record<string, unknown>)['rule'], 'instance.key');
    // The winner's key is the instance's key now; the loser's never became it.
    const won = await instanceOf(answers[w] as LightMyRequestResponse, winner.agent);
    assert.equal(won.secret, inst.secret);
    refusedSignature((await renew(f, { id: inst.id, key: loser.agent.keys.privateKey })).r);
    const ok = await renew(f, won);
    assert.equal((await instanceOf(ok.r, ok.agent)).secret, inst.secret);
  });
});
