/**
 * Certificate signature algorithms of the shared path builder (src/pki/signature.ts through
 * cert-cache.ts `rawCert` / `rawSignedBy`): RSASSA-PSS with the parameters the certificate
 * declares (AMD's chains), RSA PKCS #1 v1.5 and ECDSA with SHA-2, and the refusal of everything
 * else. node:crypto, with RSA_PKCS1_PSS_PADDING and the declared salt length, is the reference.
 */
import assert from 'node:assert/strict';
import {
  constants,
  createPublicKey,
  generateKeyPairSync,
  verify,
  type KeyObject,
} from 'node:crypto';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import { parseCertificates, SNP_ROOTS } from '@cloister/evidence';
import { readVector, requireVectors } from '@cloister/testkit';
import { rawCert, rawSignedBy, type RawCert } from '../src/pki/cert-cache.js';
import {
  ALG,
  baseCert,
  children,
  der,
  NODE_HASH,
  nodeSigner,
  resign,
  seq,
} from './pki-fixtures.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaSpki = new Uint8Array(rsa.publicKey.export({ format: 'der', type: 'spki' }));
const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
const p384Spki = new Uint8Array(p384.publicKey.export({ format: 'der', type: 'spki' }));
const p256 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const p256Spki = new Uint8Array(p256.publicKey.export({ format: 'der', type: 'spki' }));

let n = 0;
/** A fresh self-issued certificate (distinct bytes each time, so no memo is shared). */
const base = () => baseCert(`CN=Resigned ${n++}, O=Cloister Test`);

function malformed(e: unknown): boolean {
  assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
  assert.equal(e.code, 'CERT_MALFORMED');
  return true;
}

/** node:crypto's verdict on `child` under `issuer`, with the PSS salt length given. */
function nodeVerifies(child: RawCert, issuer: RawCert, saltLength?: number): boolean {
  const alg = child.algorithm;
  const key: KeyObject = createPublicKey({
    key: Buffer.from(issuer.spki),
    format: 'der',
    type: 'spki',
  });
  return verify(
    NODE_HASH[alg.hash],
    child.tbs,
    saltLength === undefined ? key : { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength },
    child.signature,
  );
}

test('RSASSA-PSS: verified with the hash and salt length its parameters declare', async () => {
  for (const [hash, salt] of [
    ['SHA-256', 32],
    ['SHA-384', 48],
    ['SHA-512', 64],
    ['SHA-384', 0],
    ['SHA-256', 20],
  ] as const) {
    const d = await resign(await base(), {
      alg: ALG.pss({ hash, mgfHash: hash, salt }),
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, hash, { saltLength: salt }),
    });
    const c = rawCert(d, 'pss');
    assert.deepEqual({ kind: c.algorithm.kind, hash: c.algorithm.hash }, { kind: 'rsa-pss', hash });
    assert.equal(c.algorithm.kind === 'rsa-pss' && c.algorithm.saltLength, salt);
    assert.equal(nodeVerifies(c, c, salt), true);
    assert.equal(await rawSignedBy(c, c), true, `${hash} salt ${salt}`);
  }
  // The salt length defaults to 20 when the parameters leave it out (RFC 4055 section 3.1).
  const dflt = rawCert(
    await resign(await base(), {
      alg: ALG.pss({ hash: 'SHA-256', mgfHash: 'SHA-256' }),
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-256', { saltLength: 20 }),
    }),
    'pss default salt',
  );
  assert.equal(dflt.algorithm.kind === 'rsa-pss' && dflt.algorithm.saltLength, 20);
  assert.equal(await rawSignedBy(dflt, dflt), true);
});

test('RSASSA-PSS: a signature made with another salt length than declared does not verify', async () => {
  // Declares 32, signed with 20: sound as a signature (node:crypto accepts it with 20), but not
  // under the declared parameters, which are the only ones the verifier may use.
  const c = rawCert(
    await resign(await base(), {
      alg: ALG.pss({ hash: 'SHA-256', mgfHash: 'SHA-256', salt: 32 }),
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-256', { saltLength: 20 }),
    }),
    'pss wrong salt',
  );
  assert.equal(nodeVerifies(c, c, 20), true);
  assert.equal(nodeVerifies(c, c, 32), false);
  assert.equal(await rawSignedBy(c, c), false);
  // And another key does not verify a genuine one.
  const good = rawCert(
    await resign(await base(), {
      alg: ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-384', salt: 48 }),
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-384', { saltLength: 48 }),
    }),
    'pss',
  );
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const impostor = rawCert(
    await resign(await base(), {
      alg: ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-384', salt: 48 }),
      spki: new Uint8Array(other.publicKey.export({ format: 'der', type: 'spki' })),
      signTbs: nodeSigner(other.privateKey, 'SHA-384', { saltLength: 48 }),
    }),
    'other',
  );
  assert.equal(await rawSignedBy(good, impostor), false);
  assert.equal(await rawSignedBy(good, good), true);
});

test('RSASSA-PSS parameters outside RFC 4055 or WebCrypto are refused as malformed', async () => {
  const cases: [string, Uint8Array][] = [
    ['SHA-1 defaults (empty parameters)', ALG.pss({})],
    ['explicit SHA-1', ALG.pss({ hash: 'SHA-1', mgfHash: 'SHA-1', salt: 20 })],
    ['MGF1 hash differs', ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-256', salt: 48 })],
    ['MGF1 left at its SHA-1 default', ALG.pss({ hash: 'SHA-256', salt: 32 })],
    ['trailer field 2', ALG.pss({ hash: 'SHA-256', mgfHash: 'SHA-256', salt: 32, trailer: 2 })],
  ];
  for (const [what, alg] of cases) {
    const d = await resign(await base(), {
      alg,
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-256', { saltLength: 32 }),
    });
    assert.throws(() => rawCert(d, what), malformed, what);
  }
  // Parameters absent altogether: SEQUENCE { id-RSASSA-PSS }.
  const pssOid = children(ALG.pss({}))[0];
  assert.ok(pssOid);
  const bare = await resign(await base(), {
    alg: seq(pssOid),
    spki: rsaSpki,
    signTbs: nodeSigner(rsa.privateKey, 'SHA-256', { saltLength: 32 }),
  });
  assert.throws(() => rawCert(bare, 'no parameters'), malformed);
});

test('RSA PKCS #1 v1.5 with SHA-2 verifies; with SHA-1 it is refused', async () => {
  for (const hash of ['SHA-256', 'SHA-384', 'SHA-512'] as const) {
    const c = rawCert(
      await resign(await base(), {
        alg: ALG.pkcs1(hash),
        spki: rsaSpki,
        signTbs: nodeSigner(rsa.privateKey, hash),
      }),
      hash,
    );
    assert.equal(c.algorithm.kind, 'rsa-pkcs1');
    assert.equal(nodeVerifies(c, c), true);
    assert.equal(await rawSignedBy(c, c), true, hash);
  }
  const sha1 = await resign(await base(), {
    alg: ALG.pkcs1('SHA-1'),
    spki: rsaSpki,
    signTbs: nodeSigner(rsa.privateKey, 'SHA-1'),
  });
  assert.throws(() => rawCert(sha1, 'sha1'), malformed);
});

test('ECDSA: any SHA-2 hash on P-256 and P-384 keys; wrong key types and tampering fail', async () => {
  for (const [key, spki, hash] of [
    [p256.privateKey, p256Spki, 'SHA-256'],
    [p384.privateKey, p384Spki, 'SHA-384'],
    // Hash other than the curve's own: verified through WebCrypto, not the fast path.
    [p384.privateKey, p384Spki, 'SHA-256'],
    [p256.privateKey, p256Spki, 'SHA-384'],
    [p256.privateKey, p256Spki, 'SHA-512'],
  ] as const) {
    const d = await resign(await base(), {
      alg: ALG.ecdsa(hash),
      spki,
      signTbs: nodeSigner(key, hash),
    });
    const c = rawCert(d, hash);
    assert.equal(c.algorithm.kind, 'ecdsa');
    assert.equal(await rawSignedBy(c, c), true, `${hash} ${spki.length}`);
    // One bit of the TBSCertificate changed (inside the serial number): refused.
    const serial = children(children(d)[0] as Uint8Array)[1] as Uint8Array;
    const t = new Uint8Array(d);
    const serialAt = serial.byteOffset - d.byteOffset + 2;
    t[serialAt] = (t[serialAt] as number) ^ 1;
    const tampered = rawCert(t, 'tampered');
    assert.equal(await rawSignedBy(tampered, tampered), false);
  }
  // An ECDSA signature checked with an RSA key, or an RSA signature with an EC key: false.
  const ec = rawCert(
    await resign(await base(), {
      alg: ALG.ecdsa('SHA-256'),
      spki: p256Spki,
      signTbs: nodeSigner(p256.privateKey, 'SHA-256'),
    }),
    'ec',
  );
  const rs = rawCert(
    await resign(await base(), {
      alg: ALG.pkcs1('SHA-256'),
      spki: rsaSpki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-256'),
    }),
    'rsa',
  );
  assert.equal(await rawSignedBy(ec, rs), false);
  assert.equal(await rawSignedBy(rs, ec), false);
});

test('ECDSA: parameters present, a malformed signature, or differing algorithms are refused', async () => {
  const ecdsaOid = children(ALG.ecdsa('SHA-256'))[0];
  assert.ok(ecdsaOid);
  const paramsPresent = seq(ecdsaOid, Uint8Array.of(0x05, 0x00));
  const cases: [string, Parameters<typeof resign>[1]][] = [
    [
      'ECDSA parameters present',
      { alg: paramsPresent, spki: p256Spki, signTbs: nodeSigner(p256.privateKey, 'SHA-256') },
    ],
    [
      'outer algorithm differs from the signed one',
      {
        alg: ALG.ecdsa('SHA-256'),
        outerAlg: ALG.ecdsa('SHA-384'),
        spki: p256Spki,
        signTbs: nodeSigner(p256.privateKey, 'SHA-256'),
      },
    ],
    [
      'not an ECDSA-Sig-Value',
      { alg: ALG.ecdsa('SHA-256'), spki: p256Spki, signTbs: () => new Uint8Array(64).fill(1) },
    ],
  ];
  for (const [what, o] of cases) {
    const d = await resign(await base(), o);
    assert.throws(() => rawCert(d, what), malformed, what);
  }
  // r longer than a P-256 coordinate: well-formed DER, but not a P-256 signature.
  const long = Uint8Array.of(
    0x30,
    0x46,
    0x02,
    0x21,
    0x01,
    ...new Uint8Array(32).fill(7),
    0x02,
    0x21,
    0x00,
    0x80,
    ...new Uint8Array(31).fill(7),
  );
  const c = rawCert(
    await resign(await base(), { alg: ALG.ecdsa('SHA-256'), spki: p256Spki, signTbs: () => long }),
    'long r',
  );
  assert.equal(await rawSignedBy(c, c), false);
});

test('AMD chains: RSASSA-PSS SHA-384, salt 48 from the parameters, as node:crypto verifies', async () => {
  for (const p of ['Milan', 'Genoa', 'Turin'] as const) {
    const r = SNP_ROOTS[p];
    const ark = rawCert(der(r.ark.certificate), `${p} ARK`);
    for (const c of [ark, rawCert(der(r.ask), `${p} ASK`), rawCert(der(r.asvk), `${p} ASVK`)]) {
      assert.deepEqual(c.algorithm, {
        kind: 'rsa-pss',
        name: 'RSASSA-PSS(SHA-384, salt 48)',
        hash: 'SHA-384',
        saltLength: 48,
      });
      assert.equal(nodeVerifies(c, ark, 48), true);
      assert.equal(nodeVerifies(c, ark, 32), false);
      assert.equal(await rawSignedBy(c, ark), true, p);
    }
  }
});

test(
  'AMD VCEK/VLEK vectors: signed by their ASK/ASVK with RSASSA-PSS',
  { skip: requireVectors() === undefined },
  async () => {
    for (const [file, p, kind] of [
      ['snp/gsev-milan-v2.vcek.der', 'Milan', 'ask'],
      ['snp/oak-genoa-v5.vcek.der', 'Genoa', 'ask'],
      ['snp/oak-turin-v5.vcek.der', 'Turin', 'ask'],
      ['snp/trustee-milan-vlek-v3.vlek.der', 'Milan', 'asvk'],
    ] as const) {
      const [cert] = parseCertificates(readVector(file));
      assert.ok(cert);
      const leaf = rawCert(der(cert), file);
      const issuer = rawCert(der(SNP_ROOTS[p][kind]), `${p} ${kind}`);
      assert.equal(leaf.algorithm.kind === 'rsa-pss' && leaf.algorithm.saltLength, 48);
      assert.equal(nodeVerifies(leaf, issuer, 48), true);
      assert.equal(await rawSignedBy(leaf, issuer), true, file);
      // The other product's intermediate does not verify it.
      const other = rawCert(der(SNP_ROOTS[p === 'Milan' ? 'Genoa' : 'Milan'].ask), 'other ASK');
      assert.equal(await rawSignedBy(leaf, other), false);
    }
  },
);
