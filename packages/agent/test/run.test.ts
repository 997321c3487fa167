import { test, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportSimHardware, generateSimHardware, simMeasurement } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import type { Manifest } from '@cloister/protocol';
import { jittered, runAgent, MESH_FILES, renewalRetryMs } from '../src/run.js';
import type { AgentLog, RunAgentOptions } from '../src/run.js';
import type { MeshEvent } from '../src/mesh/proxy.js';
import { simProvider } from '../src/providers/sim.js';
import { resolveExecutable } from '../src/launch.js';
import { createIntermediate, createRoot, issueLeaf } from './test-pki.js';
import type { Issued } from './test-pki.js';
import { renewedInstance, startStub } from './stub-coordinator.js';
import type { StubOptions } from './stub-coordinator.js';
import { freePort } from '@cloister/testkit';

const TD = 'shop.test';
const sh = resolveExecutable('sh');
// What the container's command line says; the measurement covers it (manifest args replace it).
const CLI_ARGS = ['-c', 'exit 99'];
let tmp: string;
let simDir: string;
let hw: SimHardware;
let root: Issued;
let meshCa: Issued;
let measurement: Uint8Array;

const manifest = (extra: Partial<Manifest['workloads'][string]> = {}): Manifest => ({
  version: 1,
  trustDomain: TD,
  packages: { dev: { tee: 'sim', measurement: '00'.repeat(48) } },
  workloads: { web: { package: 'dev', ...extra } },
  policy: { allowSimulation: true },
});

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-run-'));
  simDir = join(tmp, 'sim');
  hw = await generateSimHardware();
  const files = await exportSimHardware(hw);
  await (await import('node:fs/promises')).mkdir(simDir);
  for (const [name, text] of Object.entries(files)) await writeFile(join(simDir, name), text);
  root = await createRoot();
  meshCa = await createIntermediate(root);
  measurement = await simMeasurement(new Uint8Array(await readFile(sh)), CLI_ARGS);
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function stubWith(o: Partial<StubOptions> = {}) {
  const stub = await startStub({
    manifest: manifest(),
    workload: 'web',
    meshCa,
    root,
    sim: hw,
    measurement,
    ...o,
  });
  return stub;
}

async function agentOpts(
  url: string,
  extra: Partial<RunAgentOptions> = {},
): Promise<RunAgentOptions> {
  const out = await mkdtemp(join(tmp, 'case-'));
  const rest = extra;
  return {
    coordinator: url,
    workload: 'web',
    provider: simProvider({
      dir: simDir,
      executable: new Uint8Array(await readFile(sh)),
      args: CLI_ARGS,
    }),
    program: { executable: sh, argv0: 'sh', args: CLI_ARGS },
    shmDir: out,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', OUT: join(out, 'out.txt'), DIR: out },
    ...rest,
  };
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<Error> {
  let err: Error | undefined;
  await assert.rejects(p, (e: Error & { code?: string }) => {
    assert.equal(e.code, code, e.message);
    err = e;
    return true;
  });
  return err as Error;
}

test('files, env and manifest args reach the real program; its exit code is returned', async () => {
  const script = [
    'cat "$CLOISTER_FILES/etc/app/db.conf" > "$OUT"',
    'echo "|$API_KEY|$0|$1|$LD_PRELOAD|" >> "$OUT"',
    'stat -c %a "$CLOISTER_FILES" "$CLOISTER_FILES/etc/app/db.conf" >> "$OUT"',
    'cat "$CLOISTER_FILES/run/cloister/mesh/cert.pem" > "$DIR/cert.pem"',
    'cat "$CLOISTER_FILES/run/cloister/mesh/key.pem" > "$DIR/key.pem"',
    'echo "$CONF" >> "$OUT"',
    'tr "\\0" " " < /proc/$$/cmdline | cut -d" " -f1 >> "$OUT"',
    'exit 7',
  ].join('\n');
  const stub = await stubWith({
    files: { '/etc/app/db.conf': new TextEncoder().encode('password=hunter2\n') },
    env: { API_KEY: 'abc123', CONF: '${CLOISTER_FILES}/etc/app/db.conf' },
    args: ['my-app', '-c', script, 'zero', 'first-arg'],
  });
  const o = await agentOpts(stub.url);
  let filesRoot = '';
  const status = await runAgent({
    ...o,
    env: { ...o.env, LD_PRELOAD: '/tmp/evil.so' },
    onLaunched: (i) => {
      filesRoot = i.filesRoot;
    },
  });
  await stub.close();
  assert.equal(status, 7);
  const out = (await readFile(o.env?.['OUT'] as string, 'utf8')).split('\n');
  assert.equal(out[0], 'password=hunter2');
  assert.equal(out[1], '|abc123|zero|first-arg||');
  assert.equal(out[2], '700');
  assert.equal(out[3], '600');
  assert.equal(out[4], `${filesRoot}/etc/app/db.conf`);
  // argv[0] is the manifest's; the executable is the measured one.
  assert.equal(out[5], 'my-app');
  assert.ok(filesRoot.startsWith(o.shmDir as string));
  // The mesh certificate is for the key written beside it, and names the workload.
  const dir = o.env?.['DIR'] as string;
  const cert = new X509Certificate(await readFile(join(dir, 'cert.pem')));
  const key = createPrivateKey(await readFile(join(dir, 'key.pem')));
  assert.ok(cert.publicKey.equals(createPublicKey(key)));
  assert.match(cert.subjectAltName ?? '', /spiffe:\/\/shop\.test\/web/);
  // The default files root is removed when the program has exited.
  assert.equal(existsSync(filesRoot), false);
  assert.equal(stub.requests.length, 1);
});

test('SIGTERM and SIGHUP are forwarded; a killed program gives 128 + signal', async () => {
  const stub = await stubWith({
    args: [
      'app',
      '-c',
      'trap \'echo term > "$OUT"; exit 3\' TERM; touch "$DIR/ready"; while :; do sleep 0.05; done',
    ],
  });
  const o = await agentOpts(stub.url);
  const ready = join(o.env?.['DIR'] as string, 'ready');
  const running = runAgent(o);
  while (!existsSync(ready)) await new Promise((r) => setTimeout(r, 20));
  process.kill(process.pid, 'SIGTERM');
  assert.equal(await running, 3);
  assert.equal((await readFile(o.env?.['OUT'] as string, 'utf8')).trim(), 'term');
  await stub.close();

  const stub2 = await stubWith({
    args: ['app', '-c', 'touch "$DIR/ready"; while :; do sleep 0.05; done'],
  });
  const o2 = await agentOpts(stub2.url);
  const ready2 = join(o2.env?.['DIR'] as string, 'ready');
  const running2 = runAgent(o2);
  while (!existsSync(ready2)) await new Promise((r) => setTimeout(r, 20));
  process.kill(process.pid, 'SIGHUP');
  assert.equal(await running2, 128 + 1);
  await stub2.close();

  const stub3 = await stubWith({ args: ['app', '-c', 'kill -KILL $$'] });
  assert.equal(await runAgent(await agentOpts(stub3.url)), 128 + 9);
  await stub3.close();
});

test('without manifest args the command line runs; --init writes the files and exits 0', async () => {
  const stub = await stubWith({ files: { '/a/b.txt': new Uint8Array([1, 2, 3]) } });
  assert.equal(await runAgent(await agentOpts(stub.url)), 99);
  const initDir = join(tmp, 'init-dir');
  const o = await agentOpts(stub.url);
  const { program: _p, ...noProgram } = o;
  assert.equal(await runAgent({ ...noProgram, init: initDir }), 0);
  assert.deepEqual(
    new Uint8Array(await readFile(join(initDir, 'a/b.txt'))),
    new Uint8Array([1, 2, 3]),
  );
  assert.equal(((await stat(join(initDir, 'a/b.txt'))).mode & 0o777).toString(8), '600');
  assert.ok(existsSync(join(initDir, MESH_FILES.combined)));
  await stub.close();
});

test('a path escaping the files root is refused and nothing is written', async () => {
  const stub = await stubWith({
    files: {
      '/fine.txt': new Uint8Array([1]),
      '/../escape.txt': new Uint8Array([2]),
    },
  });
  const initDir = join(tmp, 'escape-init');
  const o = await agentOpts(stub.url);
  const { program: _p, ...noProgram } = o;
  await rejectsCode(runAgent({ ...noProgram, init: initDir }), 'AGENT_PATH_ESCAPE');
  assert.deepEqual(await readdir(initDir), []);
  assert.equal(existsSync(join(tmp, 'escape.txt')), false);
  // Exec mode: the default root is removed and the program never starts.
  const o2 = await agentOpts(stub.url);
  await rejectsCode(runAgent(o2), 'AGENT_PATH_ESCAPE');
  assert.deepEqual(await readdir(o2.shmDir as string), []);
  await stub.close();
});

test('a refusal by the coordinator and a wrong program are reported with codes', async () => {
  const stub = await stubWith({ refuse: { status: 403, code: 'COORDINATOR_APPRAISAL_FAILED' } });
  const e = (await rejectsCode(
    runAgent(await agentOpts(stub.url)),
    'AGENT_COORDINATOR_REFUSED',
  )) as Error & {
    details?: { problem?: { code?: string } };
  };
  assert.equal(e.details?.problem?.code, 'COORDINATOR_APPRAISAL_FAILED');
  await stub.close();
  // The stub pins the measurement of `sh -c 'exit 99'`; other arguments measure differently.
  const stub2 = await stubWith();
  const o = await agentOpts(stub2.url);
  const other = simProvider({
    dir: simDir,
    executable: new Uint8Array(await readFile(sh)),
    args: ['-c', 'exit 98'],
  });
  const e2 = (await rejectsCode(
    runAgent({ ...o, provider: other }),
    'AGENT_COORDINATOR_REFUSED',
  )) as Error & {
    details?: { problem?: { code?: string } };
  };
  assert.equal(e2.details?.problem?.code, 'MEASUREMENT');
  await rejectsCode(
    runAgent({
      ...o,
      provider: simProvider({ dir: join(tmp, 'nope'), executable: new Uint8Array(1), args: [] }),
    }),
    'AGENT_TEE_UNAVAILABLE',
  );
  await stub2.close();
});

test('coordinator TLS identity: interception is detected, with and without --root-ca', async () => {
  const evil = await createRoot('Interceptor');
  const mitm = await stubWith({ tlsRoot: evil });
  // First contact: the TLS certificate does not chain to the bundle root -> nothing written.
  const o = await agentOpts(mitm.url);
  await rejectsCode(runAgent(o), 'AGENT_COORDINATOR_IDENTITY_MISMATCH');
  assert.deepEqual(await readdir(o.shmDir as string), []);
  // With --root-ca: the handshake itself fails.
  await rejectsCode(runAgent({ ...o, rootCa: root.certPem }), 'AGENT_COORDINATOR_UNREACHABLE');
  // --root-ca names the interceptor's root: the bundle root (the real one) differs.
  await rejectsCode(
    runAgent({ ...o, rootCa: evil.certPem }),
    'AGENT_COORDINATOR_IDENTITY_MISMATCH',
  );
  await mitm.close();
  // The honest coordinator with --root-ca works.
  const ok = await stubWith();
  assert.equal(await runAgent({ ...(await agentOpts(ok.url)), rootCa: root.certPem }), 99);
  await ok.close();
  await rejectsCode(runAgent({ ...(await agentOpts('http://127.0.0.1:1')) }), 'AGENT_USAGE');
});

test('a bundle whose certificate is not for the agent key or workload is refused', async () => {
  const stub = await stubWith();
  const stranger = await issueLeaf(meshCa, [`spiffe://${TD}/web`]);
  stub.bundleOverride = (b) => ({ ...b, mesh: { ...b.mesh, cert: stranger.certPem } });
  await rejectsCode(runAgent(await agentOpts(stub.url)), 'AGENT_BUNDLE_INVALID');
  stub.bundleOverride = (b) => ({ ...b, mesh: { ...b.mesh, intermediateCa: root.certPem } });
  await rejectsCode(runAgent(await agentOpts(stub.url)), 'AGENT_BUNDLE_INVALID');
  await stub.close();
  // A certificate for another workload would let this instance impersonate it on the mesh.
  const other = await stubWith({ certWorkload: 'db' });
  await rejectsCode(runAgent(await agentOpts(other.url)), 'AGENT_BUNDLE_INVALID');
  await other.close();
});

test('a failed renewal is retried at a tenth of the lifetime left, then backs off with jitter', () => {
  const top = () => 1;
  const bottom = () => 0;
  assert.equal(renewalRetryMs(60_000, 0, top), 6_000);
  assert.equal(renewalRetryMs(5_000, 0, top), 1_000, 'at least 1 s');
  // Expired: 1 s doubling per failure up to 5 minutes, between half and all of it.
  assert.deepEqual(
    [1, 2, 3, 4, 9, 10, 1e6].map((n) => renewalRetryMs(-1, n, top)),
    [1_000, 2_000, 4_000, 8_000, 256_000, 300_000, 300_000],
  );
  assert.equal(renewalRetryMs(0, 1, bottom), 500);
  assert.equal(renewalRetryMs(-1, 10, bottom), 150_000);
  // Spread: 1,000 agents retrying their 6th attempt do not all pick the same second.
  const seconds = new Set(
    Array.from({ length: 1000 }, () => Math.floor(renewalRetryMs(-1, 6) / 1000)),
  );
  assert.ok(seconds.size >= 10, `${seconds.size} distinct seconds`);
  // The first activation's retries spread the same way.
  assert.deepEqual([jittered(4_000, bottom), jittered(4_000, top)], [2_000, 4_000]);
});

test('renewal re-attests for the same instance and swaps the mesh files', async () => {
  const stub = await stubWith({
    renewAfterMs: 200,
    args: ['app', '-c', 'while [ ! -e "$DIR/stop" ]; do sleep 0.05; done; exit 0'],
  });
  const o = await agentOpts(stub.url);
  const dir = o.env?.['DIR'] as string;
  let filesRoot = '';
  const renewedSerials: string[] = [];
  const status = await runAgent({
    ...o,
    minRenewIntervalMs: 50,
    onLaunched: (i) => {
      filesRoot = i.filesRoot;
    },
    onRenewed: (m) => {
      renewedSerials.push(m.serial);
      void (async () => {
        const pem = await readFile(join(filesRoot, MESH_FILES.chain), 'utf8');
        renewedSerials.push(new X509Certificate(pem).serialNumber);
        if (renewedSerials.length >= 4) await writeFile(join(dir, 'stop'), '');
      })();
    },
  });
  assert.equal(status, 0);
  assert.ok(stub.requests.length >= 3);
  const first = stub.requests[0];
  const second = stub.requests[1];
  assert.ok(first !== undefined && second !== undefined);
  assert.equal(renewedInstance(first), undefined);
  assert.ok(renewedInstance(second) !== undefined);
  assert.equal(renewedInstance(stub.requests[2] ?? first), renewedInstance(second));
  // The file on disk carries the renewed certificate.
  assert.equal(renewedSerials[0]?.toLowerCase(), renewedSerials[1]?.toLowerCase());
  assert.notEqual(renewedSerials[0], renewedSerials[2]);
  assert.equal(
    stub.serials.map((s) => s.toLowerCase()).includes(renewedSerials[0]?.toLowerCase() ?? ''),
    true,
  );
  await stub.close();
});

test('renewals are signed with the mesh key the coordinator made (.mesh.key)', async (t) => {
  // The stub refuses a renewal not signed by the instance's current mesh key: here the key of
  // the last bundle, never the agent's own activation key.
  const stub = await stubWith({
    renewAfterMs: 200,
    meshKeyInBundle: true,
    args: ['app', '-c', 'while [ ! -e "$DIR/stop" ]; do sleep 0.05; done; exit 0'],
  });
  t.after(() => stub.close());
  const o = await agentOpts(stub.url);
  const dir = o.env?.['DIR'] as string;
  const keys: string[] = [];
  const warnings: string[] = [];
  const stop = () => void writeFile(join(dir, 'stop'), '');
  const status = await runAgent({
    ...o,
    minRenewIntervalMs: 50,
    // A refused renewal stops the program too, so that the test fails instead of waiting.
    log: {
      info: () => undefined,
      warn: (msg) => {
        warnings.push(msg);
        stop();
      },
    },
    onRenewed: (m) => {
      keys.push(m.keyPem);
      if (keys.length === 2) stop();
    },
    // The stub has no release route.
    release: false,
  });
  assert.equal(status, 0);
  assert.deepEqual(warnings, [], 'no renewal was refused');
  assert.ok(keys.length >= 2);
  assert.notEqual(keys[0], keys[1]);
});

test('a renewal refused as COORDINATOR_NOT_FOUND is final: no more renewals, the program runs on', async () => {
  const stub = await stubWith({
    renewAfterMs: 100,
    refuseRenewal: { status: 404, code: 'COORDINATOR_NOT_FOUND' },
    args: ['app', '-c', 'while [ ! -e "$DIR/stop" ]; do sleep 0.05; done; exit 7'],
  });
  const o = await agentOpts(stub.url);
  const dir = o.env?.['DIR'] as string;
  const warnings: { msg: string; fields: Record<string, unknown> | undefined }[] = [];
  const stopped = (async () => {
    const give = Date.now() + 10_000;
    while (!warnings.some((w) => /no longer knows/.test(w.msg)) && Date.now() < give)
      await new Promise((r) => setTimeout(r, 20));
    // Long enough for a dozen renewal attempts at the 50 ms floor, had they gone on.
    await new Promise((r) => setTimeout(r, 600));
    await writeFile(join(dir, 'stop'), '');
  })();
  const status = await runAgent({
    ...o,
    minRenewIntervalMs: 50,
    log: { info: () => undefined, warn: (msg, fields) => warnings.push({ msg, fields }) },
  });
  await stopped;
  assert.equal(status, 7, "the program's own status");
  const renewals = stub.requests.filter((r) => renewedInstance(r) !== undefined);
  assert.equal(renewals.length, 1, 'one renewal, not retried');
  assert.equal(warnings.filter((w) => /no longer knows/.test(w.msg)).length, 1);
  assert.equal(warnings[0]?.fields?.['cause'], 'COORDINATOR_NOT_FOUND');
  await stub.close();
});

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const give = Date.now() + ms;
  while (!pred() && Date.now() < give) await new Promise((r) => setTimeout(r, 20));
  assert.ok(pred(), `timed out waiting for ${what}`);
}

/** `web` listens on mesh port `port` for its program on `to`; `client`'s egress reaches it. */
function meshManifest(port: number, to: number, more: Manifest['workloads'] = {}): Manifest {
  return {
    ...manifest(),
    workloads: {
      web: { package: 'dev', mesh: { ingress: [{ port, to }] } },
      client: {
        package: 'dev',
        mesh: { egress: [{ listen: '127.0.0.1:9999', workload: 'web', port }] },
      },
      ...more,
    },
  };
}

/** A TLS connection to `port` as workload `name`, with a valid certificate from the mesh CA. */
async function connectAs(name: string, port: number): Promise<TLSSocket> {
  const leaf = await issueLeaf(meshCa, [`spiffe://${TD}/${name}`]);
  const s = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: root.certPem,
    key: leaf.keyPem,
    cert: `${leaf.certPem}\n${meshCa.certPem}`,
    checkServerIdentity: () => undefined,
  });
  s.on('error', () => undefined);
  return s;
}

/** Sends `msg`; resolves with what comes back, or '' when the connection is closed instead. */
function echo(s: TLSSocket, msg: string): Promise<string> {
  s.write(msg);
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.once('close', () => resolve(''));
  });
}

interface LogLine {
  level: 'info' | 'warn';
  msg: string;
  fields: Record<string, unknown> | undefined;
}

function logTo(lines: LogLine[]): AgentLog {
  return {
    info: (msg, fields) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => lines.push({ level: 'warn', msg, fields }),
  };
}

/**
 * Runs the agent as `web` of `meshManifest` (an echo server stands in for its program's port;
 * the program itself loops until `stop`), until the test ends.
 */
async function meshAgent(
  t: TestContext,
  extra: Partial<RunAgentOptions> = {},
  stubExtra: Partial<StubOptions> = {},
) {
  const backend = createServer((c) => c.pipe(c)).listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const to = (backend.address() as AddressInfo).port;
  const port = await freePort();
  const stub = await stubWith({
    manifest: meshManifest(port, to),
    args: ['app', '-c', 'touch "$DIR/ready"; while [ ! -e "$DIR/stop" ]; do sleep 0.05; done'],
    ...stubExtra,
  });
  const o = await agentOpts(stub.url, { meshBind: '127.0.0.1', ...extra });
  const dir = o.env?.['DIR'] as string;
  let exited = false;
  const running = runAgent(o).finally(() => {
    exited = true;
  });
  const stop = () => writeFile(join(dir, 'stop'), '');
  t.after(async () => {
    await stop();
    await running.catch(() => undefined);
    backend.close();
    await stub.close();
  });
  await until(() => existsSync(join(dir, 'ready')) || exited, 'the program');
  return { port, to, stub, running, stop, exited: () => exited };
}

test('the mesh proxy starts from the manifest: an allowed peer reaches the program', async (t) => {
  const logs: LogLine[] = [];
  const a = await meshAgent(t, { log: logTo(logs) });
  const s = await connectAs('client', a.port);
  assert.equal(await echo(s, 'ping'), 'ping');
  s.destroy();
  // A workload the manifest does not connect to web is refused, and (no onMeshEvent given)
  // the refusal is logged; the accepted connection is not.
  assert.equal(await echo(await connectAs('intruder', a.port), 'x'), '');
  const refused = logs.find((l) => l.msg === 'mesh connection refused');
  assert.equal(refused?.level, 'warn');
  assert.equal(refused?.fields?.['peer'], `spiffe://${TD}/intruder`);
  assert.equal(refused?.fields?.['reason'], 'workload not allowed');
  assert.equal(
    logs.some((l) => l.msg === 'mesh connection accepted'),
    false,
  );
  await a.stop();
  assert.equal(await a.running, 0);
});

test('a manifest update that revokes a peer closes its connections and refuses new ones', async (t) => {
  const events: MeshEvent[] = [];
  const logs: LogLine[] = [];
  const a = await meshAgent(t, {
    manifestRefreshMs: 50,
    log: logTo(logs),
    onMeshEvent: (e) => events.push(e),
  });
  const held = await connectAs('client', a.port);
  assert.equal(await echo(held, 'ping'), 'ping');
  // The owners drop client's egress to web.
  await a.stub.setManifest(meshManifest(a.port, a.to, { client: { package: 'dev' } }));
  await until(() => held.destroyed, 'the open connection to close');
  assert.deepEqual(
    events.filter((e) => e.type === 'revoked'),
    [{ type: 'revoked', route: `ingress:${a.port}`, peer: 'client' }],
  );
  const update = logs.find((l) => l.msg === 'mesh allow-lists updated');
  assert.deepEqual(update?.fields?.['ingress'], [{ port: a.port, allow: [], external: false }]);
  // A new connection with a valid certificate for client is refused.
  assert.equal(await echo(await connectAs('client', a.port), 'again'), '');
  assert.ok(events.some((e) => e.type === 'refused' && e.peer === `spiffe://${TD}/client`));
  assert.equal(a.exited(), false, 'the program runs on');
  await a.stop();
  assert.equal(await a.running, 0);
});

test('without the timer, a renewal picks up the manifest update', async (t) => {
  const logs: LogLine[] = [];
  const renewed: unknown[] = [];
  const a = await meshAgent(
    t,
    {
      manifestRefreshMs: 0,
      minRenewIntervalMs: 50,
      log: logTo(logs),
      onRenewed: (m) => renewed.push(m),
    },
    { renewAfterMs: 300 },
  );
  const held = await connectAs('client', a.port);
  assert.equal(await echo(held, 'ping'), 'ping');
  await a.stub.setManifest(meshManifest(a.port, a.to, { client: { package: 'dev' } }));
  await until(() => held.destroyed, 'the open connection to close');
  assert.ok(renewed.length >= 1, 'closed after a renewal');
  assert.equal(logs.filter((l) => l.msg === 'mesh allow-lists updated').length, 1);
  await a.stop();
  assert.equal(await a.running, 0);
});

test('a change that needs a restart is logged; a failed refresh or a manifest without this workload keeps the allow-list', async (t) => {
  const logs: LogLine[] = [];
  const a = await meshAgent(t, { manifestRefreshMs: 50, log: logTo(logs) });
  const warned = (re: RegExp) => logs.find((l) => l.level === 'warn' && re.test(l.msg));
  // The coordinator is down: the refresh fails and client keeps its access.
  a.stub.manifestDown = true;
  await until(() => warned(/manifest refresh failed/) !== undefined, 'a failed refresh');
  assert.equal(
    warned(/manifest refresh failed/)?.fields?.['code'],
    'AGENT_COORDINATOR_UNREACHABLE',
  );
  assert.equal(await echo(await connectAs('client', a.port), 'down'), 'down');
  a.stub.manifestDown = false;
  // A second ingress port: only a restart listens on it; nothing else changes.
  const added = await freePort();
  const m = meshManifest(a.port, a.to);
  const web = m.workloads['web'] as Manifest['workloads'][string];
  const twoPorts: Manifest = {
    ...m,
    workloads: {
      ...m.workloads,
      web: {
        ...web,
        mesh: {
          ingress: [
            { port: a.port, to: a.to },
            { port: added, to: a.to },
          ],
        },
      },
    },
  };
  await a.stub.setManifest(twoPorts);
  await until(() => warned(/restart/) !== undefined, 'the restart warning');
  assert.deepEqual(warned(/restart/)?.fields?.['changes'], [`ingress ${added} added`]);
  assert.equal(
    logs.some((l) => l.msg === 'mesh allow-lists updated'),
    false,
  );
  const probe = createConnection(added, '127.0.0.1');
  const [err] = (await once(probe, 'error')) as [Error & { code?: string }];
  assert.equal(err.code, 'ECONNREFUSED');
  assert.equal(await echo(await connectAs('client', a.port), 'same'), 'same');
  // A manifest without web: the allow-list stays (until renewals fail), with a warning.
  await a.stub.setManifest({ ...m, workloads: { other: { package: 'dev' } } });
  await until(() => warned(/no longer names this workload/) !== undefined, 'the removal warning');
  assert.equal(await echo(await connectAs('client', a.port), 'kept'), 'kept');
  assert.equal(a.exited(), false);
  await a.stop();
  assert.equal(await a.running, 0);
});

test('an unreachable coordinator is retried at startup for --retry-for', async () => {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const o = await agentOpts(`https://127.0.0.1:${port}`);
  await rejectsCode(runAgent({ ...o, retryForMs: 0 }), 'AGENT_COORDINATOR_UNREACHABLE');
  const running = runAgent({ ...o, retryForMs: 20_000 });
  await new Promise((r) => setTimeout(r, 700));
  const stub = await stubWith({ port });
  assert.equal(await running, 99);
  assert.equal(stub.requests.length, 1);
  await stub.close();
});
