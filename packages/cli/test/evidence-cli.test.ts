import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { requireVectors } from '@cloister/testkit';
import { main } from '../src/main.js';

const dir = requireVectors();
const skip = dir === undefined;
const v = (p: string): string => join(dir ?? '', p);
/** `evidence verify` of the real SGX quote with its collateral, at a time it is valid. */
const sgx = (): string[] => [
  'evidence',
  'verify',
  v('sgx/phala-sgx-v3.quote.bin'),
  '--type',
  'sgx',
  '--collateral',
  v('sgx/phala-sgx-v3.collateral.json'),
  '--at',
  '2025-07-01T00:00:00Z',
  '--json',
];
let tmp = '';

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'evidence-cli-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function run(
  args: string[],
): Promise<{ code: number; out: string; json: Record<string, unknown> | undefined }> {
  let out = '';
  const code = await main(args, { out: (t) => (out += t), err: () => undefined });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(out) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { code, out, json };
}

test(
  'SGX quote: TCB status and advisories reported; refused by default, accepted when the status is allowed',
  { skip },
  async () => {
    const base = sgx();
    const refused = await run(base);
    assert.equal(refused.code, 10);
    assert.equal(refused.json?.['verdict'], 'rejected');
    assert.equal(refused.json?.['tcbStatus'], 'ConfigurationAndSWHardeningNeeded');
    assert.deepEqual(refused.json?.['advisoryIds'], ['INTEL-SA-00289', 'INTEL-SA-00615']);
    const accepted = await run([
      ...base,
      '--accept-tcb-status',
      'UpToDate,ConfigurationAndSWHardeningNeeded',
    ]);
    assert.equal(accepted.code, 0);
    const claims = accepted.json?.['claims'] as Record<string, unknown>;
    assert.equal(
      claims['mrEnclave'],
      '33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb',
    );
    assert.equal(claims['isvProdId'], 0);
  },
);

test(
  'TDX quote verifies UpToDate; after the collateral window it is rejected as expired',
  { skip },
  async () => {
    const args = [
      'evidence',
      'verify',
      v('tdx/phala-tdx-v4.quote.bin'),
      '--type',
      'tdx',
      '--collateral',
      v('tdx/phala-tdx-v4.collateral.json'),
      '--json',
    ];
    const ok = await run([...args, '--at', '2025-07-01T00:00:00Z']);
    assert.equal(ok.code, 0);
    assert.equal(ok.json?.['tcbStatus'], 'UpToDate');
    assert.equal(
      (ok.json?.['claims'] as Record<string, unknown>)['mrTd'],
      '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
    );
    const late = await run([...args, '--at', '2025-07-20T00:00:00Z']);
    assert.equal(late.code, 10);
    assert.equal((late.json?.['error'] as Record<string, unknown>)['layer'], 'COLLATERAL');
  },
);

test(
  'SNP report with its VCEK: accepted; debug report refused unless --allow-debug',
  { skip },
  async () => {
    const turin = await run([
      'evidence',
      'verify',
      v('snp/oak-turin-v5.report.bin'),
      '--type',
      'sev-snp',
      '--cert',
      v('snp/oak-turin-v5.vcek.der'),
      '--at',
      '2026-01-01T00:00:00Z',
      '--json',
    ]);
    assert.equal(turin.code, 0);
    assert.deepEqual((turin.json?.['claims'] as Record<string, unknown>)['reportedTcb'], {
      fmc: 0,
      bootloader: 1,
      tee: 0,
      snp: 2,
      microcode: 71,
    });
    const milan = [
      'evidence',
      'verify',
      v('snp/gsev-milan-v2.report.bin'),
      '--type',
      'sev-snp',
      '--cert',
      v('snp/gsev-milan-v2.vcek.der'),
      '--at',
      '2025-01-01T00:00:00Z',
      '--json',
    ];
    const refused = await run(milan);
    assert.equal(refused.code, 10);
    assert.deepEqual(
      (refused.json?.['reasons'] as { code: string }[]).map((r) => r.code),
      ['POLICY_DEBUG'],
    );
    assert.equal((await run([...milan, '--allow-debug'])).code, 0);
  },
);

test(
  'malformed evidence exits 30, a missing file exits 2, a bad flag exits 2',
  { skip },
  async () => {
    const bad = await run(['evidence', 'verify', v('SOURCES.md'), '--type', 'sev-snp', '--json']);
    assert.equal(bad.code, 30);
    assert.equal(bad.json?.['verdict'], 'malformed');
    assert.equal((await run(['evidence', 'verify', v('nope.bin'), '--type', 'sgx'])).code, 2);
    assert.equal((await run(['evidence', 'verify', v('SOURCES.md'), '--type', 'tpm'])).code, 2);
  },
);

test('several certificates beside an SNP report, DER and PEM mixed', { skip }, async () => {
  const at = ['--at', '2026-01-01T00:00:00Z', '--json'];
  const report = ['evidence', 'verify', v('snp/oak-genoa-v5.report.bin'), '--type', 'sev-snp'];
  const vcek = ['--cert', v('snp/oak-genoa-v5.vcek.der')];
  const ok = await run([...report, ...vcek, '--cert', v('snp/amd-ask-ark-genoa-vcek.pem'), ...at]);
  assert.equal(ok.code, 0, ok.out);
  // Certificates off the path to the pinned Genoa ARK (Milan's) are not trusted and change nothing.
  const extra = await run([
    ...report,
    ...vcek,
    '--cert',
    v('snp/amd-ask-ark-milan-vcek.pem'),
    ...at,
  ]);
  assert.equal(extra.code, 0, extra.out);
  assert.equal((extra.json?.['claims'] as Record<string, unknown>)['product'], 'Genoa');
  // A file that is no certificate is malformed input.
  const junk = await run([...report, ...vcek, '--cert', v('SOURCES.md'), ...at]);
  assert.equal(junk.code, 30, junk.out);
});

// Policy inputs that are not what they claim to be are input errors, never silently matched.
async function reference(name: string, text: string): Promise<string> {
  const p = join(tmp, name);
  await writeFile(p, text);
  return p;
}

const errorCode = (r: { json: Record<string, unknown> | undefined }): unknown =>
  (r.json?.['error'] as Record<string, unknown> | undefined)?.['code'];

test(
  'acceptedTcbStatus that is not a list of statuses is bad input, not a substring match',
  { skip },
  async () => {
    // As a string, "includes" would match any status it contains.
    const ref = await reference(
      'string-status.json',
      '{"tee":"sgx","acceptedTcbStatus":"UpToDate, ConfigurationAndSWHardeningNeeded"}',
    );
    const r = await run([...sgx(), '--reference', ref]);
    assert.equal(r.code, 30, r.out);
    assert.equal(errorCode(r), 'CLI_BAD_INPUT');
    const unknown = await reference(
      'unknown-status.json',
      '{"tee":"sgx","acceptedTcbStatus":["UpToDate","Revoked"]}',
    );
    const u = await run([...sgx(), '--reference', unknown]);
    assert.equal(u.code, 30, u.out);
    assert.equal(errorCode(u), 'CLI_BAD_INPUT');
  },
);

test('a reference file that is not an object naming its TEE is bad input', { skip }, async () => {
  for (const [name, text] of [
    ['null.json', 'null'],
    ['array.json', '[]'],
    ['no-tee.json', '{"mrenclave":"00"}'],
  ] as const) {
    const r = await run([...sgx(), '--reference', await reference(name, text)]);
    assert.equal(r.code, 30, `${name}: ${r.out}`);
    assert.equal(errorCode(r), 'CLI_BAD_INPUT', name);
  }
});

test('--accept-tcb-status names unknown statuses: usage error', { skip }, async () => {
  // A misspelt status would otherwise be accepted as a list entry that never matches.
  const typo = await run([
    ...sgx(),
    '--accept-tcb-status',
    'UpToDate,ConfigurationAndSWHardeningNeeded,SWHardenningNeeded',
  ]);
  assert.equal(typo.code, 2, typo.out);
  assert.equal(errorCode(typo), 'CLI_USAGE');
  // Revoked is always refused: it cannot be listed.
  const revoked = await run([...sgx(), '--accept-tcb-status', 'Revoked']);
  assert.equal(revoked.code, 2, revoked.out);
  const empty = await run([...sgx(), '--accept-tcb-status', '']);
  assert.equal(empty.code, 2, empty.out);
});
