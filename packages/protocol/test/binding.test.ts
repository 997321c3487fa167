import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import {
  activationReportData,
  coordinatorReportData,
  EMPTY_HISTORY_HEAD,
  newNonce,
  nonceFromBase64Url,
  nonceFromBytes,
  nonceToBase64Url,
} from '@cloister/protocol';

const sha = (alg: string, ...parts: Buffer[]) =>
  createHash(alg).update(Buffer.concat(parts)).digest();

test('activation report data matches an independent computation', async () => {
  const nonce = nonceFromBytes(Uint8Array.from({ length: 32 }, (_, i) => i));
  const spki = randomBytes(91);
  const bundleKey = randomBytes(32);
  const expected = sha(
    'sha512',
    Buffer.from('cloister/activate/v2', 'ascii'),
    Buffer.from(nonce),
    sha('sha256', spki),
    bundleKey,
  );
  const got = await activationReportData(nonce, spki, bundleKey);
  assert.equal(got.length, 64);
  assert.equal(Buffer.from(got).toString('hex'), expected.toString('hex'));
  // Each key changes the binding.
  const otherBundleKey = Buffer.from(bundleKey);
  otherBundleKey[0] = (otherBundleKey[0] as number) ^ 1;
  assert.notDeepEqual(await activationReportData(nonce, spki, otherBundleKey), got);
  assert.notDeepEqual(await activationReportData(nonce, randomBytes(91), bundleKey), got);
  // Fixed vector (all-zero nonce, empty SPKI, bundle key of 0x09 bytes) pins the layout.
  const pinned = await activationReportData(
    nonceFromBytes(new Uint8Array(32)),
    new Uint8Array(0),
    new Uint8Array(32).fill(9),
  );
  assert.equal(
    Buffer.from(pinned).toString('hex'),
    'bfab9df8d555fdf9f29787faf11515d584f9f9ef8716fa18b78ea589880f92a350a6457d1afc626e78c4f40fff9a172708d67ef9732666be0c53365c95cf0377',
  );
  // The bundle key is exactly 32 bytes.
  for (const bad of [new Uint8Array(31), new Uint8Array(33)])
    await assert.rejects(activationReportData(nonce, spki, bad), (e) => isCloisterError(e));
});

test('report data over views into larger buffers: only the viewed bytes are hashed', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 0, maxLength: 600 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.nat(64),
      fc.nat(64),
      async (key, bundleKey, before, after) => {
        const view = (b: Uint8Array): Uint8Array => {
          const backing = new Uint8Array(before + b.length + after).fill(0xee);
          backing.set(b, before);
          return backing.subarray(before, before + b.length);
        };
        const nonce = nonceFromBytes(new Uint8Array(32).fill(before));
        const got = await activationReportData(nonce, view(key), view(bundleKey));
        const want = sha(
          'sha512',
          Buffer.from('cloister/activate/v2', 'ascii'),
          Buffer.from(nonce),
          sha('sha256', Buffer.from(key)),
          Buffer.from(bundleKey),
        );
        assert.equal(Object.getPrototypeOf(got), Uint8Array.prototype);
        assert.equal(Buffer.from(got).toString('hex'), want.toString('hex'));
      },
    ),
    { numRuns: 300 },
  );
});

test('coordinator report data matches an independent computation and binds every input', async () => {
  const nonce = newNonce();
  const root = randomBytes(500);
  const head = randomBytes(32);
  const tls = randomBytes(91);
  const expected = sha(
    'sha512',
    Buffer.from('cloister/coordinator/v1', 'ascii'),
    Buffer.from(nonce),
    sha('sha256', root),
    head,
    sha('sha256', tls),
  );
  const got = await coordinatorReportData(nonce, root, head, tls);
  assert.equal(Buffer.from(got).toString('hex'), expected.toString('hex'));
  const other = await coordinatorReportData(nonce, root, EMPTY_HISTORY_HEAD, tls);
  assert.notEqual(Buffer.from(other).toString('hex'), expected.toString('hex'));
  await assert.rejects(
    coordinatorReportData(nonce, root, new Uint8Array(31), tls),
    (e: unknown) => isCloisterError(e) && e.code === 'PROTOCOL_BAD_ENCODING',
  );
});

test('nonces: 32 random bytes, strict base64url form', () => {
  const a = newNonce();
  assert.equal(a.length, 32);
  assert.notDeepEqual(a, newNonce());
  const s = nonceToBase64Url(a);
  assert.equal(s.length, 43);
  assert.deepEqual(nonceFromBase64Url(s), a);
  const bad = (f: () => unknown) =>
    assert.throws(f, (e: unknown) => isCloisterError(e) && e.code === 'NONCE_INVALID');
  bad(() => nonceFromBytes(new Uint8Array(31)));
  bad(() => nonceFromBase64Url(s.slice(1)));
  bad(() => nonceFromBase64Url(`${s.slice(0, 42)}=`));
  bad(() => nonceFromBase64Url(`${s.slice(0, 42)}+`));
  // Non-canonical final character (unused low bits set) is refused: one nonce, one spelling.
  const last = s[42] as string;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const idx = alphabet.indexOf(last);
  const twin = alphabet[(idx & ~3) | ((idx & 3) ^ 1)] as string;
  bad(() => nonceFromBase64Url(s.slice(0, 42) + twin));
});
