import assert from 'node:assert/strict';
import { createECDH, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { BUNDLE_CONTENT_TYPE, decryptBundle, encryptBundle } from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { bundleSealer, openBundle, sealBundle } from '../src/bundle-seal.js';

const subtle = webcrypto.subtle;

async function agent(): Promise<{ keys: CryptoKeyPair; point: Uint8Array }> {
  const keys = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, [
    'deriveBits',
  ]);
  return { keys, point: new Uint8Array(await subtle.exportKey('raw', keys.publicKey)) };
}

function pem(b64: string): string {
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

const bundle: ActivationBundle = {
  files: { '/run/app/config.json': Buffer.from('{"k":"v"}').toString('base64url') },
  env: { MODE: 'test', EMPTY: '' },
  args: ['--port', '8080'],
  mesh: { cert: pem('AAAA'), rootCa: pem('BBBB'), intermediateCa: pem('CCCC') },
  renewAfter: '2026-06-01T00:00:00.000Z',
};

describe('sealBundle and openBundle (Node JWE path, ECDH-ES + A256GCM)', () => {
  it('opens with jose and with the agent-side decryptBundle, header as RFC 7518 says', async () => {
    const a = await agent();
    const jwe = sealBundle(bundle, a.point);
    const h = decodeProtectedHeader(jwe);
    assert.equal(h.alg, 'ECDH-ES');
    assert.equal(h.enc, 'A256GCM');
    assert.equal(h.cty, BUNDLE_CONTENT_TYPE);
    assert.deepEqual(Object.keys(h.epk ?? {}).sort(), ['crv', 'kty', 'x', 'y']);
    assert.equal(jwe.split('.')[1], '', 'direct key agreement has no encrypted key');
    const raw = await compactDecrypt(jwe, a.keys.privateKey, {
      keyManagementAlgorithms: ['ECDH-ES'],
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    assert.deepEqual(JSON.parse(new TextDecoder().decode(raw.plaintext)), bundle);
    assert.deepEqual(await decryptBundle(jwe, a.keys.privateKey), bundle);
  });

  it('a fresh ephemeral key and IV every time', async () => {
    const a = await agent();
    const one = sealBundle(bundle, a.point).split('.');
    const two = sealBundle(bundle, a.point).split('.');
    assert.notEqual(one[0], two[0]);
    assert.notEqual(one[2], two[2]);
  });

  it('another key cannot open it; a changed header, IV, ciphertext or tag is refused', async () => {
    const a = await agent();
    const b = await agent();
    const jwe = sealBundle(bundle, a.point);
    await assert.rejects(decryptBundle(jwe, b.keys.privateKey), { code: 'BUNDLE_INVALID' });
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.integer({ min: 1, max: 63 }), async (pos, bit) => {
        const parts = jwe.split('.');
        const idx = [0, 2, 3, 4][pos % 4] as number;
        const part = parts[idx] as string;
        const at = pos % part.length;
        const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
        const cur = alphabet.indexOf(part[at] as string);
        // Changing a base64url character to another may only change unused low bits of the
        // last character: such a JWE is the same bytes and may still open.
        const swapped = alphabet[(cur + bit) % 64] as string;
        parts[idx] = part.slice(0, at) + swapped + part.slice(at + 1);
        const changed = parts.join('.');
        const same =
          Buffer.from(part, 'base64url').equals(Buffer.from(parts[idx], 'base64url')) && idx !== 0;
        if (same) return;
        await assert.rejects(decryptBundle(changed, a.keys.privateKey), {
          code: 'BUNDLE_INVALID',
        });
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a point that is not on P-256 and a bundle that does not match its schema', async () => {
    const a = await agent();
    const off = a.point.slice();
    off[64] = (off[64] ?? 0) ^ 1;
    assert.throws(() => sealBundle(bundle, off), { code: 'COORDINATOR_KEY_INVALID' });
    assert.throws(() => sealBundle(bundle, a.point.subarray(0, 33)), {
      code: 'COORDINATOR_KEY_INVALID',
    });
    assert.throws(() => sealBundle({ ...bundle, env: { A: 1 } } as never, a.point));
  });
});

describe('openBundle', () => {
  it('opens what sealBundle makes and what jose makes (encryptBundle), with the same checks', async () => {
    const ecdh = createECDH('prime256v1');
    const point = ecdh.generateKeys();
    assert.deepEqual(openBundle(sealBundle(bundle, point), ecdh), bundle);
    const pub = await subtle.importKey(
      'raw',
      point,
      { name: 'ECDH', namedCurve: 'P-256' },
      true,
      [],
    );
    const jose = await encryptBundle(bundle, pub);
    assert.deepEqual(openBundle(jose, ecdh), bundle);
    const other = createECDH('prime256v1');
    other.generateKeys();
    assert.throws(() => openBundle(jose, other), { code: 'BUNDLE_INVALID' });
    for (const bad of [
      '',
      'a.b.c',
      `${jose}.x`,
      jose.replace('..', '.AAAA.'),
      'e30..AAAA.AAAA.AAAA',
    ]) {
      assert.throws(() => openBundle(bad, ecdh), { code: 'BUNDLE_INVALID' });
    }
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (text) => {
        try {
          openBundle(text, ecdh);
          return false;
        } catch (e) {
          return (e as { code?: string }).code === 'BUNDLE_INVALID';
        }
      }),
      { numRuns: 500 },
    );
  });

  it('a sealer seals one bundle only (one content key, one IV)', async () => {
    const a = await agent();
    const s = bundleSealer(a.point);
    s.seal(bundle);
    assert.throws(() => s.seal(bundle));
  });
});
