// `cloister up` end to end over real sockets: coordinator + in-process agents + real programs,
// then clients with mesh identities of their own reaching (or not) a workload's ingress.
import { strict as assert } from 'node:assert';
import { readFile, mkdir, writeFile, stat } from 'node:fs/promises';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { activate, CoordinatorClient, resolveExecutable, simProvider } from '@cloister/agent';
import type { Activation } from '@cloister/agent';
import { isCloisterError } from '@cloister/errors';
import { verifyCoordinator } from '../src/client/verify.js';
import { startUp } from '../src/up/runtime.js';
import type { InstanceResult, UpHandle } from '../src/up/runtime.js';
import { generateOwnerKey } from '../src/client/local.js';
import { cli, measure, tempDir } from './helpers.js';
import { freePort } from '@cloister/testkit';

/** An HTTP/1.0 GET over a mesh (mTLS) connection; resolves with the body, rejects if refused. */
function meshGet(port: number, id: Activation['mesh']): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({
      host: '127.0.0.1',
      port,
      key: id.keyPem,
      cert: id.chainPem,
      ca: id.rootCaPem,
      // The server's identity is its SPIFFE ID (checked by the mesh), not a host name.
      checkServerIdentity: () => undefined,
    });
    let data = '';
    s.setEncoding('utf8');
    s.on('secureConnect', () => s.write('GET / HTTP/1.0\r\nHost: web\r\n\r\n'));
    s.on('data', (d: string) => (data += d));
    s.on('error', reject);
    s.on('close', () => {
      const i = data.indexOf('\r\n\r\n');
      if (i < 0) reject(new Error(`no HTTP answer (got ${JSON.stringify(data.slice(0, 80))})`));
      else resolve(data.slice(i + 4));
    });
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
  });
}

const WEB_SCRIPT = [
  "const http = require('node:http'); const fs = require('node:fs');",
  'const root = process.env.CLOISTER_FILES;',
  'http.createServer((req, res) => res.end(JSON.stringify({',
  '  greeting: process.env.GREETING,',
  "  conf: fs.readFileSync(root + '/etc/app.conf', 'utf8'),",
  '  args: process.argv.slice(1),',
  "  cert: fs.readFileSync(root + '/run/cloister/mesh/cert.pem', 'utf8').includes('BEGIN CERTIFICATE'),",
  "}))).listen(Number(process.env.APP_PORT), '127.0.0.1');",
].join('\n');

describe('cloister up', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let up: UpHandle;
  let results: InstanceResult[] | undefined;
  let ports: { ingress: number; app: number; egress: number };
  const probeExe = new TextEncoder().encode('probe program');
  const intruderExe = new TextEncoder().encode('intruder program');
  let rootCaPem: string;
  let probe: Activation | undefined;

  before(async () => {
    t = await tempDir('cloister-up-');
    ports = { ingress: await freePort(), app: await freePort(), egress: await freePort() };
    const owner = await generateOwnerKey('owner', t.dir);
    const node = new Uint8Array(await readFile(process.execPath));
    const manifest = {
      version: 1,
      trustDomain: 'up.test',
      packages: {
        web: { tee: 'sim', measurement: await measure(node, ['-e', WEB_SCRIPT]) },
        probe: { tee: 'sim', measurement: await measure(probeExe, []) },
        intruder: { tee: 'sim', measurement: await measure(intruderExe, []) },
      },
      workloads: {
        web: {
          package: 'web',
          files: { '/etc/app.conf': 'password={{ string .secrets.greeting }}\n' },
          env: { GREETING: '{{ string .secrets.greeting }}', APP_PORT: String(ports.app) },
          args: ['node', '-e', WEB_SCRIPT, 'from-manifest'],
          mesh: { ingress: [{ port: ports.ingress, to: ports.app }] },
        },
        probe: {
          package: 'probe',
          mesh: {
            egress: [{ listen: `127.0.0.1:${ports.egress}`, workload: 'web', port: ports.ingress }],
          },
        },
        intruder: { package: 'intruder' },
      },
      secrets: { greeting: { type: 'plain', userDefined: true } },
      owners: { owner: { publicKey: owner.publicKeyPem, roles: ['update', 'secrets:greeting'] } },
      policy: { allowSimulation: true },
    };
    await writeFile(join(t.dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
    await writeFile(
      join(t.dir, 'workloads.json'),
      JSON.stringify({ workloads: { web: { command: [process.execPath, '-e', WEB_SCRIPT] } } }),
    );
    await mkdir(join(t.dir, 'secrets'));
    await writeFile(join(t.dir, 'secrets', 'greeting'), 's3cret-greeting');
    up = await startUp(t.dir, {
      graceMs: 2000,
      log: (l) => (process.env['UP_TEST_LOG'] === undefined ? undefined : console.error(l)),
    });
    const v = await verifyCoordinator({
      url: up.coordinator,
      allowSimulation: true,
      simRootPem: await readFile(join(up.simRoot, 'root.crt.pem'), 'utf8'),
    });
    rootCaPem = v.rootCaPem;
  });
  after(async () => {
    results ??= await up?.stop();
    await t.cleanup();
  });

  const activateAs = (workload: string, exe: Uint8Array): Promise<Activation> =>
    activate({
      client: new CoordinatorClient({ url: up.coordinator, rootCa: rootCaPem }),
      workload,
      provider: simProvider({ dir: up.simRoot, executable: exe, args: [] }),
    });

  it('writes up.json with the coordinator and the ingress', async () => {
    const state = JSON.parse(await readFile(join(t.dir, '.cloister', 'up.json'), 'utf8')) as {
      coordinator: string;
      ingress: { address: string }[];
    };
    assert.equal(state.coordinator, up.coordinator);
    assert.deepEqual(
      state.ingress.map((i) => i.address),
      [`127.0.0.1:${ports.ingress}`],
    );
  });

  it('a matching workload activated and got its files, env, args and certificate; a pinned mesh client reaches it', async () => {
    probe = await activateAs('probe', probeExe);
    let body = '';
    for (let i = 0; i < 50; i++) {
      try {
        body = await meshGet(ports.ingress, probe.mesh);
        break;
      } catch (e) {
        if (i === 49) throw e;
        await new Promise((r) => setTimeout(r, 100)); // the program may still be starting
      }
    }
    const got = JSON.parse(body) as {
      greeting: string;
      conf: string;
      args: string[];
      cert: boolean;
    };
    assert.equal(got.greeting, 's3cret-greeting');
    assert.equal(got.conf, 'password=s3cret-greeting\n');
    assert.equal(got.args.at(-1), 'from-manifest');
    assert.equal(got.cert, true);
  });

  it('a workload the manifest does not connect to web cannot reach its ingress', async () => {
    // The ingress is up and admits the allowed peer right now, so a refusal below is the policy.
    assert.ok(probe !== undefined);
    assert.match(await meshGet(ports.ingress, probe.mesh), /s3cret-greeting/);
    const intruder = await activateAs('intruder', intruderExe);
    await assert.rejects(meshGet(ports.ingress, intruder.mesh));
    assert.match(await meshGet(ports.ingress, probe.mesh), /s3cret-greeting/);
  });

  it('a program whose measurement is not in the manifest is refused activation', async () => {
    await assert.rejects(
      activateAs('probe', new TextEncoder().encode('tampered probe')),
      (e: unknown) => {
        assert.ok(isCloisterError(e));
        assert.equal(e.code, 'AGENT_COORDINATOR_REFUSED');
        const problem = (e.details as { problem: { status: number; code: string } }).problem;
        assert.equal(problem.status, 403);
        assert.equal(problem.code, 'COORDINATOR_APPRAISAL_FAILED');
        return true;
      },
    );
  });

  it('stop() ends the programs and the coordinator and removes up.json', async () => {
    results = await up.stop();
    assert.equal(results.length, 1);
    assert.equal(results[0]?.workload, 'web');
    assert.equal(typeof results[0]?.status, 'number');
    await assert.rejects(stat(join(t.dir, '.cloister', 'up.json')));
    const r = await cli([
      'status',
      '--coordinator',
      up.coordinator,
      '--root-ca',
      up.rootCa,
      '--json',
    ]);
    assert.equal((r.json()['error'] as { code: string }).code, 'CLIENT_COORDINATOR_UNREACHABLE');
  });
});

describe('cloister up (command)', () => {
  it('finishes with exit 0 once every one-shot workload has exited, and stops everything', async () => {
    const t = await tempDir('cloister-up-oneshot-');
    try {
      const owner = await generateOwnerKey('owner', t.dir);
      const exe = resolveExecutable('true');
      await writeFile(
        join(t.dir, 'manifest.json'),
        JSON.stringify({
          version: 1,
          trustDomain: 'job.test',
          packages: {
            p: { tee: 'sim', measurement: await measure(new Uint8Array(await readFile(exe)), []) },
          },
          workloads: { job: { package: 'p' } },
          owners: { owner: { publicKey: owner.publicKeyPem, roles: ['update'] } },
          policy: { allowSimulation: true },
        }),
      );
      await writeFile(
        join(t.dir, 'workloads.json'),
        JSON.stringify({ workloads: { job: { command: ['true'], oneShot: true, instances: 2 } } }),
      );
      const r = await cli(['up', t.dir, '--json']);
      assert.equal(r.code, 0, r.err);
      const docs = r.out.split(/\n(?=\{)/).map((x) => JSON.parse(x) as Record<string, unknown>);
      assert.equal(docs[0]?.['event'], 'ready');
      assert.equal(docs[1]?.['event'], 'stopped');
      assert.deepEqual(
        (docs[1]?.['instances'] as { status: number }[]).map((i) => i.status),
        [0, 0],
      );
      await assert.rejects(stat(join(t.dir, '.cloister', 'up.json')));
    } finally {
      await t.cleanup();
    }
  });
});

/** An up directory: a manifest with one workload `w` (a measurement nothing matches), and `runs`. */
async function writeUpDir(dir: string, runs: Record<string, unknown>): Promise<void> {
  const owner = await generateOwnerKey('owner', dir);
  await writeFile(
    join(dir, 'manifest.json'),
    JSON.stringify({
      version: 1,
      trustDomain: 'bad.test',
      packages: { p: { tee: 'sim', measurement: 'ab'.repeat(48) } },
      workloads: { w: { package: 'p' } },
      owners: { owner: { publicKey: owner.publicKeyPem, roles: ['update'] } },
      policy: { allowSimulation: true },
    }),
  );
  await writeFile(join(dir, 'workloads.json'), JSON.stringify({ workloads: runs }));
}

describe('cloister up: bad input changes nothing', () => {
  it('refuses a run-file naming a workload the manifest lacks, before starting anything', async () => {
    const t = await tempDir('cloister-up-bad-');
    try {
      await writeUpDir(t.dir, { nope: { command: ['true'] } });
      const r = await cli(['up', t.dir, '--json']);
      assert.equal(r.code, 30);
      const err = r.json()['error'] as { code: string; details: { problems: { path: string }[] } };
      assert.equal(err.code, 'UP_RUNFILE_INVALID');
      assert.equal(err.details.problems[0]?.path, '/workloads/nope');
      await assert.rejects(stat(join(t.dir, '.cloister')));
    } finally {
      await t.cleanup();
    }
  });

  it('a one-shot workload whose activation is refused makes up fail with UP_START_FAILED', async () => {
    const t = await tempDir('cloister-up-refused-');
    try {
      await writeUpDir(t.dir, { w: { command: ['true'], oneShot: true } });
      const r = await cli(['up', t.dir, '--json']);
      assert.notEqual(r.code, 0);
      assert.equal((r.json()['error'] as { code: string }).code, 'UP_START_FAILED');
      await assert.rejects(stat(join(t.dir, '.cloister', 'up.json')));
    } finally {
      await t.cleanup();
    }
  });
});
