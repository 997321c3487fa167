import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { readVector, requireVectors } from '@cloister/testkit';
import { isCloisterError, VerificationError } from '@cloister/errors';
import {
  parseCertificates,
  parseSnpReport,
  SNP_ROOTS,
  snpProductRoots,
  toHex,
  verifySnpReport,
} from '@cloister/evidence';
import type { SnpProductRoots } from '@cloister/evidence';
import { children } from './pki-fixtures.js';
import { SNP_VECTORS } from './snp-vectors.js';
import type { SnpVector } from './snp-vectors.js';

const dir = requireVectors();
const skip = dir === undefined;

function reportOf(v: SnpVector): Uint8Array {
  const off = v.offset ?? 0;
  return readVector(v.report).subarray(off, off + 1184);
}

function hasCode(code: string, layer?: string) {
  return (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (layer !== undefined) {
      assert.ok(e instanceof VerificationError);
      assert.equal(e.layer, layer);
    }
    return true;
  };
}

function der(pemPath: string, index: number): Uint8Array {
  const c = parseCertificates(readVector(pemPath))[index];
  assert.ok(c);
  return new Uint8Array(c.rawData);
}

function rootsFrom(product: 'Milan' | 'Genoa' | 'Turin', file: string): SnpProductRoots {
  const vcek = `snp/amd-ask-ark-${file}-vcek.pem`;
  const vlek = `snp/amd-ask-ark-${file}-vlek.pem`;
  return snpProductRoots(product, { ask: der(vcek, 0), ark: der(vcek, 1), asvk: der(vlek, 0) });
}

for (const v of SNP_VECTORS) {
  test(`${v.name} verifies at ${v.at} with the stated fields`, { skip }, async () => {
    const bytes = reportOf(v);
    const res = await verifySnpReport(bytes, { now: new Date(v.at), vcek: readVector(v.cert) });
    const c = res.claims;
    assert.equal(res.product, v.product);
    assert.equal(c.product, v.product);
    assert.equal(c.tee, 'sev-snp');
    assert.equal(c.version, v.version);
    assert.equal(c.vmpl, v.vmpl);
    assert.equal(res.signingKey, v.signingKey);
    assert.equal(c.signingKey, v.signingKey);
    assert.deepEqual(c.reportedTcb, v.reportedTcb);
    if (v.policy !== undefined) assert.equal(c.policy, v.policy);
    if (v.debug !== undefined) assert.equal(c.debug, v.debug);
    if (v.platformInfo !== undefined) assert.equal(c.platformInfo, v.platformInfo);
    if (v.currentTcb !== undefined) assert.deepEqual(c.currentTcb, v.currentTcb);
    if (v.firmware !== undefined) assert.deepEqual(c.firmware, v.firmware);
    if (v.measurement !== undefined) assert.equal(c.measurement, v.measurement);
    if (v.reportData !== undefined) assert.equal(c.reportData, v.reportData);
    if (v.chipId !== undefined) assert.equal(c.chipId, v.chipId);
    // The chain ends in the pinned ARK of the product.
    assert.equal(res.chain.path.length, 3);
    assert.equal(res.chain.root, SNP_ROOTS[v.product].ark);

    const parsed = parseSnpReport(bytes);
    assert.equal(parsed.flags, v.signingKey === 'vlek' ? 4 : 0);
    assert.equal(parsed.signedRegion.length, 0x2a0);
    assert.equal(parsed.signedRegion.buffer, bytes.buffer, 'the signed region is a view');
    if (v.cpuid !== undefined) assert.deepEqual(parsed.cpuid, v.cpuid);
    else assert.equal(parsed.cpuid, undefined);
    if (v.mitVector !== undefined) {
      assert.equal(parsed.launchMitVector, v.mitVector);
      assert.equal(parsed.currentMitVector, v.mitVector);
    }
    if (v.version < 5) assert.equal(parsed.launchMitVector, undefined);
  });
}

test('the embedded ARKs have the fingerprints AMD publishes', () => {
  const fp = (p: 'Milan' | 'Genoa' | 'Turin'): string =>
    createHash('sha256').update(new Uint8Array(SNP_ROOTS[p].ark.certificate.rawData)).digest('hex');
  assert.equal(fp('Milan'), '69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd');
  assert.equal(fp('Genoa'), '4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1');
  assert.equal(fp('Turin'), '1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a');
  for (const p of ['Milan', 'Genoa', 'Turin'] as const) {
    assert.equal(SNP_ROOTS[p].ask.subject.includes(`CN=SEV-${p}`), true);
    assert.equal(SNP_ROOTS[p].asvk.subject.includes(`CN=SEV-VLEK-${p}`), true);
  }
});

test('the embedded roots equal the vectors AMD KDS served', { skip }, () => {
  for (const [p, f] of [
    ['Milan', 'milan'],
    ['Genoa', 'genoa'],
    ['Turin', 'turin'],
  ] as const) {
    const r = rootsFrom(p, f);
    assert.equal(
      toHex(new Uint8Array(r.ark.certificate.rawData)),
      toHex(new Uint8Array(SNP_ROOTS[p].ark.certificate.rawData)),
    );
    assert.equal(
      toHex(new Uint8Array(r.ask.rawData)),
      toHex(new Uint8Array(SNP_ROOTS[p].ask.rawData)),
    );
    assert.equal(
      toHex(new Uint8Array(r.asvk.rawData)),
      toHex(new Uint8Array(SNP_ROOTS[p].asvk.rawData)),
    );
  }
});

test('the Milan v2 report is a debug guest: a claim, not a failure', { skip }, async () => {
  const v = SNP_VECTORS[0] as SnpVector;
  const res = await verifySnpReport(reportOf(v), { now: new Date(v.at), vcek: readVector(v.cert) });
  assert.equal(res.claims.debug, true);
});

test('the VLEK is expired at 2026-01-01', { skip }, async () => {
  await assert.rejects(
    verifySnpReport(readVector('snp/trustee-milan-vlek-v3.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/trustee-milan-vlek-v3.vlek.der'),
    }),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
});

test('the teekit Milan v5 report fails before its VCEK notBefore', { skip }, async () => {
  await assert.rejects(
    verifySnpReport(readVector('snp/teekit-gcp-milan-v5.report.bin'), {
      now: new Date('2025-06-01T00:00:00Z'),
      vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
    }),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
  // Once cached, the chain still checks validity at every call's `now`.
  await verifySnpReport(readVector('snp/teekit-gcp-milan-v5.report.bin'), {
    now: new Date('2026-01-01T00:00:00Z'),
    vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
  });
  await assert.rejects(
    verifySnpReport(readVector('snp/teekit-gcp-milan-v5.report.bin'), {
      now: new Date('2033-01-01T00:00:00Z'),
      vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
    }),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
});

test('a report checked against another product’s roots fails on the chain', { skip }, async () => {
  const genoa = rootsFrom('Genoa', 'genoa');
  const milan = rootsFrom('Milan', 'milan');
  // Milan report, Genoa ARK/ASK posing as Milan's.
  await assert.rejects(
    verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
      now: new Date('2025-01-01T00:00:00Z'),
      vcek: readVector('snp/gsev-milan-v2.vcek.der'),
      roots: { Milan: { ...genoa, product: 'Milan' } },
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
  // Genoa report, Milan roots.
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/oak-genoa-v5.vcek.der'),
      roots: { Genoa: { ...milan, product: 'Genoa' } },
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
  // No roots for the product at all.
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-turin-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/oak-turin-v5.vcek.der'),
      roots: { Milan: milan },
    }),
    hasCode('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
  );
});

test('a VLEK report against a VCEK ASK fails on the chain', { skip }, async () => {
  const milan = rootsFrom('Milan', 'milan');
  await assert.rejects(
    verifySnpReport(readVector('snp/trustee-milan-vlek-v3.report.bin'), {
      now: new Date('2025-06-01T00:00:00Z'),
      vcek: readVector('snp/trustee-milan-vlek-v3.vlek.der'),
      roots: { Milan: { ...milan, asvk: milan.ask } },
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
});

test('a VCEK of another chip, product or TCB is refused', { skip }, async () => {
  // Milan v2 report with the teekit Milan VCEK: same chain, different hwID and SPLs.
  await assert.rejects(
    verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
    }),
    hasCode('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
  // Genoa report (CPUID says Genoa) with a Milan VCEK.
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
  // A VCEK report verified with the VLEK certificate: the key type does not match.
  await assert.rejects(
    verifySnpReport(readVector('snp/teekit-gcp-milan-v5.report.bin'), {
      now: new Date('2025-06-01T00:00:00Z'),
      vcek: readVector('snp/trustee-milan-vlek-v3.vlek.der'),
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
  // A VCEK offered for the VLEK report, with both intermediates available.
  const milan = rootsFrom('Milan', 'milan');
  await assert.rejects(
    verifySnpReport(readVector('snp/trustee-milan-vlek-v3.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: readVector('snp/teekit-gcp-milan-v5.vcek.pem'),
      collateral: { chain: [new Uint8Array(milan.ask.rawData)] },
    }),
    hasCode('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
});

test(
  'the product of a v2 report comes from the VCEK, or must agree with it',
  { skip },
  async () => {
    const report = readVector('snp/gsev-milan-v2.report.bin');
    const vcek = readVector('snp/gsev-milan-v2.vcek.der');
    const now = new Date('2025-01-01T00:00:00Z');
    assert.equal(parseSnpReport(report).product, undefined);
    assert.equal(parseSnpReport(report, { product: 'Milan' }).product, 'Milan');
    const ok = await verifySnpReport(report, { now, vcek, product: 'Milan' });
    assert.equal(ok.product, 'Milan');
    await assert.rejects(
      verifySnpReport(report, { now, vcek, product: 'Genoa' }),
      (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
    );
    // v3+: CPUID decides, and a contradicting caller is refused.
    await assert.rejects(
      verifySnpReport(readVector('snp/oak-turin-v5.report.bin'), {
        now: new Date('2026-01-01T00:00:00Z'),
        vcek: readVector('snp/oak-turin-v5.vcek.der'),
        product: 'Genoa',
      }),
      hasCode('POLICY_MISMATCH', 'POLICY'),
    );
  },
);

test('no certificate at all is an incomplete chain', { skip }, async () => {
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
    }),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      vcek: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]),
    }),
    hasCode('CERT_MALFORMED', 'PARSE'),
  );
});

test('the certificate may come from collateral, with the KDS chain', { skip }, async () => {
  const vcekPem = 'snp/amd-ask-ark-genoa-vcek.pem';
  const res = await verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
    now: new Date('2026-01-01T00:00:00Z'),
    collateral: {
      endorsementKeyCert: readVector('snp/oak-genoa-v5.vcek.der'),
      chain: [der(vcekPem, 0), der(vcekPem, 1)],
    },
  });
  assert.equal(res.product, 'Genoa');
  assert.equal(res.claims.reportedTcb.snp, 25);
});

test(
  'the report signature is checked on every call, after the chain is cached',
  { skip },
  async () => {
    const v = SNP_VECTORS[3] as SnpVector;
    const good = reportOf(v);
    await verifySnpReport(good, { now: new Date(v.at), vcek: readVector(v.cert) });
    const bad = new Uint8Array(good);
    bad[0x50] = (bad[0x50] as number) ^ 1; // report_data
    await assert.rejects(
      verifySnpReport(bad, { now: new Date(v.at), vcek: readVector(v.cert) }),
      hasCode('SIGNATURE_INVALID', 'SIGNATURE'),
    );
    const badSig = new Uint8Array(good);
    badSig[0x2a0] = (badSig[0x2a0] as number) ^ 1; // r
    await assert.rejects(
      verifySnpReport(badSig, { now: new Date(v.at), vcek: readVector(v.cert) }),
      hasCode('SIGNATURE_INVALID', 'SIGNATURE'),
    );
  },
);

test('an invalid verification time is refused', { skip }, async () => {
  await assert.rejects(
    verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now: new Date('not a date'),
      vcek: readVector('snp/oak-genoa-v5.vcek.der'),
    }),
    hasCode('POLICY_INVALID'),
  );
});

test('an altered VCEK fails the RSA-PSS signature check of its ASK', { skip }, async () => {
  const vcek = readVector('snp/gsev-milan-v2.vcek.der');
  // One bit of the serial number (inside the signed TBSCertificate), the DER still valid.
  const serial = children(children(vcek)[0] as Uint8Array)[1] as Uint8Array;
  const altered = new Uint8Array(vcek);
  const at = serial.byteOffset - vcek.byteOffset + serial.length - 1;
  altered[at] = (altered[at] as number) ^ 1;
  assert.equal(parseCertificates(altered).length, 1);
  await assert.rejects(
    verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
      now: new Date('2025-01-01T00:00:00Z'),
      vcek: altered,
    }),
    hasCode('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
  );
});

test(
  'AMD certificates beside the evidence are used only on the path: the other KDS chain or another product’s ARK change nothing',
  { skip },
  async () => {
    const report = readVector('snp/trustee-milan-vlek-v3.report.bin');
    const vlek = readVector('snp/trustee-milan-vlek-v3.vlek.der');
    const now = new Date('2025-06-01T00:00:00Z');
    const chainOf = (file: string) =>
      parseCertificates(readVector(file)).map((c) => new Uint8Array(c.rawData));
    const subjects = (r: { chain: { path: readonly { subject: string }[] } }) =>
      r.chain.path.map((c) => /CN=([^,]+)/.exec(c.subject)?.[1]);
    for (const file of ['snp/amd-ask-ark-milan-vlek.pem', 'snp/amd-ask-ark-milan-vcek.pem']) {
      const r = await verifySnpReport(report, {
        now,
        vcek: vlek,
        collateral: { chain: chainOf(file) },
      });
      assert.deepEqual(subjects(r), ['SEV-VLEK', 'SEV-VLEK-Milan', 'ARK-Milan'], file);
    }
    // Another product's ARK and ASK riding along with a complete Azure-style chain.
    const azure = SNP_VECTORS.find((v) => v.name === 'azure-hcl-milan-v2') as SnpVector;
    const r = await verifySnpReport(reportOf(azure), {
      now: new Date(azure.at),
      vcek: readVector(azure.cert),
      collateral: { chain: chainOf('snp/amd-ask-ark-genoa-vcek.pem') },
    });
    assert.deepEqual(subjects(r), ['SEV-VCEK', 'SEV-Milan', 'ARK-Milan']);
  },
);
