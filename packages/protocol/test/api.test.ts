import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  ActivateRequestSchema,
  ActivationBundleSchema,
  checkBody,
  decryptBundle,
  encryptBundle,
  problemFromError,
  protocolError,
  releaseSignedBytes,
  renewalSignedBytes,
  ROUTES,
  toBase64Url,
} from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { CompactEncrypt } from 'jose';

const bundle: ActivationBundle = {
  files: { '/etc/app/a.conf': 'aGVsbG8' },
  env: { A: 'b' },
  args: ['/bin/app'],
  mesh: {
    cert: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
    rootCa: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
    intermediateCa: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
  },
  renewAfter: '2026-01-01T00:00:00Z',
};
const gen = async () =>
  (await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits'])) as CryptoKeyPair;

test("bundles: encrypt to the agent's bundle key, decrypt only with it", async () => {
  const agent = await gen();
  const jwe = await encryptBundle(bundle, agent.publicKey);
  const header = JSON.parse(Buffer.from(jwe.split('.')[0] as string, 'base64url').toString()) as {
    enc: string;
    epk: { kty: string; crv: string };
  };
  assert.equal(header.enc, 'A256GCM');
  assert.deepEqual([header.epk.kty, header.epk.crv], ['OKP', 'X25519']);
  assert.deepEqual(await decryptBundle(jwe, agent.privateKey), bundle);
  const other = await gen();
  await assert.rejects(
    decryptBundle(jwe, other.privateKey),
    (e: unknown) => isCloisterError(e) && e.code === 'BUNDLE_INVALID',
  );
  const parts = jwe.split('.');
  parts[3] = `${parts[3]?.slice(0, -2)}AA`;
  await assert.rejects(
    decryptBundle(parts.join('.'), agent.privateKey),
    (e: unknown) => isCloisterError(e) && e.code === 'BUNDLE_INVALID',
  );
  // Another content encryption algorithm, or content that is not a bundle, is refused.
  const weak = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(bundle)))
    .setProtectedHeader({
      alg: 'ECDH-ES',
      enc: 'A128GCM',
      cty: 'application/vnd.cloister.bundle+json',
    })
    .encrypt(agent.publicKey);
  await assert.rejects(
    decryptBundle(weak, agent.privateKey),
    (e: unknown) => isCloisterError(e) && e.code === 'BUNDLE_INVALID',
  );
  const junk = await new CompactEncrypt(new TextEncoder().encode('{"files":1}'))
    .setProtectedHeader({
      alg: 'ECDH-ES',
      enc: 'A256GCM',
      cty: 'application/vnd.cloister.bundle+json',
    })
    .encrypt(agent.publicKey);
  await assert.rejects(
    decryptBundle(junk, agent.privateKey),
    (e: unknown) => isCloisterError(e) && e.code === 'BUNDLE_INVALID',
  );
});

test('request schemas: exactly one of csr or publicKey; errors list field paths', () => {
  const base = {
    workload: 'web',
    nonce: 'A'.repeat(43),
    evidence: { type: 'sim', data: 'AAAA' },
    bundleKey: 'B'.repeat(43),
  };
  checkBody(ActivateRequestSchema, { ...base, publicKey: 'AAAA' });
  checkBody(ActivateRequestSchema, { ...base, csr: '-----BEGIN CERTIFICATE REQUEST-----\n...' });
  for (const bad of [
    base,
    { ...base, publicKey: 'AA', csr: '-----BEGIN CERTIFICATE REQUEST-----' },
    { ...base, publicKey: 'A', extra: 1 },
    { ...base, publicKey: 'AAAA', bundleKey: 'B'.repeat(42) },
    { ...base, publicKey: 'AAAA', bundleKey: undefined },
  ]) {
    assert.throws(
      () => checkBody(ActivateRequestSchema, bad),
      (e: unknown) => isCloisterError(e) && e.code === 'REQUEST_INVALID',
    );
  }
  try {
    checkBody(ActivationBundleSchema, { ...bundle, files: { relative: 'x' } });
    assert.fail('accepted');
  } catch (e) {
    assert.ok(isCloisterError(e));
    assert.ok(
      (e.details?.['problems'] as { path: string }[]).some((p) => p.path === '/files/relative'),
    );
  }
  assert.equal(ROUTES.activate.url, '/v1/activate');
  assert.equal(ROUTES.setSecret.method, 'PUT');
});

test('renewals: instanceId and instanceSignature come together; the signature is 64 bytes', () => {
  const base = {
    workload: 'web',
    nonce: 'A'.repeat(43),
    evidence: { type: 'sim', data: 'AAAA' },
    bundleKey: 'B'.repeat(43),
  };
  const sig = toBase64Url(new Uint8Array(64).fill(7));
  const instanceId = 'ab'.repeat(16);
  for (const keyForm of [{ publicKey: 'AAAA' }, { csr: '-----BEGIN CERTIFICATE REQUEST-----' }]) {
    checkBody(ActivateRequestSchema, { ...base, ...keyForm, instanceId, instanceSignature: sig });
    for (const bad of [
      { instanceId },
      { instanceSignature: sig },
      { instanceId, instanceSignature: '' },
      { instanceId, instanceSignature: sig.slice(1) },
      { instanceId, instanceSignature: `${sig}A` },
      { instanceId, instanceSignature: `${sig.slice(1)}=` },
      { instanceId, instanceSignature: `${sig.slice(1)}+` },
      { instanceId: 'a/b', instanceSignature: sig },
    ]) {
      assert.throws(
        () => checkBody(ActivateRequestSchema, { ...base, ...keyForm, ...bad }),
        (e: unknown) => isCloisterError(e) && e.code === 'REQUEST_INVALID',
        JSON.stringify(bad),
      );
    }
  }
});

test('renewalSignedBytes: a label, then the id, the nonce and the report data, NUL-separated', () => {
  const rd = new Uint8Array(64).fill(0xab);
  const text = new TextDecoder().decode(renewalSignedBytes('id1', 'n'.repeat(43), rd));
  assert.equal(text, `cloister/instance-renewal/v1\0id1\0${'n'.repeat(43)}\0${'ab'.repeat(64)}`);
  // Not the bytes a release signs for the same instance and nonce (one key signs both).
  assert.notDeepEqual(
    renewalSignedBytes('id1', 'n'.repeat(43), rd).subarray(0, 40),
    releaseSignedBytes('id1', 'n'.repeat(43)).subarray(0, 40),
  );
  // Each field is delimited: moving a byte from one to the next changes the bytes.
  assert.notDeepEqual(
    renewalSignedBytes('id1', 'nonce', rd),
    renewalSignedBytes('id', '1nonce', rd),
  );
});

test('problem+json: code and status; internal errors leak nothing', () => {
  const p = problemFromError(
    protocolError('MANIFEST_INVALID', 'bad', { details: { problems: [] } }),
    '/v1/manifest',
  );
  assert.equal(p.status, 400);
  assert.equal(p.code, 'MANIFEST_INVALID');
  assert.equal(p.type, 'urn:cloister:error:MANIFEST_INVALID');
  const internal = problemFromError(new Error('password=hunter2 at /secret/path'));
  assert.equal(internal.status, 500);
  assert.ok(!JSON.stringify(internal).includes('hunter2'));
});

test('engine-neutral sources: no node: imports and no Buffer', () => {
  const root = new URL('../..', import.meta.url).pathname;
  const dirs = [
    join(root, 'protocol', 'src'),
    join(root, 'bytes', 'src'),
    join(root, 'evidence', 'src', 'sim'),
  ];
  const files: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.ts')) files.push(p);
    }
  };
  dirs.forEach(walk);
  assert.ok(files.length > 10);
  for (const f of files) {
    const src = readFileSync(f, 'utf8');
    assert.ok(!/from ['"]node:/.test(src), `${f} imports node:`);
    assert.ok(!/\bBuffer\b/.test(src), `${f} uses Buffer`);
  }
});
