import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import {
  exportSimHardware,
  generateSimHardware,
  parseSimReport,
  simMeasurement,
  toHex,
} from '@cloister/evidence';
import type { Manifest } from '@cloister/protocol';
import { createFilesRoot, expandFilesToken, mapPath, writeFiles } from '../src/files.js';
import { exitStatus, resolveExecutable } from '../src/launch.js';
import { meshRoutes, parsePeers } from '../src/mesh/routes.js';
import { programEnv } from '../src/env.js';
import { simProgramMeasurement, simProvider } from '../src/providers/sim.js';
import { reportDataOf } from '../src/providers/report-data.js';
import { wireEvidence } from '../src/activate.js';

test('mapPath maps absolute manifest paths under the root and refuses escapes', () => {
  assert.equal(mapPath('/r', '/etc/app/x.conf'), '/r/etc/app/x.conf');
  assert.equal(mapPath('/', '/etc/x'), '/etc/x');
  for (const bad of [
    '',
    'rel/x',
    '/../x',
    '/a/../../x',
    '/a/./b',
    '/',
    '//',
    '/a\0b',
    '/a\\..\\b',
  ]) {
    assert.throws(() => mapPath('/r', bad), { code: 'AGENT_PATH_ESCAPE' }, JSON.stringify(bad));
  }
});

test('property: mapPath never returns a path outside the root', () => {
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom('a', '..', '.', '', 'b c', '\0', '\\', '/', '%2e%2e'), {
        maxLength: 6,
      }),
      (parts) => {
        const p = parts.join('/');
        try {
          const out = mapPath('/root/x', p);
          assert.ok(out.startsWith('/root/x/'), out);
        } catch (e) {
          assert.ok(isCloisterError(e));
          assert.equal(e.code, 'AGENT_PATH_ESCAPE');
        }
      },
    ),
    { numRuns: 2000, seed: 3 },
  );
});

test('writeFiles writes 0600 files atomically and writes nothing when one path is bad', async () => {
  const base = await mkdtemp(join(tmpdir(), 'cloister-files-'));
  const root = await createFilesRoot(base);
  assert.equal(((await stat(root)).mode & 0o777).toString(8), '700');
  await assert.rejects(writeFiles(root, { '/ok': 'x', '/a/../../../evil': 'y' }), {
    code: 'AGENT_PATH_ESCAPE',
  });
  assert.deepEqual(await readdir(root), []);
  // A symlink planted at the destination is replaced, never followed.
  const outside = join(base, 'outside.txt');
  await writeFile(outside, 'untouched');
  await symlink(outside, join(root, 'link'));
  await writeFiles(root, { '/link': 'secret', '/d/e/f.bin': new Uint8Array([0, 255]) });
  assert.equal(await readFile(outside, 'utf8'), 'untouched');
  assert.equal(await readFile(join(root, 'link'), 'utf8'), 'secret');
  assert.equal(((await stat(join(root, 'd/e/f.bin'))).mode & 0o777).toString(8), '600');
  assert.deepEqual(await readdir(join(root, 'd/e')), ['f.bin']);
  await assert.rejects(createFilesRoot(join(base, 'no-such-shm')), {
    code: 'AGENT_FILES_WRITE_FAILED',
  });
  await rm(base, { recursive: true });
});

test('program environment: loader variables from the host are dropped, the bundle wins', () => {
  const env = programEnv(
    {
      PATH: '/bin',
      LD_PRELOAD: 'x',
      NODE_OPTIONS: '--require x',
      CLOISTER_FILES: '/fake',
      A: 'host',
    },
    { A: 'bundle', B: '${CLOISTER_FILES}/b' },
    '/dev/shm/c1',
  );
  assert.deepEqual(env, {
    PATH: '/bin',
    A: 'bundle',
    B: '/dev/shm/c1/b',
    CLOISTER_FILES: '/dev/shm/c1',
  });
  assert.equal(expandFilesToken('x${CLOISTER_FILES}y${CLOISTER_FILES}', '/r'), 'x/ry/r');
});

test('exit status and executable resolution', async () => {
  assert.equal(exitStatus(0, null), 0);
  assert.equal(exitStatus(42, null), 42);
  assert.equal(exitStatus(null, 'SIGTERM'), 143);
  assert.equal(exitStatus(null, 'SIGKILL'), 137);
  assert.match(resolveExecutable('sh'), /\/sh$/);
  assert.throws(() => resolveExecutable('no-such-program-xyz'), { code: 'AGENT_SPAWN_FAILED' });
  const dir = await mkdtemp(join(tmpdir(), 'cloister-exe-'));
  await writeFile(join(dir, 'data.txt'), 'not a program', { mode: 0o644 });
  assert.throws(() => resolveExecutable(join(dir, 'data.txt')), { code: 'AGENT_SPAWN_FAILED' });
  assert.throws(() => resolveExecutable(dir), { code: 'AGENT_SPAWN_FAILED' });
  await rm(dir, { recursive: true });
});

test('peer map parsing', () => {
  assert.deepEqual(parsePeers(['a=127.0.0.1:9001,b=backend.svc', 'c=[::1]:7']), {
    a: { host: '127.0.0.1', port: 9001 },
    b: { host: 'backend.svc' },
    c: { host: '::1', port: 7 },
  });
  for (const bad of ['a', '=h', 'a=h:0', 'a=h:99999', 'a=h/x', '1a=h']) {
    assert.throws(() => parsePeers([bad]), { code: 'AGENT_USAGE' }, bad);
  }
});

test('mesh routes: ingress admits exactly the workloads whose egress names it', () => {
  const m: Manifest = {
    version: 1,
    trustDomain: 'shop.test',
    packages: { p: { tee: 'sim', measurement: '00'.repeat(48) } },
    workloads: {
      api: {
        package: 'p',
        mesh: {
          ingress: [
            { port: 8443, to: 8080 },
            { port: 9443, to: 9090 },
          ],
        },
      },
      web: {
        package: 'p',
        mesh: { egress: [{ listen: '127.0.0.1:9000', workload: 'api', port: 8443 }] },
      },
      batch: {
        package: 'p',
        mesh: { egress: [{ listen: '127.0.0.1:9001', workload: 'api', port: 9443 }] },
      },
      other: { package: 'p' },
    },
  };
  const api = meshRoutes(m, 'api');
  assert.deepEqual(api.ingress, [
    { port: 8443, to: 8080, allow: ['web'] },
    { port: 9443, to: 9090, allow: ['batch'] },
  ]);
  assert.deepEqual(meshRoutes(m, 'web').egress, [
    { listen: '127.0.0.1:9000', workload: 'api', host: 'api', port: 8443 },
  ]);
  assert.deepEqual(meshRoutes(m, 'web', { api: { host: '127.0.0.1', port: 18443 } }).egress, [
    { listen: '127.0.0.1:9000', workload: 'api', host: '127.0.0.1', port: 18443 },
  ]);
  assert.deepEqual(meshRoutes(m, 'other'), { ingress: [], egress: [] });
  assert.throws(() => meshRoutes(m, 'nope'), { code: 'AGENT_MESH_CONFIG_INVALID' });
});

test('sim measurement of a program path: streamed, equal to the bytes form', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cloister-sim-measure-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // Sizes around the 1 MiB read chunk, and an empty file.
  for (const size of [0, 1, 1024 * 1024 - 1, 1024 * 1024, 2 * 1024 * 1024 + 5]) {
    const file = join(dir, `exe-${size}`);
    const bytes = new Uint8Array(size).map((_, i) => (i * 31 + size) & 0xff);
    await writeFile(file, bytes);
    const args = ['--port', String(size)];
    assert.equal(
      toHex(await simProgramMeasurement(file, args)),
      toHex(await simMeasurement(bytes, args)),
      `size ${size}`,
    );
  }
  // Node.js (~100 MB) measured by path leaves no copy of itself behind.
  const before = process.memoryUsage().external;
  await simProgramMeasurement(process.execPath, []);
  const grew = process.memoryUsage().external - before;
  assert.ok(grew < 16 * 1024 * 1024, `external memory grew by ${grew}`);
});

test('sim provider: an unreadable program is AGENT_SPAWN_FAILED, measured once it is there', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cloister-sim-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const files = await exportSimHardware(await generateSimHardware());
  for (const [name, text] of Object.entries(files)) {
    if (name !== 'root.key.jwk') await writeFile(join(dir, name), text);
  }
  const exe = join(dir, 'app');
  const p = simProvider({ dir, executable: exe, args: ['x'] });
  const rd = new Uint8Array(64).fill(3);
  await assert.rejects(p.getEvidence(rd), { code: 'AGENT_SPAWN_FAILED' });
  const bytes = new Uint8Array([1, 2, 3, 4]);
  await writeFile(exe, bytes);
  const r = parseSimReport((await p.getEvidence(rd)).data);
  assert.equal(toHex(r.measurement), toHex(await simMeasurement(bytes, ['x'])));
  // Measured once, like a launch digest: a later change of the file is not seen.
  await writeFile(exe, new Uint8Array([9]));
  const again = parseSimReport((await p.getEvidence(rd)).data);
  assert.equal(toHex(again.measurement), toHex(r.measurement));
});

test('sim provider: a signed report over the report data with the program measurement', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cloister-sim-'));
  const hw = await generateSimHardware();
  const files = await exportSimHardware(hw);
  for (const [name, text] of Object.entries(files)) {
    if (name !== 'root.key.jwk') await writeFile(join(dir, name), text);
  }
  const exe = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
  const p = simProvider({ dir, executable: exe, args: ['--port', '80'] });
  const rd = new Uint8Array(64).fill(9);
  const ev = await p.getEvidence(rd);
  assert.equal(ev.type, 'sim');
  const r = parseSimReport(ev.data);
  assert.equal(toHex(r.measurement), toHex(await simMeasurement(exe, ['--port', '80'])));
  assert.deepEqual(new Uint8Array(r.reportData), rd);
  await assert.rejects(p.getEvidence(new Uint8Array(63)), { code: 'AGENT_USAGE' });
  await writeFile(join(dir, 'platform.key.jwk'), '{"kty":"EC"}');
  await assert.rejects(simProvider({ dir, executable: exe, args: [] }).getEvidence(rd), {
    code: 'AGENT_TEE_UNAVAILABLE',
  });
  await mkdir(join(dir, 'x'));
  await rm(dir, { recursive: true });
});

test('report data offsets and wire evidence', () => {
  const q = new Uint8Array(0x300);
  q[0] = 5;
  q.fill(7, 0x36 + 0x208, 0x36 + 0x208 + 64);
  assert.deepEqual(reportDataOf('tdx', q), new Uint8Array(64).fill(7));
  q[0] = 9;
  assert.throws(() => reportDataOf('tdx', q), { code: 'AGENT_TEE_UNSUPPORTED' });
  assert.throws(() => reportDataOf('sev-snp', new Uint8Array(0x60)), {
    code: 'AGENT_TEE_MALFORMED',
  });
  assert.throws(() => reportDataOf('sgx', new Uint8Array(1)), { code: 'AGENT_TEE_MALFORMED' });
  const w = wireEvidence({
    type: 'sev-snp',
    data: new Uint8Array([1]),
    certs: { ark: new Uint8Array([3]), vlek: new Uint8Array([2]), ask: new Uint8Array([4]) },
  });
  assert.deepEqual(w, { type: 'sev-snp', data: 'AQ', certs: ['Ag', 'BA', 'Aw'] });
  assert.deepEqual(
    wireEvidence({ type: 'sev-snp', data: new Uint8Array([1]), aux: new Uint8Array([5]) }),
    {
      type: 'sev-snp',
      data: 'AQ',
      aux: 'BQ',
    },
  );
});
