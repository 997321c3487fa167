/**
 * Fakes of the kernel and Gramine pseudo-file trees, over real temporary directories: the
 * provider under test reads and writes real files through node:fs; the fake only plays the
 * kernel's part (creating the attribute files on mkdir, producing outblob when inblob is
 * written, bumping generation).
 */
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, basename } from 'node:path';
import { nodeProviderFs } from '../src/providers/fs.js';
import type { ProviderFs } from '../src/providers/types.js';

export async function tempDir(prefix = 'cloister-agent-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** An SNP report (1184 bytes) with `reportData` at 0x50 and a recognisable filler. */
export function fakeSnpReport(reportData: Uint8Array): Uint8Array {
  const r = new Uint8Array(0x4a0).fill(0xa5);
  r[0] = 2;
  r.set(reportData, 0x50);
  return r;
}

/** A DCAP quote v4 (TDX) or v3 (SGX) skeleton with `reportData` at its place. */
export function fakeQuote(kind: 'tdx' | 'sgx', reportData: Uint8Array, version = 4): Uint8Array {
  const bodyOff = version === 5 ? 0x36 : 0x30;
  const rdOff = bodyOff + (kind === 'tdx' ? 0x208 : 0x140);
  const q = new Uint8Array(rdOff + 64 + 0x100).fill(0x5a);
  q[0] = version;
  q[1] = 0;
  q.set(reportData, rdOff);
  return q;
}

export interface FakeTsmOptions {
  /** `sev_guest`, `tdx_guest`, or anything else to test refusal. */
  provider: string;
  auxblob?: Uint8Array;
  /** Number of requests during which another writer bumps generation after our inblob write. */
  racesGeneration?: number;
  /** Number of requests during which another writer replaces inblob with other data. */
  racesInblob?: number;
}

export interface FakeTsm {
  root: string;
  fs: ProviderFs;
  /** Directories created (and whether they were removed). */
  created: string[];
  removed: string[];
  inblobWrites: number;
}

export async function fakeTsm(opts: FakeTsmOptions): Promise<FakeTsm> {
  const root = await tempDir('cloister-tsm-');
  const state: FakeTsm = { root, fs: nodeProviderFs, created: [], removed: [], inblobWrites: 0 };
  let racesGen = opts.racesGeneration ?? 0;
  let racesIn = opts.racesInblob ?? 0;
  const bump = async (dir: string): Promise<void> => {
    const g = Number((await readFile(join(dir, 'generation'), 'utf8')).trim());
    await writeFile(join(dir, 'generation'), `${g + 1}\n`);
  };
  state.fs = {
    readFile: (p) => nodeProviderFs.readFile(p),
    async mkdir(p) {
      await nodeProviderFs.mkdir(p);
      state.created.push(basename(p));
      await writeFile(join(p, 'provider'), `${opts.provider}\n`);
      await writeFile(join(p, 'generation'), '0\n');
      if (opts.provider === 'sev_guest') await writeFile(join(p, 'auxblob'), opts.auxblob ?? '');
    },
    async rmdir(p) {
      state.removed.push(basename(p));
      await rm(p, { recursive: true });
    },
    async writeFile(p, data) {
      await nodeProviderFs.writeFile(p, data);
      const dir = join(p, '..');
      await bump(dir);
      if (basename(p) !== 'inblob') return;
      state.inblobWrites++;
      let rd = new Uint8Array(64);
      rd.set(data.subarray(0, 64));
      if (racesIn > 0) {
        racesIn--;
        rd = new Uint8Array(64).fill(0xee);
      }
      const out = opts.provider === 'sev_guest' ? fakeSnpReport(rd) : fakeQuote('tdx', rd);
      await writeFile(join(dir, 'outblob'), out);
      if (racesGen > 0) {
        racesGen--;
        await bump(dir);
      }
    },
  };
  return state;
}

export interface FakeGramine {
  root: string;
  fs: ProviderFs;
}

export async function fakeGramine(type: string): Promise<FakeGramine> {
  const root = await tempDir('cloister-gramine-');
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'attestation_type'), `${type}\n`);
  return {
    root,
    fs: {
      ...nodeProviderFs,
      async writeFile(p, data) {
        await nodeProviderFs.writeFile(p, data);
        if (basename(p) === 'user_report_data') {
          await writeFile(join(root, 'quote'), fakeQuote('sgx', data, 3));
        }
      },
    },
  };
}
