import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { exportSimHardware, generateSimHardware, simMeasurement } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { registerAgent } from '../../cli/src/commands/agent.js';
import { reportError } from '../../cli/src/output.js';
import type { CommandContext } from '../../cli/src/main.js';
import { resolveExecutable } from '../src/launch.js';
import { createIntermediate, createRoot } from './test-pki.js';
import type { Issued } from './test-pki.js';
import { startStub } from './stub-coordinator.js';

let tmp: string;
let simDir: string;
let hw: SimHardware;
let root: Issued;
let meshCa: Issued;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-cli-agent-'));
  simDir = join(tmp, 'sim');
  await mkdir(simDir);
  hw = await generateSimHardware();
  for (const [n, t] of Object.entries(await exportSimHardware(hw)))
    await writeFile(join(simDir, n), t);
  root = await createRoot();
  meshCa = await createIntermediate(root);
});
after(() => rm(tmp, { recursive: true, force: true }));

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const ctx: CommandContext = {
    io: { out: (t) => (err += t), err: (t) => (err += t) },
    exitCode: 0,
  };
  const program = new Command('cloister').exitOverride().configureOutput({
    writeOut: () => undefined,
    writeErr: (s) => (err += s),
  });
  registerAgent(program, ctx);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return { code: ctx.exitCode, err };
  } catch (e) {
    return { code: reportError(ctx.io, e, argv.includes('--json')), err };
  }
}

test('cloister agent: usage errors exit 2', async () => {
  const base = ['agent', '--coordinator', 'https://127.0.0.1:1', '--workload', 'web'];
  assert.equal((await cli([...base, '--tee', 'sim', '--sim-dir', simDir])).code, 2);
  assert.equal((await cli([...base, '--tee', 'nope', '--', 'sh'])).code, 2);
  assert.equal((await cli([...base, '--tee', 'sim', '--init', tmp, '--', 'sh'])).code, 2);
  assert.equal((await cli([...base, '--tee', 'tsm', '--peer', 'bad', '--', 'sh'])).code, 2);
  assert.equal((await cli([...base, '--tee', 'sim', '--', 'no-such-program-xyz'])).code, 2);
  const r = await cli([...base, '--tee', 'sim', '--json', '--', 'sh']);
  assert.equal(r.code, 2); // no --sim-dir and no CLOISTER_SIM_DIR in this environment
  // --retry-for and --manifest-refresh take decimal seconds, nothing Number() would also read.
  for (const option of ['--retry-for', '--manifest-refresh'])
    for (const bad of ['', ' ', '0x10', '1e3', '-1', 'NaN']) {
      const r = await cli([...base, option, bad, '--tee', 'sim', '--sim-dir', simDir, '--', 'sh']);
      assert.equal(r.code, 2, `${option} ${JSON.stringify(bad)}`);
      assert.match(r.err, new RegExp(`${option} takes a number of seconds`));
    }
});

/** A stub coordinator for workload `web` that accepts `measurement` and delivers one file. */
function stubFor(
  measurement: Uint8Array,
  path: string,
  content: string,
): ReturnType<typeof startStub> {
  return startStub({
    manifest: {
      version: 1,
      trustDomain: 'cli.test',
      packages: { p: { tee: 'sim', measurement: '00'.repeat(48) } },
      workloads: { web: { package: 'p' } },
    },
    workload: 'web',
    meshCa,
    root,
    sim: hw,
    measurement,
    files: { [path]: new TextEncoder().encode(content) },
  });
}

test('cloister agent: exec mode passes the exit code through; --init measures the agent', async () => {
  const sh = resolveExecutable('sh');
  const measurement = await simMeasurement(new Uint8Array(await readFile(sh)), ['-c', 'exit 42']);
  const stub = await stubFor(measurement, '/conf/x', 'x=1');
  const rootCaFile = join(tmp, 'root.pem');
  await writeFile(rootCaFile, root.certPem);
  const common = [
    'agent',
    '--coordinator',
    stub.url,
    '--workload',
    'web',
    '--tee',
    'sim',
    '--sim-dir',
    simDir,
  ];
  const run = await cli([
    ...common,
    '--root-ca',
    rootCaFile,
    '--files-dir',
    join(tmp, 'files'),
    '--manifest-refresh',
    '0.5',
    '--',
    'sh',
    '-c',
    'exit 42',
  ]);
  assert.equal(run.code, 42, run.err);
  assert.equal(await readFile(join(tmp, 'files/conf/x'), 'utf8'), 'x=1');
  // Init mode measures the agent itself, which the stub does not accept: refused, exit 10.
  const init = await cli([...common, '--init', join(tmp, 'init'), '--json']);
  assert.equal(init.code, 10, init.err);
  assert.match(init.err, /AGENT_COORDINATOR_REFUSED/);
  await stub.close();
  const nodeMeasurement = await simMeasurement(
    new Uint8Array(await readFile(process.execPath)),
    [],
  );
  const stub2 = await stubFor(nodeMeasurement, '/conf/y', 'y=2');
  const init2 = await cli([
    'agent',
    '--coordinator',
    stub2.url,
    '--workload',
    'web',
    '--tee',
    'sim',
    '--sim-dir',
    simDir,
    '--init',
    join(tmp, 'init2'),
  ]);
  assert.equal(init2.code, 0, init2.err);
  assert.equal(await readFile(join(tmp, 'init2/conf/y'), 'utf8'), 'y=2');
  await stub2.close();
});
