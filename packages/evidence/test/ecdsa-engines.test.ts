/**
 * On Node the verifiers check ECDSA signatures with node:crypto instead of WebCrypto: both
 * engines must give the same answer for every key, message and signature, valid or not, and
 * the real quotes must verify (or be refused with the same code) either way.
 */
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import { offlineCollateral, verifyEvidence } from '@cloister/evidence';
import type { EcCurve } from '@cloister/evidence';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { ECDSA_ENGINES, verifyWithWebCryptoOnly } from '../src/crypto.js';

after(() => verifyWithWebCryptoOnly(false));

// On Node the fast path must exist, or the comparisons below would hold WebCrypto to itself.
const nodeVerify = ECDSA_ENGINES.node;
test('on Node, the verifiers use node:crypto', () => {
  assert.ok(nodeVerify !== undefined);
});

const HASH: Record<EcCurve, string> = { 'P-256': 'SHA-256', 'P-384': 'SHA-384' };

async function keyPair(curve: EcCurve) {
  return webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: curve }, false, [
    'sign',
    'verify',
  ]);
}

for (const curve of ['P-256', 'P-384'] as const) {
  test(`node:crypto answers as WebCrypto does (${curve}, valid and mutated signatures)`, async () => {
    const keys = await keyPair(curve);
    const other = await keyPair(curve);
    const len = curve === 'P-256' ? 64 : 96;
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 2048 }),
        fc.nat(),
        fc.integer({ min: 0, max: 3 }),
        fc.uint8Array({ minLength: len, maxLength: len }),
        async (data, at, how, random) => {
          const good = new Uint8Array(
            await webcrypto.subtle.sign(
              { name: 'ECDSA', hash: HASH[curve] },
              keys.privateKey,
              data,
            ),
          );
          const sig = new Uint8Array(good);
          // 0: the valid signature; 1: one bit flipped; 2: random bytes; 3: r or s zero.
          if (how === 1) sig[at % len] = (sig[at % len] as number) ^ (1 << (at % 8));
          if (how === 2) sig.set(random);
          if (how === 3) sig.fill(0, at % 2 === 0 ? 0 : len / 2, at % 2 === 0 ? len / 2 : len);
          for (const key of [keys.publicKey, other.publicKey]) {
            const web = await webcrypto.subtle.verify(
              { name: 'ECDSA', hash: HASH[curve] },
              key,
              sig,
              data,
            );
            assert.equal(await nodeVerify?.(curve, key, sig, data), web);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
}

test(
  'real quotes: the same verdicts with node:crypto as with WebCrypto',
  { skip: requireVectors() === undefined },
  async () => {
    const now = new Date('2025-07-01T00:00:00Z');
    const collateralSource = offlineCollateral({
      intel: [
        readVectorText('tdx/phala-tdx-v4.collateral.json'),
        readVectorText('sgx/phala-sgx-v3.collateral.json'),
      ],
    });
    const quotes = [
      ['tdx', readVector('tdx/phala-tdx-v4.quote.bin')],
      ['sgx', readVector('sgx/phala-sgx-v3.quote.bin')],
    ] as const;
    const verdict = async (type: 'tdx' | 'sgx', q: Uint8Array): Promise<string> => {
      try {
        const v = await verifyEvidence(type, q, { now, collateralSource });
        return `ok:${v.tcbStatus}`;
      } catch (e) {
        return isCloisterError(e) ? e.code : `unexpected:${String(e)}`;
      }
    };
    for (const [type, quote] of quotes) {
      // The genuine quote, and copies with one byte flipped across the signed header and body
      // and the signature data (every verification step that signs something is crossed).
      const variants = [quote];
      for (let at = 0; at < quote.length; at += Math.floor(quote.length / 24)) {
        const m = new Uint8Array(quote);
        m[at] = (m[at] as number) ^ 0x01;
        variants.push(m);
      }
      for (const q of variants) {
        verifyWithWebCryptoOnly(true);
        const web = await verdict(type, q);
        verifyWithWebCryptoOnly(false);
        assert.equal(await verdict(type, q), web);
      }
      assert.match(await verdict(type, quote), /^ok:/);
    }
  },
);
