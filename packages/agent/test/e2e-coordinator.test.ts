/**
 * End to end against the real coordinator over real sockets: the coordinator verifies the
 * agents' sim evidence and appraises it against the manifest, two agents run real programs,
 * and the client's traffic reaches the server through the mesh proxies (egress -> ingress)
 * with certificates the coordinator issued.
 */
import 'reflect-metadata';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import { pino } from 'pino';
import { exportSimHardware, generateSimHardware, simMeasurement, toHex } from '@cloister/evidence';
import {
  manifestHash,
  signAsOwner,
  transitionHash,
  transitionSignedBytes,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { createCoordinator } from '../../coordinator/src/index.js';
import type { RunningCoordinator } from '../../coordinator/src/index.js';
import { runAgent } from '../src/run.js';
import { simProvider } from '../src/providers/sim.js';
import { freePort } from '@cloister/testkit';

let tmp: string;
let simDir: string;
let coord: RunningCoordinator;
const node = process.execPath;
let nodeBytes: Uint8Array;

const SERVER = `
const net = require('node:net');
const fs = require('node:fs');
const conf = fs.readFileSync(process.env.CLOISTER_FILES + '/etc/app/greeting', 'utf8');
net.createServer({ allowHalfOpen: true }, (s) => {
  const chunks = [];
  s.on('data', (c) => chunks.push(c));
  s.on('end', () => s.end(conf + ':' + Buffer.concat(chunks).toString().toUpperCase() + ':' + process.env.API_KEY.length));
}).listen(Number(process.env.APP_PORT), '127.0.0.1', () => fs.writeFileSync(process.env.READY, ''));
process.on('SIGTERM', () => process.exit(0));
`;
const CLIENT = `
const net = require('node:net');
const fs = require('node:fs');
const s = net.connect(Number(process.env.EGRESS_PORT), '127.0.0.1');
const chunks = [];
s.on('data', (c) => chunks.push(c));
s.on('close', () => { fs.writeFileSync(process.env.OUT, Buffer.concat(chunks)); process.exit(chunks.length ? 5 : 6); });
s.end('hello mesh');
`;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-e2e-agent-'));
  simDir = join(tmp, 'sim');
  await mkdir(simDir);
  const hw = await generateSimHardware();
  for (const [n, t] of Object.entries(await exportSimHardware(hw))) {
    await writeFile(join(simDir, n), t);
  }
  nodeBytes = new Uint8Array(await readFile(node));
});

after(async () => {
  await coord?.close();
  await rm(tmp, { recursive: true, force: true });
});

test('two agents activate at the real coordinator and talk through the mesh', async () => {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)).toString(
    'base64',
  );
  const ownerPem = `-----BEGIN PUBLIC KEY-----\n${spki.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PUBLIC KEY-----\n`;
  coord = await createCoordinator({
    dataDir: join(tmp, 'data'),
    listen: '127.0.0.1:0',
    ownerKeyPem: ownerPem,
    simulation: { rootDir: simDir },
    logger: pino({ level: 'silent' }),
  });

  const ingressPort = await freePort();
  const appPort = await freePort();
  const egressPort = await freePort();
  const serverArgs = ['-e', SERVER];
  const clientArgs = ['-e', CLIENT];
  const manifest: Manifest = {
    version: 1,
    trustDomain: 'e2e.test',
    packages: {
      server: { tee: 'sim', measurement: toHex(await simMeasurement(nodeBytes, serverArgs)) },
      client: { tee: 'sim', measurement: toHex(await simMeasurement(nodeBytes, clientArgs)) },
    },
    workloads: {
      api: {
        package: 'server',
        files: { '/etc/app/greeting': 'hi-{{ string .workload.name }}' },
        env: { API_KEY: '{{ hex .secrets.apiKey }}', APP_PORT: String(appPort) },
        mesh: { ingress: [{ port: ingressPort, to: appPort }] },
      },
      web: {
        package: 'client',
        env: { EGRESS_PORT: String(egressPort) },
        mesh: {
          egress: [{ listen: `127.0.0.1:${egressPort}`, workload: 'api', port: ingressPort }],
        },
      },
    },
    secrets: { apiKey: { type: 'symmetric', bits: 256 } },
    policy: { allowSimulation: true },
  };
  const th = await transitionHash({
    seq: 0,
    prevHash: ZERO_HASH,
    manifestHash: await manifestHash(manifest),
    kind: 'set',
  });
  const sig = await signAsOwner(transitionSignedBytes(th), 'install', keys.privateKey);
  const put = await coord.server.inject({
    method: 'PUT',
    url: '/v1/manifest',
    payload: { manifest, signatures: [sig] },
  });
  assert.equal(put.statusCode, 200, put.body);

  const dir = join(tmp, 'run');
  await mkdir(dir);
  const env = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    READY: join(dir, 'ready'),
    OUT: join(dir, 'out'),
  };
  // The server agent pins the root CA; the client agent uses first contact.
  const server = runAgent({
    coordinator: coord.url,
    workload: 'api',
    rootCa: coord.rootCaPem,
    provider: simProvider({ dir: simDir, executable: nodeBytes, args: serverArgs }),
    program: { executable: node, argv0: 'node', args: serverArgs },
    meshBind: '127.0.0.1',
    shmDir: dir,
    env,
  });
  // Surface a failed server agent at the end instead of as an unhandled rejection now.
  server.catch(() => undefined);
  for (let i = 0; i < 500 && !existsSync(env.READY); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(existsSync(env.READY), 'server program did not start');
  const client = await runAgent({
    coordinator: coord.url,
    workload: 'web',
    provider: simProvider({ dir: simDir, executable: nodeBytes, args: clientArgs }),
    program: { executable: node, argv0: 'node', args: clientArgs },
    peers: { api: { host: '127.0.0.1' } },
    shmDir: dir,
    env,
  });
  assert.equal(client, 5);
  const reply = await readFile(env.OUT, 'utf8');
  assert.equal(reply, 'hi-api:HELLO MESH:64');

  // A program the manifest does not pin is refused by the coordinator's appraisal.
  await assert.rejects(
    runAgent({
      coordinator: coord.url,
      workload: 'web',
      rootCa: coord.rootCaPem,
      provider: simProvider({ dir: simDir, executable: nodeBytes, args: ['-e', 'evil()'] }),
      program: { executable: node, argv0: 'node', args: ['-e', 'evil()'] },
      shmDir: dir,
      env,
    }),
    { code: 'AGENT_COORDINATOR_REFUSED' },
  );
  process.kill(process.pid, 'SIGTERM');
  assert.equal(await server, 0);
});
