import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import { offlineCollateral, verifyEvidence } from '@cloister/evidence';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';

const skip = requireVectors() === undefined;

test(
  'verifyEvidence looks Intel collateral up by the quote PCK FMSPC and CA',
  { skip },
  async () => {
    const source = offlineCollateral({
      intel: [
        readVectorText('tdx/phala-tdx-v4.collateral.json'),
        readVectorText('sgx/phala-sgx-v3.collateral.json'),
      ],
    });
    const now = new Date('2025-07-01T00:00:00Z');
    const tdx = await verifyEvidence('tdx', readVector('tdx/phala-tdx-v4.quote.bin'), {
      now,
      collateralSource: source,
    });
    assert.equal(tdx.tcbStatus, 'UpToDate');
    const sgx = await verifyEvidence('sgx', readVector('sgx/phala-sgx-v3.quote.bin'), {
      now,
      collateralSource: source,
    });
    assert.equal(sgx.tcbStatus, 'ConfigurationAndSWHardeningNeeded');
    // A source without this platform's collateral: COLLATERAL_MISSING, never a pass.
    const empty = offlineCollateral({});
    await assert.rejects(
      verifyEvidence('tdx', readVector('tdx/phala-tdx-v4.quote.bin'), {
        now,
        collateralSource: empty,
      }),
      (e: unknown) => isCloisterError(e) && e.code === 'COLLATERAL_MISSING',
    );
  },
);

test('verifyEvidence refuses an SGX quote offered as TDX evidence', { skip }, async () => {
  await assert.rejects(
    verifyEvidence('tdx', readVector('sgx/phala-sgx-v3.quote.bin'), {
      now: new Date('2025-07-01T00:00:00Z'),
      collateral: JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as never,
    }),
    (e: unknown) => isCloisterError(e) && e.code === 'POLICY_MISMATCH',
  );
});
