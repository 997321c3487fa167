import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hasCode, readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { isCloisterError } from '@cloister/errors';
import { offlineCollateral, toHex, verifySnpReport } from '@cloister/evidence';
import type { IntelCollateralJson } from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

const MILAN_CHIP =
  '3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d';

test(
  'Intel collateral is keyed by TEE, FMSPC and PCK CA read from its content',
  { skip },
  async () => {
    const sgxText = readVectorText('sgx/phala-sgx-v3.collateral.json');
    const tdx = JSON.parse(
      readVectorText('tdx/phala-tdx-v4.collateral.json'),
    ) as IntelCollateralJson;
    const src = offlineCollateral({ intel: [sgxText, tdx] });
    const sgx = await src.intel({ tee: 'sgx', fmspc: '00A067110000', ca: 'processor' });
    assert.equal(sgx.tcb_info, (JSON.parse(sgxText) as IntelCollateralJson).tcb_info);
    const t = await src.intel({ tee: 'tdx', fmspc: 'b0c06f000000', ca: 'platform' });
    assert.deepEqual(t, tdx);
    // Wrong CA, wrong TEE, unknown FMSPC: missing, never another platform's collateral.
    await assert.rejects(
      src.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'platform' }),
      hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
    );
    await assert.rejects(
      src.intel({ tee: 'tdx', fmspc: '00a067110000', ca: 'processor' }),
      hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
    );
    await assert.rejects(
      src.intel({ tee: 'sgx', fmspc: '000000000000', ca: 'processor' }),
      hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
    );
  },
);

test('malformed Intel collateral is refused when the bundle is built', () => {
  assert.throws(
    () => offlineCollateral({ intel: ['{"tcb_info":'] }),
    (e: unknown) => isCloisterError(e),
  );
  assert.throws(
    () => offlineCollateral({ intel: ['{}'] }),
    (e: unknown) => isCloisterError(e),
  );
});

test('AMD entries are keyed by product, hwID and SPLs from the certificate', { skip }, async () => {
  const src = offlineCollateral({
    snp: [
      {
        cert: readVector('snp/gsev-milan-v2.vcek.der'),
        chain: readVector('snp/amd-ask-ark-milan-vcek.pem'),
      },
      { cert: readVector('snp/oak-turin-v5.vcek.der') },
      { cert: readVector('snp/trustee-milan-vlek-v3.vlek.der') },
      { cert: readVector('snp/teekit-gcp-milan-v5.vcek.pem') },
    ],
  });
  const milan = await src.snp({
    product: 'Milan',
    signingKey: 'vcek',
    hwid: MILAN_CHIP,
    reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
  });
  assert.ok(milan.endorsementKeyCert);
  assert.equal(toHex(milan.endorsementKeyCert), toHex(readVector('snp/gsev-milan-v2.vcek.der')));
  assert.equal(milan.chain?.length, 2);
  const res = await verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
    now: new Date('2025-01-01T00:00:00Z'),
    collateral: milan,
  });
  assert.equal(res.claims.chipId, MILAN_CHIP);

  // Turin: the report's 64-byte chip_id finds the 8-byte hwID.
  const turin = await src.snp({
    product: 'Turin',
    signingKey: 'vcek',
    hwid: '3b42092f69c656d3' + '00'.repeat(56),
    reportedTcb: { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 },
  });
  assert.ok(turin.endorsementKeyCert);

  // VLEK: found by product and TCB, whatever the (masked) chip ID.
  const vlek = await src.snp({
    product: 'Milan',
    signingKey: 'vlek',
    hwid: '00'.repeat(64),
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 217 },
  });
  await verifySnpReport(readVector('snp/trustee-milan-vlek-v3.report.bin'), {
    now: new Date('2025-06-01T00:00:00Z'),
    collateral: vlek,
  });

  // Another TCB of the same chip (a newer microcode) is not served the old VCEK.
  await assert.rejects(
    src.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 69 },
    }),
    hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
  );
  // The same chip and TCB as a VLEK query: a VCEK is not a VLEK.
  await assert.rejects(
    src.snp({
      product: 'Milan',
      signingKey: 'vlek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    }),
    hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
  );
  await assert.rejects(
    src.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: 'zz',
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    }),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
  await assert.rejects(
    src.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' }),
    hasCode('COLLATERAL_MISSING'),
  );
});

test(
  'a certificate that is not a VCEK or VLEK is refused when the bundle is built',
  { skip },
  () => {
    assert.throws(
      () => offlineCollateral({ snp: [{ cert: readVector('snp/amd-ask-ark-milan-vcek.pem') }] }),
      hasCode('CHAIN_BAD_EXTENSION'),
    );
    assert.throws(
      () => offlineCollateral({ snp: [{ cert: new Uint8Array([1, 2, 3]) }] }),
      (e: unknown) => isCloisterError(e),
    );
  },
);

test(
  'verifySnpReport asks a CollateralSource for the VCEK when none is given',
  { skip },
  async () => {
    const src = offlineCollateral({
      snp: [
        { cert: readVector('snp/gsev-milan-v2.vcek.der') },
        { cert: readVector('snp/oak-turin-v5.vcek.der') },
        { cert: readVector('snp/oak-genoa-v5.vcek.der') },
      ],
    });
    const now = new Date('2026-01-01T00:00:00Z');
    const turin = await verifySnpReport(readVector('snp/oak-turin-v5.report.bin'), {
      now,
      source: src,
    });
    assert.equal(turin.product, 'Turin');
    const genoa = await verifySnpReport(readVector('snp/oak-genoa-v5.report.bin'), {
      now,
      source: src,
    });
    assert.equal(genoa.product, 'Genoa');
    // A v2 report has no CPUID: the lookup needs the product from the caller.
    const v2 = readVector('snp/gsev-milan-v2.report.bin');
    await assert.rejects(
      verifySnpReport(v2, { now: new Date('2025-01-01T00:00:00Z'), source: src }),
      hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
    );
    const milan = await verifySnpReport(v2, {
      now: new Date('2025-01-01T00:00:00Z'),
      source: src,
      product: 'Milan',
    });
    assert.equal(milan.claims.reportedTcb.microcode, 68);
    // Nothing in the bundle for this chip: the source's COLLATERAL_MISSING comes through.
    await assert.rejects(
      verifySnpReport(readVector('snp/teekit-gcp-milan-v5.report.bin'), { now, source: src }),
      hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
    );
  },
);
