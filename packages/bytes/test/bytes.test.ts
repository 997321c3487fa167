import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  arrayBufferView,
  bytesEqual,
  concatBytes,
  sha256,
  sha384,
  sha512,
  toBase64,
  toHex,
  utf8,
} from '@cloister/bytes';

/** `bytes` placed in a larger buffer between filler, returned as a view of exactly them. */
function viewOf(bytes: Uint8Array, before: number, after: number): Uint8Array {
  const backing = new Uint8Array(before + bytes.length + after).fill(0x5a);
  backing.set(bytes, before);
  return backing.subarray(before, before + bytes.length);
}

test('digests equal WebCrypto for any bytes, views included, and are plain Uint8Arrays', async () => {
  const fns = [
    ['SHA-256', sha256],
    ['SHA-384', sha384],
    ['SHA-512', sha512],
  ] as const;
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 0, maxLength: 2000 }),
      fc.nat(32),
      fc.nat(32),
      async (bytes, before, after) => {
        const view = viewOf(bytes, before, after);
        for (const [name, fn] of fns) {
          const got = await fn(view);
          const want = new Uint8Array(await globalThis.crypto.subtle.digest(name, bytes));
          assert.equal(Object.getPrototypeOf(got), Uint8Array.prototype);
          assert.deepEqual(got, want);
        }
      },
    ),
    { numRuns: 200 },
  );
  // Both paths: small inputs hash in-thread, large ones through WebCrypto's thread pool.
  const big = viewOf(new Uint8Array(1024 * 1024 + 1).fill(7), 3, 5);
  assert.deepEqual(
    await sha256(big),
    new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', new Uint8Array(big))),
  );
  // FIPS 180-2 appendix B.1: SHA-256("abc").
  assert.equal(
    toHex(await sha256(utf8('abc'))),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
  );
});

test('encoders, concatenation and equality agree with Node over views', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 70_000 }), { maxLength: 4 }),
      fc.nat(16),
      (parts, pad) => {
        const views = parts.map((p) => viewOf(p, pad, pad));
        const joined = concatBytes(...views);
        const want = Buffer.concat(parts);
        assert.deepEqual(Buffer.from(joined), want);
        assert.equal(toHex(joined), want.toString('hex'));
        assert.equal(toBase64(joined), want.toString('base64'));
        assert.ok(bytesEqual(joined, new Uint8Array(want)));
        if (joined.length > 0) {
          const other = new Uint8Array(joined);
          other[other.length - 1] = (other[other.length - 1] as number) ^ 1;
          assert.ok(!bytesEqual(joined, other));
          assert.ok(!bytesEqual(joined, joined.subarray(1)));
        }
      },
    ),
    { numRuns: 100 },
  );
});

test('arrayBufferView copies only bytes that do not live in an ArrayBuffer', () => {
  const plain = new Uint8Array([1, 2, 3]);
  assert.equal(arrayBufferView(plain), plain);
  const shared = new Uint8Array(new SharedArrayBuffer(3));
  shared.set([4, 5, 6]);
  const copy = arrayBufferView(shared);
  assert.notEqual(copy, shared);
  assert.ok(copy.buffer instanceof ArrayBuffer);
  assert.deepEqual([...copy], [4, 5, 6]);
  assert.equal(utf8('é').length, 2);
});
