/**
 * CRL signatures go through the certificates' signature code (src/pki/signature.ts through
 * cert-cache.ts `crlSignedBy`): verified over the exact TBSCertList with the algorithm the CRL
 * declares, the signed algorithm equal to the outer one, SHA-1 refused. Through the public
 * `checkCrl` and `verifyChain`, whose CRL rule (pki/path.ts) every verifier shares; node:crypto
 * is the reference for what a correct signature is.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { test } from 'node:test';
import { checkCrl, parseCertificate, parseCrl, trustAnchor, verifyChain } from '@cloister/evidence';
import type { Certificate, Crl } from '@cloister/evidence';
import { hasCode } from '@cloister/testkit';
import { certInfo, crlInfo, crlSignedBy } from '../src/pki/cert-cache.js';
import {
  ALG,
  baseCert,
  children,
  der,
  hierarchy,
  makeCrl,
  nodeKey,
  nodeSigner,
  NOW,
  resign,
  resignCrl,
  type Ca,
  type Hash,
} from './pki-fixtures.js';

const anchor = (ca: Ca) => trustAnchor('test root', der(ca.cert));

/** `d` with the byte at `at` (negative: from the end) xor 1. */
function flip(d: Uint8Array, at: number): Uint8Array {
  const out = new Uint8Array(d);
  const i = at < 0 ? out.length + at : at;
  out[i] = (out[i] as number) ^ 1;
  return out;
}

/** The TBSCertList and signatureValue bits of a DER CRL. */
function crlParts(d: Uint8Array): { tbs: Uint8Array; signature: Uint8Array } {
  const [tbs, , bits] = children(d);
  assert.ok(tbs && bits);
  // BIT STRING: tag, one length octet (signatures here are short), unused-bits octet.
  assert.ok(bits.length < 0x80 + 2);
  return { tbs, signature: bits.subarray(3) };
}

test('a CRL verifies over its TBSCertList; a flipped signature or signed byte fails', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const crl = der(await makeCrl(h.inter));
  // The reference: the signature is ECDSA-SHA256 over the TBSCertList, by the issuer's key.
  const { tbs, signature } = crlParts(crl);
  assert.equal(verify('sha256', tbs, nodeKey(h.inter.keys.publicKey), signature), true);
  const run = (d: Uint8Array) => checkCrl(parseCrl(d), h.inter.cert, h.leaf.cert, NOW, 'test');
  await run(crl);
  // The last byte of s.
  await assert.rejects(run(flip(crl, -1)), hasCode('COLLATERAL_SIGNATURE_INVALID'));
  // thisUpdate moved a year back: still current, still parsable, no longer what was signed.
  const text = Buffer.from(crl).toString('latin1');
  assert.equal(text.split('250101000000Z').length, 2);
  const moved = new Uint8Array(
    Buffer.from(text.replace('250101000000Z', '240101000000Z'), 'latin1'),
  );
  assert.equal(parseCrl(moved).thisUpdate.getUTCFullYear(), 2024);
  await assert.rejects(run(moved), hasCode('COLLATERAL_SIGNATURE_INVALID'));
  // The same through verifyChain, where the CRL names the leaf's issuer.
  const opts = (crls: Crl[]) => ({
    roots: [anchor(h.root)],
    now: NOW,
    label: 'test chain',
    crls,
  });
  const chain: Certificate[] = [h.leaf.cert, h.inter.cert];
  await verifyChain(chain, opts([parseCrl(crl)]));
  await assert.rejects(
    verifyChain(chain, opts([parseCrl(flip(crl, -1))])),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
});

test('crlSignedBy: the issuer key only; another key or altered bytes fail', async () => {
  const h = await hierarchy();
  const other = await hierarchy({ prefix: 'Other' });
  const crl = der(await makeCrl(h.inter));
  const inter = certInfo(der(h.inter.cert), 'inter');
  const f = 'test CRL';
  assert.equal(await crlSignedBy(crlInfo(crl, f), inter, f), true);
  // Memoised by the exact bytes: asked again, and for altered bytes after the success.
  assert.equal(await crlSignedBy(crlInfo(crl, f), inter, f), true);
  assert.equal(await crlSignedBy(crlInfo(flip(crl, -1), f), inter, f), false);
  // Not the key of the root, of another intermediate or of the leaf.
  for (const c of [h.root.cert, other.inter.cert, h.leaf.cert]) {
    assert.equal(await crlSignedBy(crlInfo(crl, f), certInfo(der(c), 'other'), f), false);
  }
  // Signed by another key under the intermediate's name.
  const forged = der(await makeCrl(h.inter, { signer: other.inter.keys.privateKey }));
  assert.equal(await crlSignedBy(crlInfo(forged, f), inter, f), false);
});

test('CERT_MALFORMED: a CRL whose signed algorithm differs from the outer one', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const key = nodeKey(h.inter.keys.privateKey);
  const base = der(await makeCrl(h.inter));
  const run = (d: Uint8Array) => checkCrl(parseCrl(d), h.inter.cert, h.leaf.cert, NOW, 'test');
  // Signed with SHA-384, as the outer algorithm says; the TBSCertList says SHA-256.
  const mixed = await resignCrl(base, {
    alg: ALG.ecdsa('SHA-256'),
    outerAlg: ALG.ecdsa('SHA-384'),
    signTbs: nodeSigner(key, 'SHA-384'),
  });
  const { tbs, signature } = crlParts(mixed);
  assert.equal(verify('sha384', tbs, nodeKey(h.inter.keys.publicKey), signature), true);
  await assert.rejects(run(mixed), hasCode('CERT_MALFORMED'));
  // The other way round.
  await assert.rejects(
    run(
      await resignCrl(base, {
        alg: ALG.ecdsa('SHA-384'),
        outerAlg: ALG.ecdsa('SHA-256'),
        signTbs: nodeSigner(key, 'SHA-256'),
      }),
    ),
    hasCode('CERT_MALFORMED'),
  );
  // The same signature algorithm inside and outside: it verifies.
  for (const hash of ['SHA-256', 'SHA-384', 'SHA-512'] as const) {
    await run(await resignCrl(base, { alg: ALG.ecdsa(hash), signTbs: nodeSigner(key, hash) }));
  }
});

test('CERT_MALFORMED: SHA-1 CRL signatures are refused, however valid', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const other = await hierarchy({ prefix: 'Other' });
  const sha1 = await resignCrl(der(await makeCrl(h.inter)), {
    alg: ALG.ecdsa('SHA-1'),
    signTbs: nodeSigner(nodeKey(h.inter.keys.privateKey), 'SHA-1'),
  });
  const { tbs, signature } = crlParts(sha1);
  assert.equal(verify('sha1', tbs, nodeKey(h.inter.keys.publicKey), signature), true);
  await assert.rejects(
    checkCrl(parseCrl(sha1), h.inter.cert, h.leaf.cert, NOW, 'test'),
    hasCode('CERT_MALFORMED'),
  );
  const opts = (crls: Crl[]) => ({
    roots: [anchor(h.root)],
    now: NOW,
    label: 'test chain',
    crls,
  });
  await assert.rejects(
    verifyChain([h.leaf.cert, h.inter.cert], opts([parseCrl(sha1)])),
    hasCode('CERT_MALFORMED'),
  );
  // A CRL of an issuer that is not on the path is ignored, whatever it is signed with.
  const unrelated = await resignCrl(der(await makeCrl(other.inter)), {
    alg: ALG.ecdsa('SHA-1'),
    signTbs: nodeSigner(nodeKey(other.inter.keys.privateKey), 'SHA-1'),
  });
  await verifyChain([h.leaf.cert, h.inter.cert], opts([parseCrl(unrelated)]));
});

test('RSA CRLs: RSASSA-PSS as declared, PKCS #1 v1.5 with SHA-2 only', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = new Uint8Array(rsa.publicKey.export({ format: 'der', type: 'spki' }));
  // An RSA issuer (AMD's ARK signs its KDS CRL with RSASSA-PSS, SHA-384, salt 48).
  const issuer: Certificate = parseCertificate(
    await resign(await baseCert('CN=RSA CRL Issuer, O=Cloister Test'), {
      alg: ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-384', salt: 48 }),
      spki,
      signTbs: nodeSigner(rsa.privateKey, 'SHA-384', { saltLength: 48 }),
    }),
  );
  const h = await hierarchy({ leaf: { serial: '05' } });
  const base = der(await makeCrl(h.inter));
  const run = async (alg: Uint8Array, hash: Hash, salt?: number) =>
    checkCrl(
      parseCrl(
        await resignCrl(base, {
          alg,
          signTbs: nodeSigner(
            rsa.privateKey,
            hash,
            salt === undefined ? undefined : { saltLength: salt },
          ),
        }),
      ),
      issuer,
      h.leaf.cert,
      NOW,
      'test',
    );
  await run(ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-384', salt: 48 }), 'SHA-384', 48);
  await run(ALG.pss({ hash: 'SHA-256', mgfHash: 'SHA-256', salt: 32 }), 'SHA-256', 32);
  // Declares salt 48, signed with salt 32: a sound signature, not under the declared parameters.
  await assert.rejects(
    run(ALG.pss({ hash: 'SHA-384', mgfHash: 'SHA-384', salt: 48 }), 'SHA-384', 32),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
  // RSASSA-PSS with the SHA-1 defaults.
  await assert.rejects(run(ALG.pss({}), 'SHA-1', 20), hasCode('CERT_MALFORMED'));
  for (const hash of ['SHA-256', 'SHA-384', 'SHA-512'] as const) {
    await run(ALG.pkcs1(hash), hash);
  }
  await assert.rejects(run(ALG.pkcs1('SHA-1'), 'SHA-1'), hasCode('CERT_MALFORMED'));
  // An ECDSA issuer does not verify an RSA signature.
  await assert.rejects(
    checkCrl(
      parseCrl(
        await resignCrl(base, {
          alg: ALG.pkcs1('SHA-256'),
          signTbs: nodeSigner(rsa.privateKey, 'SHA-256'),
        }),
      ),
      h.inter.cert,
      h.leaf.cert,
      NOW,
      'test',
    ),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
});
