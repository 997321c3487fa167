import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tsmProvider } from '../src/providers/tsm.js';
import { gramineProvider } from '../src/providers/gramine.js';
import { buildCertTable, SNP_CERT_GUIDS } from '../src/providers/cert-table.js';
import { fakeGramine, fakeQuote, fakeTsm } from './fake-tee.js';

const rd = (): Uint8Array => new Uint8Array(randomBytes(64));

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal((e as { code?: string }).code, code);
    return true;
  });
}

test('tsm SNP: report over our data, certificates from auxblob, report dir removed', async () => {
  const vcek = new Uint8Array(randomBytes(900));
  const ask = new Uint8Array(randomBytes(1400));
  const ark = new Uint8Array(randomBytes(1500));
  const aux = buildCertTable([
    { guid: SNP_CERT_GUIDS.ark, der: ark },
    { guid: SNP_CERT_GUIDS.vcek, der: vcek },
    { guid: SNP_CERT_GUIDS.ask, der: ask },
  ]);
  const fake = await fakeTsm({ provider: 'sev_guest', auxblob: aux });
  const data = rd();
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(data);
  assert.equal(ev.type, 'sev-snp');
  assert.equal(ev.data.length, 0x4a0);
  assert.deepEqual(ev.data.subarray(0x50, 0x90), data);
  assert.deepEqual(ev.certs?.vcek, vcek);
  assert.deepEqual(ev.certs?.ask, ask);
  assert.deepEqual(ev.certs?.ark, ark);
  assert.equal(ev.certs?.vlek, undefined);
  assert.deepEqual(ev.aux, aux);
  assert.equal(fake.created.length, 1);
  assert.deepEqual(fake.removed, fake.created);
  assert.deepEqual(await readdir(fake.root), []);
  await rm(fake.root, { recursive: true });
});

test('tsm SNP without a certificate table gives no certs', async () => {
  const fake = await fakeTsm({ provider: 'sev_guest' });
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(rd());
  assert.equal(ev.certs, undefined);
  await rm(fake.root, { recursive: true });
});

test('tsm TDX: the quote is returned as tdx evidence', async () => {
  const fake = await fakeTsm({ provider: 'tdx_guest' });
  const data = rd();
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(data);
  assert.equal(ev.type, 'tdx');
  assert.deepEqual(ev.data.subarray(0x30 + 0x208, 0x30 + 0x208 + 64), data);
  assert.equal(ev.certs, undefined);
  await rm(fake.root, { recursive: true });
});

test('tsm retries when another writer bumps generation, then succeeds', async () => {
  const fake = await fakeTsm({ provider: 'tdx_guest', racesGeneration: 2 });
  const data = rd();
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(data);
  assert.equal(fake.inblobWrites, 3);
  assert.deepEqual(ev.data.subarray(0x30 + 0x208, 0x30 + 0x208 + 64), data);
  await rm(fake.root, { recursive: true });
});

test('tsm retries when the report carries other data', async () => {
  const fake = await fakeTsm({ provider: 'sev_guest', racesInblob: 1 });
  const data = rd();
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(data);
  assert.equal(fake.inblobWrites, 2);
  assert.deepEqual(ev.data.subarray(0x50, 0x90), data);
  await rm(fake.root, { recursive: true });
});

test('tsm gives up with AGENT_TEE_RACE when the race never stops, and cleans up', async () => {
  const fake = await fakeTsm({ provider: 'sev_guest', racesGeneration: 100 });
  await rejectsCode(
    tsmProvider({ root: fake.root, fs: fake.fs, attempts: 3 }).getEvidence(rd()),
    'AGENT_TEE_RACE',
  );
  assert.equal(fake.inblobWrites, 3);
  assert.deepEqual(await readdir(fake.root), []);
  await rm(fake.root, { recursive: true });
});

test('tsm refuses an unknown provider, a missing root, bad generation and short report data', async () => {
  const fake = await fakeTsm({ provider: 'arm_cca_guest' });
  await rejectsCode(
    tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(rd()),
    'AGENT_TEE_UNSUPPORTED',
  );
  await rejectsCode(
    tsmProvider({ root: join(fake.root, 'absent', 'deeper') }).getEvidence(rd()),
    'AGENT_TEE_UNAVAILABLE',
  );
  await rejectsCode(
    tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(new Uint8Array(32)),
    'AGENT_USAGE',
  );
  const bad = await fakeTsm({ provider: 'tdx_guest' });
  const fs = {
    ...bad.fs,
    async mkdir(p: string) {
      await bad.fs.mkdir(p);
      await writeFile(join(p, 'generation'), 'x1\n');
    },
  };
  await rejectsCode(tsmProvider({ root: bad.root, fs }).getEvidence(rd()), 'AGENT_TEE_MALFORMED');
  await rm(fake.root, { recursive: true });
  await rm(bad.root, { recursive: true });
});

test('tsm refuses a malformed certificate table', async () => {
  const aux = buildCertTable([{ guid: SNP_CERT_GUIDS.vcek, der: new Uint8Array(100).fill(1) }]);
  aux[16] = 0xff; // offset far past the end
  const fake = await fakeTsm({ provider: 'sev_guest', auxblob: aux });
  await rejectsCode(
    tsmProvider({ root: fake.root, fs: fake.fs }).getEvidence(rd()),
    'AGENT_TEE_MALFORMED',
  );
  await rm(fake.root, { recursive: true });
});

test('gramine: writes user_report_data and returns the SGX quote', async () => {
  const fake = await fakeGramine('dcap');
  const data = rd();
  const ev = await gramineProvider({ root: fake.root, fs: fake.fs }).getEvidence(data);
  assert.equal(ev.type, 'sgx');
  assert.deepEqual(ev.data.subarray(0x30 + 0x140, 0x30 + 0x140 + 64), data);
  await rm(fake.root, { recursive: true });
});

test('gramine refuses epid/none, a missing device, and a quote over other data', async () => {
  const epid = await fakeGramine('epid');
  await rejectsCode(
    gramineProvider({ root: epid.root, fs: epid.fs }).getEvidence(rd()),
    'AGENT_TEE_UNSUPPORTED',
  );
  await rejectsCode(
    gramineProvider({ root: join(epid.root, 'nope') }).getEvidence(rd()),
    'AGENT_TEE_UNAVAILABLE',
  );
  const stale = await fakeGramine('dcap');
  // A device that ignores the write: the quote file holds a quote over other data.
  await writeFile(join(stale.root, 'quote'), fakeQuote('sgx', new Uint8Array(64).fill(3), 3));
  await rejectsCode(gramineProvider({ root: stale.root }).getEvidence(rd()), 'AGENT_TEE_MALFORMED');
  await writeFile(join(stale.root, 'quote'), new Uint8Array(0));
  await rejectsCode(gramineProvider({ root: stale.root }).getEvidence(rd()), 'AGENT_TEE_MALFORMED');
  await rm(epid.root, { recursive: true });
  await rm(stale.root, { recursive: true });
});

test('tsm SNP with privlevel: both writes are counted in the generation check', async () => {
  const fake = await fakeTsm({ provider: 'sev_guest' });
  const data = rd();
  const ev = await tsmProvider({ root: fake.root, fs: fake.fs, privlevel: 2 }).getEvidence(data);
  assert.deepEqual(ev.data.subarray(0x50, 0x90), data);
  assert.equal(fake.inblobWrites, 1);
  await rm(fake.root, { recursive: true });
});
