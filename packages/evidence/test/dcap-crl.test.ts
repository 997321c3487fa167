/**
 * DCAP's CRLs under the one CRL rule of pki/path.ts (`checkPathCrls`, through collateral.ts
 * `checkRootCaCrl`): the Intel Root CA CRL applies to every Intel chain and the PCK CRL to the
 * PCK chain, each verified over its exact TBSCertList under its issuer's key, current at `now`,
 * revoking only what that issuer signed. On synthetic collateral and quotes in Intel's shape
 * (dcap-fixtures.ts), then on the real vectors.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  parseIntelCollateral,
  parsePemCertificates,
  toHex,
  trustAnchor,
  verifyDcapQuote,
  type IntelCollateralJson,
} from '@cloister/evidence';
import { hasCode, readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { checkCollateral, verifyCollateralSignatures } from '../src/dcap/collateral.js';
import { INTEL_SGX_ROOT_CA_DER } from '../src/dcap/intel-root.js';
import { certInfo, crlInfo, crlSignedBy } from '../src/pki/cert-cache.js';
import {
  crlHex,
  DCAP_NOW,
  intelCollateral as collateral,
  INTEL_PCK_CA,
  intelShaped,
  makePck,
  pem,
  sgxQuote,
  type IntelShaped,
} from './dcap-fixtures.js';
import {
  ALG,
  der,
  makeCert,
  makeCrl,
  makeRoot,
  nodeKey,
  nodeSigner,
  resignCrl,
} from './pki-fixtures.js';

/** Hex `h` with its last byte xor 1 (in a CRL: the last byte of the signature). */
const flipLast = (h: string): string =>
  h.slice(0, -2) + (parseInt(h.slice(-2), 16) ^ 1).toString(16).padStart(2, '0');

/** The collateral checks of `verifyDcapQuote` (signatures, then the per-call checks). */
async function check(h: IntelShaped, json: IntelCollateralJson, now = DCAP_NOW) {
  const c = parseIntelCollateral(json);
  const signed = await verifyCollateralSignatures(c);
  return checkCollateral(c, signed, [trustAnchor('test root', der(h.root.cert))], now.getTime());
}

test('synthetic collateral: the root CA CRL applies to every issuer chain', async () => {
  const h = await intelShaped();
  const w = await check(h, await collateral(h));
  assert.equal(new Date(w.notBefore).toISOString(), '2025-06-01T00:00:00.000Z');
  assert.equal(new Date(w.notAfter).toISOString(), '2025-08-01T00:00:00.000Z');
  // The root revokes the TCB Signing certificate or the PCK CA of the PCK CRL issuer chain.
  for (const serial of ['0a', '0b']) {
    await assert.rejects(
      check(h, await collateral(h, { root_ca_crl: await crlHex(h.root, { revoke: [serial] }) })),
      hasCode('CHAIN_REVOKED'),
      serial,
    );
  }
  // A serial the root did not issue, or a revocation after `now`, revokes nothing here.
  await check(h, await collateral(h, { root_ca_crl: await crlHex(h.root, { revoke: ['0c'] }) }));
  await check(
    h,
    await collateral(h, {
      root_ca_crl: await crlHex(h.root, {
        revoke: ['0a'],
        revokedAt: new Date('2025-09-01T00:00:00Z'),
      }),
    }),
  );
});

test('synthetic collateral: a forged, stale or foreign root CA CRL is refused', async () => {
  const h = await intelShaped();
  const other = await makeRoot('CN=Test SGX Root CA, O=Cloister Test');
  const good = await crlHex(h.root);
  for (const [what, crl, code] of [
    ['flipped signature byte', flipLast(good), 'COLLATERAL_SIGNATURE_INVALID'],
    [
      'signed by another key',
      await crlHex(h.root, { signer: other.keys.privateKey }),
      'COLLATERAL_SIGNATURE_INVALID',
    ],
    // The PCK CA's CRL, genuine, in the root's place.
    ['naming the PCK CA', await crlHex(h.pckCa), 'COLLATERAL_SIGNATURE_INVALID'],
    [
      'past its nextUpdate',
      await crlHex(h.root, { nextUpdate: new Date('2025-06-15T00:00:00Z') }),
      'COLLATERAL_EXPIRED',
    ],
    [
      'before its thisUpdate',
      await crlHex(h.root, { thisUpdate: new Date('2025-07-15T00:00:00Z') }),
      'COLLATERAL_EXPIRED',
    ],
  ] as const) {
    await assert.rejects(check(h, await collateral(h, { root_ca_crl: crl })), hasCode(code), what);
  }
  // Signed by the root, but with SHA-1 or with a signed algorithm other than the outer one.
  const key = nodeKey(h.root.keys.privateKey);
  const base = der(await makeCrl(h.root));
  for (const crl of [
    await resignCrl(base, { alg: ALG.ecdsa('SHA-1'), signTbs: nodeSigner(key, 'SHA-1') }),
    await resignCrl(base, {
      alg: ALG.ecdsa('SHA-256'),
      outerAlg: ALG.ecdsa('SHA-384'),
      signTbs: nodeSigner(key, 'SHA-384'),
    }),
  ]) {
    await assert.rejects(
      check(h, await collateral(h, { root_ca_crl: toHex(crl) })),
      hasCode('CERT_MALFORMED'),
    );
  }
  // Re-signed with the same algorithm inside and outside, it is accepted.
  await check(
    h,
    await collateral(h, {
      root_ca_crl: toHex(
        await resignCrl(base, { alg: ALG.ecdsa('SHA-256'), signTbs: nodeSigner(key, 'SHA-256') }),
      ),
    }),
  );
});

test('synthetic collateral: the PCK CRL is signed by its issuer chain leaf', async () => {
  const h = await intelShaped();
  const other = await makeRoot('CN=Other, O=Cloister Test');
  const good = await crlHex(h.pckCa);
  for (const crl of [flipLast(good), await crlHex(h.pckCa, { signer: other.keys.privateKey })]) {
    await assert.rejects(
      check(h, await collateral(h, { pck_crl: crl })),
      hasCode('COLLATERAL_SIGNATURE_INVALID'),
    );
  }
});

test('synthetic quote: the PCK CRL revokes the PCK, the root CA CRL the PCK CA', async () => {
  const h = await intelShaped();
  const roots = [trustAnchor('test root', der(h.root.cert))];
  const run = async (quote: Uint8Array, o: Partial<IntelCollateralJson> = {}) =>
    verifyDcapQuote(quote, { collateral: await collateral(h, o), now: DCAP_NOW, roots });
  const quote = await sgxQuote(h.pck, [h.pck, h.pckCa, h.root]);
  assert.equal((await run(quote)).tcbStatus, 'UpToDate');
  await assert.rejects(
    run(quote, { pck_crl: await crlHex(h.pckCa, { revoke: ['0c'] }) }),
    hasCode('CHAIN_REVOKED'),
  );
  // The root did not sign the PCK: the root CA CRL listing its serial does not revoke it.
  await run(quote, { root_ca_crl: await crlHex(h.root, { revoke: ['0c'] }) });
  // The PCK CA re-issued (same name and key, serial 0d), carried by this quote only: the root
  // CA CRL applies to the quote's chain as to the collateral's.
  const reissued = await makeCert(h.root, h.pckCa.cert.subject, {
    ...INTEL_PCK_CA,
    keys: h.pckCa.keys,
    serial: '0d',
  });
  const quote2 = await sgxQuote(h.pck, [h.pck, reissued, h.root]);
  const revoking0d = { root_ca_crl: await crlHex(h.root, { revoke: ['0d'] }) };
  await run(quote2);
  await run(quote, revoking0d);
  await assert.rejects(run(quote2, revoking0d), hasCode('CHAIN_REVOKED'));
  // The PCK CRL is current where it is applied.
  await assert.rejects(
    run(quote, {
      pck_crl: await crlHex(h.pckCa, { nextUpdate: new Date('2025-06-15T00:00:00Z') }),
    }),
    hasCode('COLLATERAL_EXPIRED'),
  );
  // A PCK of another PCK's serial on that CRL, through a quote of its own: revoked the same.
  const pck2 = await makePck(h.pckCa, '0e');
  await assert.rejects(
    run(await sgxQuote(pck2, [pck2, h.pckCa, h.root]), {
      pck_crl: await crlHex(h.pckCa, { revoke: ['0e'] }),
    }),
    hasCode('CHAIN_REVOKED'),
  );
});

test("synthetic quote: the PCK CRL must be the PCK issuer's, signed by its issuer chain", async () => {
  const h = await intelShaped();
  const roots = [trustAnchor('test root', der(h.root.cert))];
  const quote = await sgxQuote(h.pck, [h.pck, h.pckCa, h.root]);
  const run = async (o: Partial<IntelCollateralJson>) =>
    verifyDcapQuote(quote, { collateral: await collateral(h, o), now: DCAP_NOW, roots });
  // The other CA's CRL and chain (a PCK CRL that could never list this PCK).
  const processorCa = await makeCert(h.root, 'CN=Intel SGX PCK Processor CA, O=Cloister Test', {
    ...INTEL_PCK_CA,
    serial: '0f',
  });
  await assert.rejects(
    run({ pck_crl: await crlHex(processorCa), pck_crl_issuer_chain: pem(processorCa, h.root) }),
    hasCode('COLLATERAL_MISMATCH'),
  );
  // The same key under another name: the CRL names no issuer of this PCK.
  const renamed = await makeCert(h.root, 'CN=Intel SGX PCK Processor CA, O=Cloister Test', {
    ...INTEL_PCK_CA,
    keys: h.pckCa.keys,
    serial: '10',
  });
  await assert.rejects(
    run({
      pck_crl: await crlHex(renamed, { revoke: ['0c'] }),
      pck_crl_issuer_chain: pem(renamed, h.root),
    }),
    hasCode('COLLATERAL_MISMATCH'),
  );
  // The PCK CA's CRL beside another CA's issuer chain, or signed by another key.
  await assert.rejects(
    run({ pck_crl_issuer_chain: pem(processorCa, h.root) }),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
  await assert.rejects(
    run({ pck_crl: await crlHex(h.pckCa, { signer: processorCa.keys.privateKey }) }),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
});

const dir = requireVectors();

test(
  'the real Intel CRLs verify under their issuers only',
  { skip: dir === undefined },
  async () => {
    const root = certInfo(INTEL_SGX_ROOT_CA_DER, 'Intel SGX Root CA');
    const coll = JSON.parse(
      readVectorText('tdx/gtdx-v4-spr.collateral.json'),
    ) as IntelCollateralJson;
    const [platformCa] = parsePemCertificates(coll.pck_crl_issuer_chain);
    assert.ok(platformCa);
    assert.match(platformCa.subject, /PCK Platform CA/);
    const ca = certInfo(der(platformCa), 'Intel SGX PCK Platform CA');
    const rootCrl = readVector('tdx/gtdx-rootcrl.der');
    const pckCrl = readVector('tdx/gtdx-pckcrl-platform.der');
    const f = 'vector CRL';
    assert.equal(await crlSignedBy(crlInfo(rootCrl, f), root, f), true);
    assert.equal(await crlSignedBy(crlInfo(pckCrl, f), ca, f), true);
    assert.equal(await crlSignedBy(crlInfo(rootCrl, f), ca, f), false);
    assert.equal(await crlSignedBy(crlInfo(pckCrl, f), root, f), false);
    for (const d of [rootCrl, pckCrl]) {
      const t = new Uint8Array(d);
      t[t.length - 1] = (t[t.length - 1] as number) ^ 1;
      assert.equal(await crlSignedBy(crlInfo(t, f), d === rootCrl ? root : ca, f), false);
    }
  },
);

test(
  'real vectors: a forged or substituted root CA CRL or PCK CRL is refused',
  { skip: dir === undefined },
  async () => {
    const bytes = readVector('sgx/phala-sgx-v3.quote.bin');
    const c = JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as IntelCollateralJson;
    const now = new Date('2025-07-01T00:00:00Z');
    await verifyDcapQuote(bytes, { collateral: c, now });
    for (const [what, edit] of [
      ['root CA CRL signature byte', { root_ca_crl: flipLast(c.root_ca_crl) }],
      ['the PCK CRL as the root CA CRL', { root_ca_crl: c.pck_crl }],
      ['PCK CRL signature byte', { pck_crl: flipLast(c.pck_crl) }],
    ] as const) {
      await assert.rejects(
        verifyDcapQuote(bytes, { collateral: { ...c, ...edit }, now }),
        hasCode('COLLATERAL_SIGNATURE_INVALID'),
        what,
      );
    }
  },
);

test('synthetic quote: a PCK the root signed directly has no PCK CA and is refused', async () => {
  const h = await intelShaped();
  const roots = [trustAnchor('test root', der(h.root.cert))];
  const direct = await makePck(h.root, '10');
  const quote = await sgxQuote(direct, [direct, h.root]);
  for (const withCollateral of [true, false])
    await assert.rejects(
      verifyDcapQuote(quote, {
        ...(withCollateral ? { collateral: await collateral(h) } : {}),
        now: DCAP_NOW,
        roots,
      }),
      hasCode('CHAIN_INCOMPLETE'),
    );
});
