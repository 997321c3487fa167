/**
 * What a certificate's extensions allow it to sign (RFC 5280 section 6.1.4 (k), (l), (m), (n),
 * (o), section 6.3.3 (f)), enforced by the shared path builder (src/pki/path.ts): a certificate
 * that issues another must be a CA (basicConstraints cA TRUE) with keyCertSign when it has a
 * keyUsage, within its pathLenConstraint; a CRL issuer with a keyUsage must have cRLSign; no
 * certificate on a path may carry a critical extension the verifier does not process. Synthetic
 * hierarchies through the public `verifyChain` / `checkCrl` and the DCAP verifier, and the real
 * vendor CAs, which must all pass.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CloisterError } from '@cloister/errors';
import { checkCrl, SNP_ROOTS, trustAnchor, verifyChain, verifyDcapQuote } from '@cloister/evidence';
import type { ChainOptions, Certificate } from '@cloister/evidence';
import { hasCode } from '@cloister/testkit';
import { INTEL_SGX_ROOT_CA_DER } from '../src/dcap/intel-root.js';
import { KEY_USAGE } from '../src/pki/ca-extensions.js';
import { certInfo } from '../src/pki/cert-cache.js';
import { DCAP_NOW, intelCollateral, intelShaped, makePck, sgxQuote } from './dcap-fixtures.js';
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
  type Ca,
} from './pki-fixtures.js';

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
