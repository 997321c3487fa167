/**
 * Edge cases of `cloister evidence verify`: reference values and accepted TCB statuses that are
 * not what they claim to be are refused as input errors, never silently matched or turned
 * into an internal error.
 */
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
let tmp = '';

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'evidence-cli-edge-'));
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

async function reference(name: string, text: string): Promise<string> {
  const p = join(tmp, name);
  await writeFile(p, text);
  return p;
}

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
