import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VerificationError } from '@cloister/errors';
import { appraise, assertAffirmed, statusOf } from '@cloister/evidence';
import type { SgxClaims, SimClaims, SnpClaims, TdxClaims } from '@cloister/evidence';

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

const tcb = { bootloader: 7, tee: 0, snp: 15, microcode: 72 };
const snp: SnpClaims = {
  tee: 'sev-snp',
  reportData: h(64, '00'),
  debug: false,
  version: 3,
  product: 'Milan',
  measurement: h(48, '33'),
  hostData: h(32, '44'),
  chipId: h(64, '55'),
  reportedTcb: tcb,
  currentTcb: tcb,
  committedTcb: tcb,
  launchTcb: tcb,
  policy: '0x30000',
  vmpl: 0,
  guestSvn: 1,
  familyId: h(16, '00'),
  imageId: h(16, '00'),
  idKeyDigest: h(48, '00'),
  authorKeyDigest: h(48, '00'),
  reportId: h(32, '00'),
  platformInfo: '0x1',
  signingKey: 'vcek',
  firmware: { major: 1, minor: 55, build: 3 },
};

test('matching SGX claims with an UpToDate TCB are affirming', () => {
  const a = appraise(
    { claims: sgx, tcbStatus: 'UpToDate' },
    { tee: 'sgx', mrsigner: h(32, '22'), productId: 1, minSvn: 3 },
  );
  assert.equal(a.status, 'affirming');
  assert.equal(a.failures.length, 0);
  assertAffirmed(a);
});

test('each SGX rule reports rule, expected and actual', () => {
  const a = appraise(
    { claims: sgx, tcbStatus: 'SWHardeningNeeded' },
    { tee: 'sgx', mrenclave: h(32, '99'), productId: 2, minSvn: 4 },
  );
  assert.equal(a.status, 'contraindicated');
  assert.deepEqual(
    a.failures.map((f) => f.rule),
    ['mrenclave', 'productId', 'minSvn', 'tcbStatus'],
  );
  assert.throws(
    () => assertAffirmed(a),
    (e: unknown) =>
      e instanceof VerificationError && e.code === 'POLICY_MISMATCH' && e.layer === 'POLICY',
  );
});

test('a TCB status other than UpToDate is refused unless accepted, and then only warns', () => {
  const refused = appraise({ claims: sgx, tcbStatus: 'OutOfDate' }, { tee: 'sgx' });
  assert.equal(refused.failures[0]?.code, 'TCB_STATUS_NOT_ACCEPTED');
  const accepted = appraise(
    { claims: sgx, tcbStatus: 'SWHardeningNeeded' },
    { tee: 'sgx', acceptedTcbStatus: ['UpToDate', 'SWHardeningNeeded'] },
  );
  assert.equal(accepted.failures.length, 0);
  assert.equal(accepted.status, 'warning');
});

test('debug is refused unless explicitly allowed', () => {
  const dbg: SnpClaims = { ...snp, debug: true };
  const a = appraise({ claims: dbg }, { tee: 'sev-snp' });
  assert.equal(a.failures[0]?.code, 'POLICY_DEBUG');
  assert.equal(a.status, 'contraindicated');
  assert.equal(appraise({ claims: dbg }, { tee: 'sev-snp', debug: true }).failures.length, 0);
});

test('SNP minimum TCB is checked component by component', () => {
  const a = appraise(
    { claims: snp },
    { tee: 'sev-snp', minTcb: { bootloader: 7, snp: 16 }, measurement: h(48, '33') },
  );
  assert.deepEqual(
    a.failures.map((f) => [f.rule, f.code]),
    [['minTcb.snp', 'TCB_BELOW_MINIMUM']],
  );
});

test('a reference for another TEE type never matches', () => {
  const a = appraise({ claims: snp }, { tee: 'sgx' });
  assert.equal(a.failures[0]?.rule, 'tee');
});

test('simulation evidence is at best a warning', () => {
  const sim: SimClaims = {
    tee: 'sim',
    reportData: h(64, '00'),
    debug: false,
    measurement: h(48, '01'),
    hostData: h(32, '00'),
    svn: 1,
    platformId: h(16, '00'),
  };
  const a = appraise({ claims: sim }, { tee: 'sim', measurement: h(48, '01') });
  assert.equal(a.failures.length, 0);
  assert.equal(a.status, 'warning');
});

test('EAR status is the worst tier among the claims made', () => {
  assert.equal(statusOf({ hardware: 2, executables: 0 }), 'affirming');
  assert.equal(statusOf({ hardware: 2, configuration: 32 }), 'warning');
  assert.equal(statusOf({ hardware: 97 }), 'contraindicated');
  assert.equal(statusOf({}), 'none');
});

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

// Fails closed: claims handed over without the verifier's verdict are not UpToDate either.
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
