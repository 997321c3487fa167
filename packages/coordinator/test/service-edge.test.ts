/**
 * Edge cases of the coordinator's service logic that an attacker or an unlucky operator can
 * reach: races between a manifest update and other writes, replay of old owner-signed secret
 * uploads across a change of the secret's definition, and what unauthenticated requests can
 * make the coordinator keep in memory.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import {
  ROUTES,
  checkBody,
  decryptBundle,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  transitionHash,
} from '@cloister/protocol';
import type { Manifest, Secret } from '@cloister/protocol';
import type { LightMyRequestResponse } from 'fastify';
import {
  baseManifest,
  installManifest,
  signTransition,
  simActivation,
  startFixture,
} from './helpers.js';
import type { Fixture } from './helpers.js';

function json(r: LightMyRequestResponse): Record<string, unknown> {
  return r.json<Record<string, unknown>>();
}

/** A signed upload of `dbPassword` (owner alice), as the request body carries it. */
async function secretUpload(
  f: Fixture,
  version: number,
  text: string,
): Promise<{ value: string; version: number; signature: Awaited<ReturnType<typeof signAsOwner>> }> {
  const value = new TextEncoder().encode(text);
  const rootCaDer = new Uint8Array(new x509.X509Certificate(f.coord.rootCaPem).rawData);
  const digest = await secretDigest({ rootCaDer, name: 'dbPassword', version, value });
  const signature = await signAsOwner(
    ownerSignedBytes('secret', digest),
    f.alice.name,
    f.alice.keys.privateKey,
  );
  return { value: toBase64Url(value), version, signature };
}

async function putSecret(f: Fixture, body: unknown): Promise<LightMyRequestResponse> {
  return f.coord.server.inject({
    method: 'PUT',
    url: '/v1/secrets/dbPassword',
    payload: body as object,
  });
}

/** Applies an update signed by alice against the coordinator's current head. */
async function update(f: Fixture, next: Manifest): Promise<LightMyRequestResponse> {
  const st = checkBody(
    ROUTES.status.response,
    (await f.coord.server.inject({ method: 'GET', url: '/v1/status' })).json(),
  );
  const seq = checkBody(
    ROUTES.history.response,
    (await f.coord.server.inject({ method: 'GET', url: '/v1/manifest/history' })).json(),
  ).entries.length;
  const sig = await signTransition(next, seq, st.historyHead, 'update', f.alice);
  return f.coord.server.inject({
    method: 'PUT',
    url: '/v1/manifest',
    payload: { manifest: next, kind: 'update', signatures: [sig] },
  });
}

/** `base` with `dbPassword` defined as `def`, or without it (and without what uses it). */
function withDbPassword(base: Manifest, def: Secret | undefined): Manifest {
  const { dbPassword: _old, ...secrets } = base.secrets ?? {};
  if (def !== undefined) return { ...base, secrets: { ...secrets, dbPassword: def } };
  const frontend = base.workloads.frontend as Manifest['workloads'][string];
  const { '/etc/app/db.conf': _f, ...files } = frontend.files ?? {};
  return {
    ...base,
    workloads: { ...base.workloads, frontend: { ...frontend, files } },
    secrets,
    owners: Object.fromEntries(
      Object.entries(base.owners ?? {}).map(([n, o]) => [n, { ...o, roles: ['update'] }]),
    ),
  };
}

/**
 * Holds the next call of `globalThis.crypto.subtle[method]` until `release()`: a deterministic
 * way to let one request stop in the middle of its checks while another one runs.
 */
function holdNext(method: 'sign' | 'verify' | 'generateKey'): {
  reached: Promise<void>;
  release: () => void;
  restore: () => void;
} {
  const subtle = globalThis.crypto.subtle as unknown as Record<string, unknown>;
  const original = (subtle[method] as (...a: unknown[]) => Promise<unknown>).bind(subtle);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const reachedP = new Promise<void>((r) => (reached = r));
  let held = false;
  subtle[method] = async (...args: unknown[]) => {
    if (!held) {
      held = true;
      reached();
      await gate;
    }
    return original(...args);
  };
  return {
    reached: reachedP,
    release,
    restore: () => {
      delete subtle[method];
    },
  };
}

describe('coordinator service edges', () => {
  let f: Fixture;
  let m: Manifest;
  before(async () => {
    f = await startFixture();
    m = baseManifest({}, { alice: f.alice });
    await installManifest(f, m);
  });
  after(async () => f.cleanup());

  it('an unauthenticated activation cannot add metric labels of its choosing', async () => {
    // No valid nonce, no evidence: only the workload name is the attacker's.
    for (let i = 0; i < 3; i++) {
      const r = await f.coord.server.inject({
        method: 'POST',
        url: '/v1/activate',
        payload: {
          workload: `attackerchosen${i}`,
          nonce: 'A'.repeat(43),
          evidence: { type: 'sim', data: 'AA' },
          publicKey: 'AA',
          bundleKey: 'A'.repeat(43),
        },
      });
      assert.equal(r.statusCode, 403, r.body);
    }
    const metrics = (await f.coord.server.inject({ method: 'GET', url: '/metrics' })).body;
    assert.ok(!metrics.includes('attackerchosen'), 'a request-chosen name became a label');
    // The refusals are still counted.
    assert.match(
      metrics,
      /cloister_activation_refusals_total\{code="COORDINATOR_NONCE_INVALID"\} 3/,
    );
  });

  it('a redefined user-defined secret keeps counting: an older signed upload cannot be replayed', async () => {
    const v0 = await secretUpload(f, 0, 'first-password');
    const v1 = await secretUpload(f, 1, 'second-password');
    assert.equal((await putSecret(f, v0)).statusCode, 200);
    assert.equal((await putSecret(f, v1)).statusCode, 200);
    // The owners change the definition (a size limit): the secret must be uploaded again.
    m = withDbPassword(m, { type: 'plain', userDefined: true, maxBytes: 64 });
    const u = await update(f, m);
    assert.equal(u.statusCode, 200, u.body);
    // Replaying the captured first upload would roll the password back to its first value.
    for (const old of [v0, v1]) {
      const r = await putSecret(f, old);
      assert.equal(r.statusCode, 409, r.body);
      assert.equal(json(r).code, 'COORDINATOR_HISTORY_CONFLICT');
      assert.deepEqual(json(r).details, { rule: 'version', expected: 2, actual: old.version });
    }
    const ok = await putSecret(f, await secretUpload(f, 2, 'third-password'));
    assert.equal(ok.statusCode, 200, ok.body);
  });

  it('a removed and re-added user-defined secret does not accept its old signed uploads', async () => {
    const v3 = await secretUpload(f, 3, 'fourth-password');
    assert.equal((await putSecret(f, v3)).statusCode, 200);
    const def = m.secrets?.dbPassword as Secret;
    const removed = await update(f, withDbPassword(m, undefined));
    assert.equal(removed.statusCode, 200, removed.body);
    const readded = await update(f, m);
    assert.equal(readded.statusCode, 200, readded.body);
    assert.deepEqual(m.secrets?.dbPassword, def);
    for (const version of [0, 1, 2, 3]) {
      const r = await putSecret(f, await secretUpload(f, version, 'an-old-password'));
      assert.equal(r.statusCode, 409, r.body);
      assert.equal(json(r).code, 'COORDINATOR_HISTORY_CONFLICT');
    }
    const ok = await putSecret(f, await secretUpload(f, 4, 'fifth-password'));
    assert.equal(ok.statusCode, 200, ok.body);
  });

  it('a secret upload accepted while an update is checked is not undone by the update', async () => {
    // The update does not touch dbPassword, so its value must survive it. It is held once its
    // signatures are checked, while it makes the new intermediate CA.
    const next = { ...m, workloads: { ...m.workloads, extra: { package: 'dev' } } } as Manifest;
    const hold = holdNext('generateKey');
    let pending: Promise<LightMyRequestResponse>;
    try {
      pending = update(f, next);
      await hold.reached;
    } finally {
      hold.restore();
    }
    const up = await putSecret(f, await secretUpload(f, 5, 'sixth-password'));
    assert.equal(up.statusCode, 200, up.body);
    hold.release();
    const u = await pending;
    assert.equal(u.statusCode, 200, u.body);
    m = next;
    // Version 5 is spent: replaying it must be refused, and 6 is next.
    const again = await putSecret(f, await secretUpload(f, 5, 'sixth-password'));
    assert.equal(again.statusCode, 409, again.body);
    assert.deepEqual(json(again).details, { rule: 'version', expected: 6, actual: 5 });
  });

  it('a secret upload checked against a manifest that an update replaced is refused', async () => {
    // While alice's upload is checked, the owners revoke her right to write the secret.
    const hold = holdNext('verify');
    let pending: Promise<LightMyRequestResponse>;
    try {
      pending = putSecret(f, await secretUpload(f, 6, 'written-after-revocation'));
      await hold.reached;
    } finally {
      hold.restore();
    }
    const revoked: Manifest = {
      ...m,
      owners: Object.fromEntries(
        Object.entries(m.owners ?? {}).map(([n, o]) => [n, { ...o, roles: ['update'] }]),
      ),
    };
    const u = await update(f, revoked);
    hold.release();
    assert.equal(u.statusCode, 200, u.body);
    m = revoked;
    const r = await pending;
    assert.equal(r.statusCode, 409, r.body);
    assert.equal(json(r).code, 'COORDINATOR_HISTORY_CONFLICT');
    // Nothing was written: the same signed upload is now refused for want of the role.
    const again = await putSecret(f, await secretUpload(f, 6, 'written-after-revocation'));
    assert.equal(again.statusCode, 401, again.body);
  });

  it('an attestation answer is one state even when an update lands while it is made', async () => {
    const next = { ...m, workloads: { ...m.workloads, extra2: { package: 'dev' } } } as Manifest;
    const hold = holdNext('sign');
    let pending: Promise<LightMyRequestResponse>;
    try {
      pending = f.coord.server.inject({
        method: 'POST',
        url: '/v1/attest',
        payload: { nonce: toBase64Url(new Uint8Array(32).fill(7)) },
      });
      await hold.reached;
    } finally {
      hold.restore();
    }
    const u = await update(f, next);
    assert.equal(u.statusCode, 200, u.body);
    m = next;
    hold.release();
    const r = await pending;
    assert.equal(r.statusCode, 200, r.body);
    const a = checkBody(ROUTES.attest.response, r.json());
    const last = a.history[a.history.length - 1];
    assert.ok(last !== undefined);
    // The head bound into the evidence is the head of the history and manifest returned.
    assert.equal(a.manifestHash, last.manifestHash);
    assert.equal(a.historyHead, await transitionHash(last));
  });
});

describe('secrets named like Object.prototype members', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
    const key: Secret = { type: 'symmetric', bits: 128 };
    const secrets: Record<string, Secret> = Object.fromEntries([
      ['toString', key],
      ['constructor', { ...key, perInstance: true }],
    ]);
    const base = baseManifest({}, { alice: f.alice });
    await installManifest(f, {
      ...base,
      workloads: {
        app: {
          package: 'dev',
          env: { A: '{{ hex .secrets.toString }}', B: '{{ hex .secrets.constructor }}' },
        },
      },
      secrets,
      owners: Object.fromEntries(
        Object.entries(base.owners ?? {}).map(([n, o]) => [n, { ...o, roles: ['update'] }]),
      ),
    });
  });
  after(async () => f.cleanup());

  it("are their own values, not the prototype's", async () => {
    const { r, agent } = await simActivation(f, { workload: 'app' });
    assert.equal(r.statusCode, 200, r.body);
    const { bundle } = checkBody(ROUTES.activate.response, r.json());
    const opened = await decryptBundle(bundle, agent.bundlePrivate);
    assert.match(opened.env['A'] ?? '', /^[0-9a-f]{32}$/);
    assert.match(opened.env['B'] ?? '', /^[0-9a-f]{32}$/);
  });
});
