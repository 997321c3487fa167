/**
 * Appraisal defaults fail closed (reference-values.ts): an Intel TCB status other than UpToDate
 * is refused unless listed, and evidence that carries no TCB status at all (claims handed over
 * without the verifier's verdict) is not UpToDate either.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { appraise } from '@cloister/evidence';
import type { SgxClaims, TdxClaims } from '@cloister/evidence';

const h = (n: number, byte = 'ab'): string => byte.repeat(n);

const sgx: SgxClaims = {
  tee: 'sgx',
  reportData: h(64, '00'),
  debug: false,
  mrEnclave: h(32, '11'),
  mrSigner: h(32, '22'),
  isvProdId: 1,
  isvSvn: 3,
  attributes: h(16, '00'),
  miscSelect: h(4, '00'),
  cpuSvn: h(16, '00'),
  configId: h(64, '00'),
  configSvn: 0,
  isvExtProdId: h(16, '00'),
  isvFamilyId: h(16, '00'),
};

const tdx: TdxClaims = {
  tee: 'tdx',
  reportData: h(64, '00'),
  debug: false,
  mrTd: h(48, '11'),
  rtmrs: [h(48, '00'), h(48, '00'), h(48, '00'), h(48, '00')],
  mrSeam: h(48, '22'),
  mrSignerSeam: h(48, '00'),
  mrConfigId: h(48, '00'),
  mrOwner: h(48, '00'),
  mrOwnerConfig: h(48, '00'),
  teeTcbSvn: h(16, '00'),
  tdAttributes: h(8, '00'),
  seamAttributes: h(8, '00'),
  xfam: h(8, '00'),
};

test('Intel evidence without a TCB status is refused by default and by an explicit list', () => {
  for (const claims of [sgx, tdx]) {
    const byDefault = appraise({ claims }, { tee: claims.tee });
    assert.deepEqual(
      byDefault.failures.map((f) => [f.rule, f.code]),
      [['tcbStatus', 'TCB_STATUS_NOT_ACCEPTED']],
      claims.tee,
    );
    assert.equal(byDefault.status, 'contraindicated');
    const listed = appraise(
      { claims },
      { tee: claims.tee, acceptedTcbStatus: ['UpToDate', 'SWHardeningNeeded'] },
    );
    assert.equal(listed.failures[0]?.code, 'TCB_STATUS_NOT_ACCEPTED', claims.tee);
    // With the verifier's verdict the same claims are affirmed.
    const ok = appraise({ claims, tcbStatus: 'UpToDate' }, { tee: claims.tee });
    assert.equal(ok.failures.length, 0, claims.tee);
  }
});
