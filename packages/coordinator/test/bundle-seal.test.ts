import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { BUNDLE_CONTENT_TYPE, decryptBundle, encryptBundle } from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { bundleSealer, openBundle, sealBundle } from '../src/bundle-seal.js';

const subtle = webcrypto.subtle;

/** An agent's bundle key: the X25519 WebCrypto pair (as the agent holds it) and its raw public half. */
async function agent(): Promise<{ keys: CryptoKeyPair; raw: Uint8Array }> {
  const keys = (await subtle.generateKey({ name: 'X25519' }, true, [
    'deriveBits',
  ])) as CryptoKeyPair;
  return { keys, raw: new Uint8Array(await subtle.exportKey('raw', keys.publicKey)) };
}

/** A Node X25519 pair, as a load generator holds it, with its raw public half. */
function nodeAgent(): { privateKey: KeyObject; raw: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const x = publicKey.export({ format: 'jwk' }).x as string;
  return { privateKey, raw: new Uint8Array(Buffer.from(x, 'base64url')) };
}

/**
 * The low-order points of Curve25519 (RFC 7748 §6.1, as listed by libsodium's blocklist): an
 * agreement with any of them is all zeros whatever the private key.
 */
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map((h) => new Uint8Array(Buffer.from(h, 'hex')));

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

describe('sealBundle and openBundle (Node JWE path, ECDH-ES over X25519 + A256GCM)', () => {
  it('opens with jose and with the agent-side decryptBundle, header as RFC 7518 says', async () => {
    const a = await agent();
    const jwe = sealBundle(bundle, a.raw);
    const h = decodeProtectedHeader(jwe);
    assert.equal(h.alg, 'ECDH-ES');
    assert.equal(h.enc, 'A256GCM');
    assert.equal(h.cty, BUNDLE_CONTENT_TYPE);
    const epk = h.epk as { kty?: string; crv?: string } | undefined;
    assert.deepEqual([epk?.kty, epk?.crv], ['OKP', 'X25519']);
    assert.deepEqual(Object.keys(h.epk ?? {}).sort(), ['crv', 'kty', 'x']);
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
    const one = sealBundle(bundle, a.raw).split('.');
    const two = sealBundle(bundle, a.raw).split('.');
    assert.notEqual(one[0], two[0]);
    assert.notEqual(one[2], two[2]);
  });

  it('another key cannot open it; a changed header, IV, ciphertext or tag is refused', async () => {
    const a = await agent();
    const b = await agent();
    const jwe = sealBundle(bundle, a.raw);
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

  it('refuses a key of the wrong length, a low-order point, and a bundle off its schema', async () => {
    const a = await agent();
    for (const bad of [a.raw.subarray(0, 31), new Uint8Array(33), new Uint8Array(0), ...LOW_ORDER])
      assert.throws(() => sealBundle(bundle, bad), { code: 'COORDINATOR_KEY_INVALID' });
    assert.throws(() => sealBundle({ ...bundle, env: { A: 1 } } as never, a.raw));
  });
});

describe('openBundle', () => {
  it('opens what sealBundle makes and what jose makes (encryptBundle), with the same checks', async () => {
    const me = nodeAgent();
    const ecdh = me.privateKey;
    assert.deepEqual(openBundle(sealBundle(bundle, me.raw), ecdh), bundle);
    const pub = await subtle.importKey('raw', me.raw, { name: 'X25519' }, true, []);
    const jose = await encryptBundle(bundle, pub);
    assert.deepEqual(openBundle(jose, ecdh), bundle);
    assert.throws(() => openBundle(jose, nodeAgent().privateKey), { code: 'BUNDLE_INVALID' });
    // A bundle whose ephemeral key is a low-order point is refused, not opened under an
    // all-zero secret.
    const [header, ...rest] = jose.split('.');
    const h = JSON.parse(Buffer.from(header as string, 'base64url').toString()) as {
      epk: { x: string };
    };
    h.epk.x = Buffer.from(LOW_ORDER[1] as Uint8Array).toString('base64url');
    const lowOrder = [Buffer.from(JSON.stringify(h)).toString('base64url'), ...rest].join('.');
    assert.throws(() => openBundle(lowOrder, ecdh), { code: 'BUNDLE_INVALID' });
    // The agent's WebCrypto key and the Node key object are the same key.
    const a = await agent();
    const asNode = createPrivateKey({
      key: Buffer.from(await subtle.exportKey('pkcs8', a.keys.privateKey)),
      format: 'der',
      type: 'pkcs8',
    });
    assert.deepEqual(openBundle(sealBundle(bundle, a.raw), asNode), bundle);
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
    const s = bundleSealer(a.raw);
    s.seal(bundle);
    assert.throws(() => s.seal(bundle));
  });
});
