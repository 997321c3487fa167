/**
 * What a certificate's extensions allow it to sign (RFC 5280 section 6.1.4 (k), (l), (m), (n),
 * (o), section 6.3.3 (f), section 4.2.1.3), enforced by the shared path builder
 * (src/pki/path.ts): a certificate that issues another must be a CA (basicConstraints cA TRUE)
 * with keyCertSign when it has a keyUsage, within its pathLenConstraint; a CRL issuer with a
 * keyUsage must have cRLSign; a leaf whose key signs evidence or collateral must have
 * digitalSignature when it has a keyUsage; no certificate on a path may carry a critical
 * extension the verifier does not process, and no CRL or CRL entry either (sections 5.2, 5.3).
 * Synthetic hierarchies through the public `verifyChain` / `checkCrl` and the DCAP and sim
 * verifiers, and the real vendor certificates and CRLs, which must all pass.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Name } from '@peculiar/x509';
import type { CloisterError } from '@cloister/errors';
import {
  checkCrl,
  createSimReport,
  parseCertificates,
  parseDcapQuote,
  parsePemCertificates,
  SNP_ROOTS,
  trustAnchor,
  verifyChain,
  verifyDcapQuote,
  verifySimReport,
} from '@cloister/evidence';
import type { ChainOptions, Certificate, IntelCollateralJson } from '@cloister/evidence';
import { hasCode, readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { INTEL_SGX_ROOT_CA_DER } from '../src/dcap/intel-root.js';
import { KEY_USAGE } from '../src/pki/ca-extensions.js';
import { certInfo, crlInfo } from '../src/pki/cert-cache.js';
import {
  crlHex,
  DCAP_NOW,
  intelCollateral,
  intelShaped,
  makePck,
  sgxQuote,
} from './dcap-fixtures.js';
import {
  CA,
  der,
  END_ENTITY,
  hierarchy,
  KU,
  makeCert,
  makeCrl,
  makeRoot,
  NOW,
  seq,
  tlv,
  type Ca,
} from './pki-fixtures.js';

const dir = requireVectors();

const opts = (root: Ca, extra: Partial<ChainOptions> = {}): ChainOptions => ({
  roots: [trustAnchor('test root', der(root.cert))],
  now: NOW,
  label: 'test chain',
  ...extra,
});
const certs = (...cas: Ca[]): Certificate[] => cas.map((c) => c.cert);

/** CHAIN_ISSUER_CONSTRAINT naming `rule`, and the certificate at `position` when given. */
const refused =
  (rule: string, position?: number) =>
  (e: unknown): boolean => {
    hasCode('CHAIN_ISSUER_CONSTRAINT', 'CHAIN')(e);
    const d = (e as CloisterError).details ?? {};
    assert.equal(d['rule'], rule);
    if (position !== undefined) assert.equal(d['position'], position);
    assert.equal(typeof d['subject'], 'string');
    return true;
  };

test('an intermediate that is not a CA issues nothing: cA FALSE, or no basicConstraints', async () => {
  for (const basicConstraints of [{ ca: false }, null]) {
    const h = await hierarchy({ inter: { basicConstraints } });
    await assert.rejects(
      verifyChain(certs(h.leaf, h.inter), opts(h.root)),
      refused('basicConstraints.cA', 1),
    );
  }
  // The same hierarchy with cA TRUE verifies (keyUsage is optional).
  const ok = await hierarchy({ inter: { keyUsage: null } });
  assert.equal((await verifyChain(certs(ok.leaf, ok.inter), opts(ok.root))).path.length, 3);
});

test('an intermediate whose keyUsage lacks keyCertSign issues nothing', async () => {
  const h = await hierarchy({ inter: { keyUsage: KU.digitalSignature | KU.cRLSign } });
  await assert.rejects(
    verifyChain(certs(h.leaf, h.inter), opts(h.root)),
    refused('keyUsage.keyCertSign', 1),
  );
});

test('pathLenConstraint: 0 allows no intermediate below, 1 allows one', async () => {
  const root = await makeRoot('CN=Len Root, O=Cloister Test');
  const make = async (pathLen: number) => {
    const upper = await makeCert(root, 'CN=Len Upper, O=Cloister Test', {
      ...CA,
      basicConstraints: { ca: true, pathLen },
    });
    const lower = await makeCert(upper, 'CN=Len Lower, O=Cloister Test', { ...CA });
    const leaf = await makeCert(lower, 'CN=Len Leaf, O=Cloister Test', { serial: '05' });
    return certs(leaf, lower, upper);
  };
  await assert.rejects(verifyChain(await make(0), opts(root)), (e: unknown) => {
    refused('pathLenConstraint', 2)(e);
    assert.deepEqual(
      [
        (e as CloisterError).details?.['pathLenConstraint'],
        (e as CloisterError).details?.['intermediatesBelow'],
      ],
      [0, 1],
    );
    return true;
  });
  assert.equal((await verifyChain(await make(1), opts(root))).path.length, 4);
});

test('the pinned root is held to the same rules when it issues', async () => {
  // pathLenConstraint 0 on the root: no intermediate may follow.
  const tight = await hierarchy({ root: { basicConstraints: { ca: true, pathLen: 0 } } });
  await assert.rejects(
    verifyChain(certs(tight.leaf, tight.inter), opts(tight.root)),
    refused('pathLenConstraint', 2),
  );
  // A self-signed end-entity certificate pinned as a root issues nothing.
  const notCa = await hierarchy({ root: { ...END_ENTITY } });
  await assert.rejects(
    verifyChain(certs(notCa.leaf, notCa.inter), opts(notCa.root)),
    refused('basicConstraints.cA', 2),
  );
  // Pinned and alone, it issues nothing, so nothing is asked of it.
  assert.equal((await verifyChain(certs(notCa.root), opts(notCa.root))).path.length, 1);
});

test('a PCK-like end-entity certificate (cA FALSE, digitalSignature) used as an issuer is refused', async () => {
  // Through verifyChain, where no chain-shape rule pins the path length.
  const h = await hierarchy({ leaf: { ...END_ENTITY } });
  const below = await makeCert(h.leaf, 'CN=Issued by a leaf, O=Cloister Test', { serial: '09' });
  await assert.rejects(
    verifyChain(certs(below, h.leaf, h.inter), opts(h.root)),
    refused('basicConstraints.cA', 1),
  );
  // In a DCAP quote: a "PCK" certified by a genuine PCK's key.
  const i = await intelShaped();
  const roots = [trustAnchor('test root', der(i.root.cert))];
  const collateral = await intelCollateral(i);
  const genuine = await sgxQuote(i.pck, [i.pck, i.pckCa, i.root]);
  assert.equal((await verifyDcapQuote(genuine, { collateral, now: DCAP_NOW, roots })).tee, 'sgx');
  const forged = await makePck(i.pck, '0f', 'CN=Forged PCK Certificate, O=Cloister Test');
  await assert.rejects(
    verifyDcapQuote(await sgxQuote(forged, [forged, i.pck, i.pckCa, i.root]), {
      collateral,
      now: DCAP_NOW,
      roots,
    }),
    refused('basicConstraints.cA', 1),
  );
});

test('a CRL issuer whose keyUsage lacks cRLSign is refused; one without keyUsage is not', async () => {
  const h = await hierarchy({ inter: { keyUsage: KU.keyCertSign }, leaf: { serial: '05' } });
  const crl = await makeCrl(h.inter);
  await assert.rejects(
    verifyChain(certs(h.leaf, h.inter), opts(h.root, { crls: [crl] })),
    refused('keyUsage.cRLSign'),
  );
  await assert.rejects(
    checkCrl(crl, h.inter.cert, h.leaf.cert, NOW, 'test'),
    refused('keyUsage.cRLSign'),
  );
  // Without the CRL the chain verifies: only signing the CRL was not allowed.
  await verifyChain(certs(h.leaf, h.inter), opts(h.root));
  const open = await hierarchy({ inter: { keyUsage: null }, leaf: { serial: '05' } });
  await assert.rejects(
    verifyChain(
      certs(open.leaf, open.inter),
      opts(open.root, { crls: [await makeCrl(open.inter, { revoke: ['05'] })] }),
    ),
    hasCode('CHAIN_REVOKED', 'CHAIN'),
  );
});

test('DCAP: a PCK CRL signed by a PCK CA without cRLSign is refused', async () => {
  const i = await intelShaped();
  const roots = [trustAnchor('test root', der(i.root.cert))];
  const quote = await sgxQuote(i.pck, [i.pck, i.pckCa, i.root]);
  const pckCa = await makeCert(i.root, i.pckCa.cert.subject, {
    ...CA,
    basicConstraints: { ca: true, pathLen: 0 },
    keyUsage: KU.keyCertSign,
    keys: i.pckCa.keys,
    serial: '1b',
  });
  const run = (o: Parameters<typeof intelCollateral>[1]) =>
    intelCollateral(i, o).then((collateral) =>
      verifyDcapQuote(quote, { collateral, now: DCAP_NOW, roots }),
    );
  // The same CRL, with an issuer chain whose PCK CA (same name and key) may not sign CRLs.
  const pem = [pckCa, i.root].map((c) => c.cert.toString('pem')).join('\n');
  await assert.rejects(run({ pck_crl_issuer_chain: pem }), refused('keyUsage.cRLSign'));
  await run({});
});

test('a critical extension that is not processed refuses the certificate, wherever it is', async () => {
  const oid = '1.3.6.1.4.1.55555.1';
  const NULL = Uint8Array.of(0x05, 0x00);
  const at = (where: 'leaf' | 'inter', critical: boolean) => {
    const o = { extensions: [[oid, NULL, critical] as const] };
    return hierarchy(where === 'leaf' ? { leaf: o } : { inter: o });
  };
  for (const where of ['leaf', 'inter'] as const) {
    const critical = await at(where, true);
    await assert.rejects(
      verifyChain(certs(critical.leaf, critical.inter), opts(critical.root)),
      (e: unknown) => {
        hasCode('CHAIN_CRITICAL_EXTENSION', 'CHAIN')(e);
        assert.equal((e as CloisterError).details?.['extension'], oid);
        assert.equal((e as CloisterError).details?.['position'], where === 'leaf' ? 0 : 1);
        return true;
      },
      where,
    );
    // Not critical, it is ignored.
    const plain = await at(where, false);
    await verifyChain(certs(plain.leaf, plain.inter), opts(plain.root));
  }
});

test('the real vendor CAs carry what their role needs (AMD ASK keyUsage as AMD encodes it)', () => {
  const intel = certInfo(INTEL_SGX_ROOT_CA_DER, 'Intel SGX Root CA');
  assert.deepEqual(intel.basicConstraints, { ca: true, pathLen: 1 });
  assert.equal(intel.keyUsage, KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign);
  for (const p of Object.values(SNP_ROOTS)) {
    const ark = certInfo(new Uint8Array(p.ark.certificate.rawData), `ARK ${p.product}`);
    assert.deepEqual(ark.basicConstraints, { ca: true, pathLen: undefined });
    assert.equal(ark.keyUsage, KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign);
    for (const c of [p.ask, p.asvk]) {
      const info = certInfo(new Uint8Array(c.rawData), c.subject);
      assert.deepEqual(info.basicConstraints, { ca: true, pathLen: 0 });
      // `03 02 01 04`: keyCertSign with one unused bit (DER's named-bit rule would give two).
      assert.equal(info.keyUsage, KEY_USAGE.keyCertSign);
      assert.deepEqual([...(info.extensions.get('2.5.29.15') ?? [])], [3, 2, 1, 4]);
    }
  }
});

// CRL extensions (RFC 5280 sections 5.2 and 5.3).

const OID_CRL_NUMBER = '2.5.29.20';
const OID_REASON_CODE = '2.5.29.21';
const OID_DELTA_CRL_INDICATOR = '2.5.29.27';
const OID_ISSUING_DISTRIBUTION_POINT = '2.5.29.28';
const OID_CERTIFICATE_ISSUER = '2.5.29.29';
const OID_PRIVATE = '1.3.6.1.4.1.55555.2';
/** IssuingDistributionPoint with onlyContainsUserCerts TRUE: a partial CRL (end entities only). */
const ONLY_USER_CERTS = seq(tlv(0x81, Uint8Array.of(0xff)));
const INTEGER_1 = Uint8Array.of(0x02, 0x01, 0x01);
const KEY_COMPROMISE = Uint8Array.of(0x0a, 0x01, 0x01);
/** GeneralNames with one directoryName: what a certificateIssuer entry extension holds. */
const directoryName = (name: string): Uint8Array =>
  seq(tlv(0xa4, new Uint8Array(new Name(name).toArrayBuffer())));

/** COLLATERAL_CRL_CRITICAL naming `extension`, in the CRL itself or in one of its entries. */
const unusableCrl =
  (extension: string, scope: 'crl' | 'entry') =>
  (e: unknown): boolean => {
    hasCode('COLLATERAL_CRL_CRITICAL', 'COLLATERAL')(e);
    const d = (e as CloisterError).details ?? {};
    assert.equal(d['extension'], extension);
    assert.equal(d['scope'], scope);
    assert.equal(typeof d['crlIssuer'], 'string');
    return true;
  };

test('a CRL with a critical extension it does not process is unusable (a partial or delta CRL); non-critical, it applies', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const chain = certs(h.leaf, h.inter);
  const other = await makeRoot('CN=Not the issuer, O=Cloister Test');
  for (const [oid, value] of [
    [OID_ISSUING_DISTRIBUTION_POINT, ONLY_USER_CERTS],
    [OID_DELTA_CRL_INDICATOR, INTEGER_1],
    [OID_PRIVATE, Uint8Array.of(0x05, 0x00)],
  ] as const) {
    const critical = await makeCrl(h.inter, { extensions: [[oid, value, true]] });
    await assert.rejects(
      verifyChain(chain, opts(h.root, { crls: [critical] })),
      unusableCrl(oid, 'crl'),
      oid,
    );
    await assert.rejects(
      checkCrl(critical, h.inter.cert, h.leaf.cert, NOW, 'test'),
      unusableCrl(oid, 'crl'),
      oid,
    );
    // Its signature is checked first: a forged one says so.
    const forged = await makeCrl(h.inter, {
      extensions: [[oid, value, true]],
      signer: other.keys.privateKey,
    });
    await assert.rejects(
      checkCrl(forged, h.inter.cert, h.leaf.cert, NOW, 'test'),
      hasCode('COLLATERAL_SIGNATURE_INVALID', 'COLLATERAL'),
      oid,
    );
    // Not critical, the extension is not read and the CRL is used: it passes the leaf, or
    // revokes it when it lists it.
    const plain = (revoke: string[]) =>
      makeCrl(h.inter, { revoke, extensions: [[oid, value, false]] });
    await verifyChain(chain, opts(h.root, { crls: [await plain(['7f'])] }));
    await assert.rejects(
      verifyChain(chain, opts(h.root, { crls: [await plain(['05'])] })),
      hasCode('CHAIN_REVOKED', 'CHAIN'),
      oid,
    );
  }
});

test('a CRL entry with a critical extension (an indirect CRL: certificateIssuer) makes the whole CRL unusable', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const chain = certs(h.leaf, h.inter);
  const issuer = directoryName('CN=Another CA, O=Cloister Test');
  for (const [oid, value] of [
    [OID_CERTIFICATE_ISSUER, issuer],
    [OID_REASON_CODE, KEY_COMPROMISE],
  ] as const) {
    // The entry is another certificate's: the CRL is still unusable for every certificate.
    const critical = await makeCrl(h.inter, {
      revoke: ['7f'],
      entryExtensions: [[oid, value, true]],
    });
    await assert.rejects(
      verifyChain(chain, opts(h.root, { crls: [critical] })),
      unusableCrl(oid, 'entry'),
      oid,
    );
    await assert.rejects(
      checkCrl(critical, h.inter.cert, h.leaf.cert, NOW, 'test'),
      unusableCrl(oid, 'entry'),
      oid,
    );
  }
  // Not critical: what Intel's CRLs carry (cRLNumber, a reasonCode per entry), and a
  // certificateIssuer, which is not read.
  const plain = (revoke: string[]) =>
    makeCrl(h.inter, {
      revoke,
      extensions: [[OID_CRL_NUMBER, INTEGER_1]],
      entryExtensions: [
        [OID_REASON_CODE, KEY_COMPROMISE],
        [OID_CERTIFICATE_ISSUER, issuer, false],
      ],
    });
  await verifyChain(chain, opts(h.root, { crls: [await plain(['7f'])] }));
  await assert.rejects(
    verifyChain(chain, opts(h.root, { crls: [await plain(['7f', '05'])] })),
    hasCode('CHAIN_REVOKED', 'CHAIN'),
  );
});

test('DCAP: a PCK CRL or root CA CRL with a critical extension is unusable', async () => {
  const i = await intelShaped();
  const roots = [trustAnchor('test root', der(i.root.cert))];
  const quote = await sgxQuote(i.pck, [i.pck, i.pckCa, i.root]);
  const run = async (o: Parameters<typeof intelCollateral>[1]) =>
    verifyDcapQuote(quote, { collateral: await intelCollateral(i, o), now: DCAP_NOW, roots });
  const partial = [[OID_ISSUING_DISTRIBUTION_POINT, ONLY_USER_CERTS, true]] as const;
  await assert.rejects(
    run({ pck_crl: await crlHex(i.pckCa, { extensions: partial }) }),
    unusableCrl(OID_ISSUING_DISTRIBUTION_POINT, 'crl'),
  );
  const indirect = [
    [OID_CERTIFICATE_ISSUER, directoryName('CN=Another CA, O=Cloister Test'), true],
  ] as const;
  await assert.rejects(
    run({ root_ca_crl: await crlHex(i.root, { revoke: ['7f'], entryExtensions: indirect }) }),
    unusableCrl(OID_CERTIFICATE_ISSUER, 'entry'),
  );
  // The same extensions, not critical.
  await run({
    pck_crl: await crlHex(i.pckCa, {
      extensions: [[OID_ISSUING_DISTRIBUTION_POINT, ONLY_USER_CERTS]],
    }),
    root_ca_crl: await crlHex(i.root, {
      revoke: ['7f'],
      entryExtensions: [[OID_CERTIFICATE_ISSUER, indirect[0][1]]],
    }),
  });
});

test(
  'the real Intel CRLs, and their entries, carry no critical extension',
  { skip: dir === undefined },
  () => {
    const crls: [string, Uint8Array][] = [
      ['tdx/gtdx-pckcrl-platform.der', readVector('tdx/gtdx-pckcrl-platform.der')],
      ['tdx/gtdx-rootcrl.der', readVector('tdx/gtdx-rootcrl.der')],
    ];
    for (const f of [
      'sgx/phala-sgx-v3.collateral.json',
      'tdx/phala-tdx-v4.collateral.json',
      'tdx/gtdx-v4-spr.collateral.json',
      'tdx/phala-fmspc90c06f-2026-02.collateral.json',
    ]) {
      const c = JSON.parse(readVectorText(f)) as IntelCollateralJson;
      crls.push([`${f} pck_crl`, Buffer.from(c.pck_crl, 'hex')]);
      crls.push([`${f} root_ca_crl`, Buffer.from(c.root_ca_crl, 'hex')]);
    }
    let entries = 0;
    for (const [name, d] of crls) {
      const info = crlInfo(new Uint8Array(d), name);
      assert.deepEqual(info.criticalExtensions, [], name);
      assert.deepEqual(info.criticalEntryExtensions, [], name);
      entries += info.revoked.size;
    }
    // The entries (each with a reasonCode) were read too.
    assert.ok(entries > 0);
  },
);

// A leaf's keyUsage (RFC 5280 section 4.2.1.3) where its key signs evidence or collateral.

test('a PCK, TCB Signing or sim platform certificate whose keyUsage lacks digitalSignature signs nothing', async () => {
  const i = await intelShaped();
  const roots = [trustAnchor('test root', der(i.root.cert))];
  const collateral = await intelCollateral(i);
  const quote = (pck: Ca) => sgxQuote(pck, [pck, i.pckCa, i.root]);
  const run = async (pck: Ca, c = collateral) =>
    verifyDcapQuote(await quote(pck), { collateral: c, now: DCAP_NOW, roots });
  // The PCK signs the QE report: nonRepudiation alone, or keyAgreement, is not enough, with
  // or without collateral.
  for (const [serial, keyUsage] of [
    ['0d', KU.nonRepudiation],
    ['0e', KU.keyAgreement | KU.keyEncipherment],
  ] as const) {
    const pck = await makePck(i.pckCa, serial, undefined, { keyUsage });
    await assert.rejects(run(pck), refused('keyUsage.digitalSignature', 0));
    await assert.rejects(
      verifyDcapQuote(await quote(pck), { now: DCAP_NOW, roots }),
      refused('keyUsage.digitalSignature', 0),
    );
  }
  // Without a keyUsage, nothing is asked of it.
  assert.equal((await run(await makePck(i.pckCa, '0f', undefined, { keyUsage: null }))).tee, 'sgx');
  // The TCB Signing certificate signs TCB Info and QE Identity.
  const tcbSigning = await makeCert(i.root, i.tcbSigning.cert.subject, {
    ...END_ENTITY,
    keyUsage: KU.nonRepudiation,
    keys: i.tcbSigning.keys,
    serial: '1a',
  });
  await assert.rejects(
    run(i.pck, await intelCollateral({ ...i, tcbSigning })),
    refused('keyUsage.digitalSignature', 0),
  );
  assert.equal((await run(i.pck)).tee, 'sgx');

  // The sim platform certificate signs sim reports.
  const simRoot = await makeRoot('CN=Key usage sim root, O=Cloister Test');
  const sim = async (keyUsage: number | null) => {
    const platform = await makeCert(simRoot, 'CN=Key usage sim platform, O=Cloister Test', {
      ...END_ENTITY,
      keyUsage,
    });
    const report = await createSimReport({
      platformKey: platform.keys.privateKey,
      platformCertDer: der(platform.cert),
      platformSpkiDer: new Uint8Array(platform.cert.publicKey.rawData),
      measurement: new Uint8Array(48),
      reportData: new Uint8Array(64),
    });
    return verifySimReport(report, {
      now: NOW,
      roots: [trustAnchor('sim root', der(simRoot.cert))],
      allowSimulation: true,
    });
  };
  await assert.rejects(sim(KU.keyCertSign), refused('keyUsage.digitalSignature', 0));
  await assert.rejects(sim(KU.nonRepudiation), refused('keyUsage.digitalSignature', 0));
  assert.equal((await sim(KU.digitalSignature)).tee, 'sim');
  assert.equal((await sim(null)).tee, 'sim');
});

test(
  'the real signing leaves: Intel PCK and TCB Signing have digitalSignature, AMD VCEK and VLEK no keyUsage',
  { skip: dir === undefined },
  () => {
    const intel: Uint8Array[] = [];
    for (const q of ['sgx/phala-sgx-v3', 'tdx/phala-tdx-v4', 'tdx/gtdx-v5']) {
      for (const d of parseDcapQuote(readVector(`${q}.quote.bin`)).pckChain.certificates) {
        intel.push(d);
      }
    }
    for (const f of [
      'sgx/phala-sgx-v3.collateral.json',
      'tdx/phala-tdx-v4.collateral.json',
      'tdx/phala-fmspc90c06f-2026-02.collateral.json',
    ]) {
      const c = JSON.parse(readVectorText(f)) as IntelCollateralJson;
      for (const p of parsePemCertificates(c.tcb_info_issuer_chain)) intel.push(der(p));
    }
    const leaves = intel
      .map((d) => certInfo(d, 'Intel certificate'))
      .filter((c) => /CN=Intel SGX (PCK Certificate|TCB Signing)/.test(c.subject));
    assert.ok(leaves.some((c) => c.subject.includes('PCK Certificate')));
    assert.ok(leaves.some((c) => c.subject.includes('TCB Signing')));
    for (const c of leaves) {
      assert.equal(c.keyUsage, KEY_USAGE.digitalSignature | KEY_USAGE.nonRepudiation, c.subject);
    }
    for (const f of [
      'snp/gsev-milan-v2.vcek.der',
      'snp/oak-genoa-v5.vcek.der',
      'snp/oak-turin-v5.vcek.der',
      'snp/trustee-milan-vlek-v3.vlek.der',
    ]) {
      const [c] = parseCertificates(readVector(f));
      assert.ok(c);
      assert.equal(certInfo(der(c), f).keyUsage, undefined, f);
    }
  },
);
