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
  const expected = sha(
    'sha512',
    Buffer.from('cloister/activate/v1', 'ascii'),
    Buffer.from(nonce),
    sha('sha256', spki),
  );
  const got = await activationReportData(nonce, spki);
  assert.equal(got.length, 64);
  assert.equal(Buffer.from(got).toString('hex'), expected.toString('hex'));
  // Fixed vector (all-zero nonce, empty SPKI) pins the layout against accidental change.
  const zero = await activationReportData(nonceFromBytes(new Uint8Array(32)), new Uint8Array(0));
  const z = sha(
    'sha512',
    Buffer.from('cloister/activate/v1'),
    Buffer.alloc(32),
    sha('sha256', Buffer.alloc(0)),
  );
  assert.equal(Buffer.from(zero).toString('hex'), z.toString('hex'));
});

test('report data over views into larger buffers: only the viewed bytes are hashed', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 0, maxLength: 600 }),
      fc.nat(64),
      fc.nat(64),
      async (key, before, after) => {
        const backing = new Uint8Array(before + key.length + after).fill(0xee);
        backing.set(key, before);
        const view = backing.subarray(before, before + key.length);
        const nonce = nonceFromBytes(new Uint8Array(32).fill(before));
        const got = await activationReportData(nonce, view);
        const want = sha(
          'sha512',
          Buffer.from('cloister/activate/v1', 'ascii'),
          Buffer.from(nonce),
          sha('sha256', Buffer.from(key)),
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
