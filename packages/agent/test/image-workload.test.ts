/**
 * Image workloads end to end: the real coordinator verifies the agent's sim evidence, releases
 * the image key (a user-defined secret in a file template) and a greeting secret, the agent
 * pulls the encrypted busybox image pinned by digest, decrypts and unpacks it in a private
 * directory, and runc runs it with the greeting mounted read-only. Evidence that does not
 * match gets no key and unpacks nothing; a tampered image fails typed before unpacking.
 */
import 'reflect-metadata';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import { exportSimHardware, generateSimHardware, simMeasurement, toHex } from '@cloister/evidence';
import { OciLayoutDestination, OciLayoutSource, copyImage, loadPublicKey } from '@cloister/image';
import type { ReferenceValues } from '@cloister/image';
import {
  manifestHash,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  transitionHash,
  transitionSignedBytes,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { createCoordinator } from '../../coordinator/src/index.js';
import type { RunningCoordinator } from '../../coordinator/src/index.js';
import { runAgent } from '../src/run.js';
import { simProvider } from '../src/providers/sim.js';
import { imageMeasuredArgs } from '../src/image-workload.js';
import type { ImageWorkloadOptions } from '../src/image-workload.js';

const repoRoot = new URL('../../../', import.meta.url).pathname;
const have = (bin: string) =>
  spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
const missing = ['runc', 'umoci'].filter((b) => !have(b));

let tmp: string;
let simDir: string;
let coord: RunningCoordinator | undefined;
let runc: string;
let runcBytes: Uint8Array;
let encDir: string;
let rv: ReferenceValues;
let src: string;
const GREETING = `greeting-${Math.random().toString(36).slice(2)}`;
const SCRIPT =
  'cat /run/cloister/greeting; test -e /run/cloister/image-key.pem || echo nokey; echo "$MODE"; exit 7';
/** Waits (at most 30 s) until the mesh certificate in the container changes: a renewal. */
const RENEWAL_SCRIPT =
  'first=$(cat /run/cloister/mesh/cert.pem); i=0; while [ $i -lt 300 ]; do ' +
  '[ "$(cat /run/cloister/mesh/cert.pem)" != "$first" ] && { echo renewed; exit 0; }; ' +
  'sleep 0.1; i=$((i+1)); done; echo not renewed; exit 3';
/** Short-lived mesh certificates, so that a running container sees a renewal (at 2/3). */
const LEAF_VALIDITY_MS = 4_000;

function skipped(t: TestContext): boolean {
  if (missing.length === 0) return false;
  const msg = `SKIPPED image workloads: ${missing.join(', ')} not installed`;
  console.error(`\n*** ${msg} ***\n`);
  t.skip(msg);
  return true;
}

async function ownerKey() {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const der = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)).toString(
    'base64',
  );
  const pem = `-----BEGIN PUBLIC KEY-----\n${der.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PUBLIC KEY-----\n`;
  return { keys, pem };
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cloister-image-agent-'));
  if (missing.length > 0) return;
  simDir = join(tmp, 'sim');
  await mkdir(simDir);
  const hw = await generateSimHardware();
  for (const [n, t] of Object.entries(await exportSimHardware(hw))) {
    await writeFile(join(simDir, n), t);
  }
  runc = execFileSync('sh', ['-c', 'command -v runc']).toString().trim();
  runcBytes = new Uint8Array(await readFile(runc));

  // The busybox image, encrypted (jwe) to the image key pair.
  const plain = execFileSync(join(repoRoot, 'scripts', 'build-test-image.sh'), [tmp])
    .toString()
    .trim();
  const imageKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(
    join(tmp, 'image-key.pem'),
    imageKey.privateKey.export({ type: 'pkcs8', format: 'pem' }),
  );
  encDir = join(tmp, 'enc');
  rv = await copyImage(
    new OciLayoutSource(plain, 'latest'),
    new OciLayoutDestination(encDir, 'v1'),
    {
      recipients: [
        loadPublicKey(
          new Uint8Array(Buffer.from(imageKey.publicKey.export({ type: 'spki', format: 'pem' }))),
        ),
      ],
    },
  );
  src = `oci:${encDir}:v1`;

  const install = await ownerKey();
  const alice = await ownerKey();
  coord = await createCoordinator({
    dataDir: join(tmp, 'data'),
    listen: '127.0.0.1:0',
    ownerKeyPem: install.pem,
    simulation: { rootDir: simDir },
    logger: pino({ level: 'silent' }),
    leafValidityMs: LEAF_VALIDITY_MS,
  });
  // Both workloads run this image, pinned by its reference values.
  const pinned = {
    ref: src,
    manifestDigest: rv.manifestDigest,
    configDigest: rv.configDigest,
    diffIds: [...rv.diffIds],
  };
  const manifest = {
    version: 1,
    trustDomain: 'image.test',
    packages: {
      shop: {
        tee: 'sim',
        measurement: toHex(
          await simMeasurement(runcBytes, imageMeasuredArgs(src, rv.manifestDigest)),
        ),
      },
    },
    workloads: {
      shop: {
        package: 'shop',
        image: pinned,
        files: {
          '/run/cloister/image-key.pem': '{{ raw .secrets.imageKey }}',
          '/run/cloister/greeting': '{{ string .secrets.greeting }}',
        },
        env: { MODE: 'from-manifest' },
        args: ['/bin/sh', '-c', SCRIPT],
      },
      renewing: {
        package: 'shop',
        image: pinned,
        files: { '/run/cloister/image-key.pem': '{{ raw .secrets.imageKey }}' },
        args: ['/bin/sh', '-c', RENEWAL_SCRIPT],
      },
    },
    secrets: {
      imageKey: { type: 'plain', userDefined: true },
      greeting: { type: 'plain', userDefined: true },
    },
    owners: {
      alice: { publicKey: alice.pem, roles: ['update', 'secrets:imageKey', 'secrets:greeting'] },
    },
    updates: { threshold: 1 },
    policy: { allowSimulation: true },
  } as Manifest;
  const th = await transitionHash({
    seq: 0,
    prevHash: ZERO_HASH,
    manifestHash: await manifestHash(manifest),
    kind: 'set',
  });
  const sig = await signAsOwner(transitionSignedBytes(th), 'install', install.keys.privateKey);
  const put = await coord.server.inject({
    method: 'PUT',
    url: '/v1/manifest',
    payload: { manifest, signatures: [sig] },
  });
  assert.equal(put.statusCode, 200, put.body);
  const rootDer = new Uint8Array(new x509.X509Certificate(coord.rootCaPem).rawData);
  for (const [name, value] of [
    ['imageKey', readFileSync(join(tmp, 'image-key.pem'))],
    ['greeting', Buffer.from(GREETING)],
  ] as const) {
    const v = new Uint8Array(value);
    const signature = await signAsOwner(
      ownerSignedBytes(
        'secret',
        await secretDigest({ rootCaDer: rootDer, name, version: 0, value: v }),
      ),
      'alice',
      alice.keys.privateKey,
    );
    const r: { statusCode: number; body: string } = await coord.server.inject({
      method: 'PUT',
      url: `/v1/secrets/${name}`,
      payload: { value: toBase64Url(v), version: 0, signature },
    });
    assert.equal(r.statusCode, 200, r.body);
  }
});

after(async () => {
  await coord?.close();
  await rm(tmp, { recursive: true, force: true });
});

async function agentRun(
  t: TestContext,
  image: Omit<ImageWorkloadOptions, 'runc' | 'workDir'>,
  measuredArgs: string[],
  workload = 'shop',
) {
  const work = await mkdtemp(join(tmp, 'work-'));
  const shm = await mkdtemp(join(tmp, 'shm-'));
  let out = '';
  let err = '';
  const run = runAgent({
    coordinator: (coord as RunningCoordinator).url,
    workload,
    rootCa: (coord as RunningCoordinator).rootCaPem,
    provider: simProvider({ dir: simDir, executable: runcBytes, args: measuredArgs }),
    image: {
      ...image,
      runc,
      workDir: work,
      onStdout: (b) => (out += b.toString()),
      onStderr: (b) => (err += b.toString()),
    },
    shmDir: shm,
    env: {},
  });
  t.after(() => rm(work, { recursive: true, force: true }));
  return { run, work, shm, out: () => out, err: () => err };
}

/**
 * Runs the pinned image as `workload` and waits for it; undefined (the test skipped, loudly)
 * where runc cannot create containers.
 */
async function runPinned(t: TestContext, workload: string, expectedStatus: number) {
  const a = await agentRun(
    t,
    { source: src, manifestDigest: rv.manifestDigest },
    imageMeasuredArgs(src, rv.manifestDigest),
    workload,
  );
  const status = await a.run;
  if (
    status !== expectedStatus &&
    /operation not permitted|permission denied|cgroup/i.test(a.err())
  ) {
    console.error(`\n*** SKIPPED ${t.name}: runc cannot create containers here: ${a.err()} ***\n`);
    t.skip('runc cannot create containers here');
    return undefined;
  }
  return { ...a, status };
}

test('image workload: attested agent decrypts, unpacks and runs the image under runc', async (t) => {
  if (skipped(t)) return;
  const a = await runPinned(t, 'shop', 7);
  if (a === undefined) return;
  assert.equal(a.status, 7, a.err());
  // The delivered secret, the image key withheld from the container, the manifest's env.
  assert.equal(a.out(), `${GREETING}nokey\nfrom-manifest\n`);
  // Rootfs, staging and bundle are gone; so is the files root.
  assert.deepEqual(readdirSync(a.work), []);
  assert.deepEqual(readdirSync(a.shm), []);
});

test('image workload: the running container sees its mesh certificate renewed', async (t) => {
  if (skipped(t)) return;
  const a = await runPinned(t, 'renewing', 0);
  if (a === undefined) return;
  assert.equal(a.out(), 'renewed\n', a.err());
  assert.equal(a.status, 0);
});

test('image workload: evidence not matching the manifest gets no key and unpacks nothing', async (t) => {
  if (skipped(t)) return;
  // The host starts runc on a different image (its digest on the measured command line).
  const other = `sha256:${'0'.repeat(64)}`;
  const a = await agentRun(
    t,
    { source: src, manifestDigest: other },
    imageMeasuredArgs(src, other),
  );
  await assert.rejects(a.run, { code: 'AGENT_COORDINATOR_REFUSED' });
  assert.deepEqual(readdirSync(a.work), []);
  assert.deepEqual(readdirSync(a.shm), []);
  assert.equal(a.out(), '');
});

test('image workload: a tampered layer fails typed before anything is unpacked', async (t) => {
  if (skipped(t)) return;
  // Same source, manifest and measurement; one ciphertext byte flipped in place (restored after).
  const layer = rv.layers[0]?.digest ?? '';
  const blob = join(encDir, 'blobs', 'sha256', layer.slice('sha256:'.length));
  const original = readFileSync(blob);
  const bytes = Buffer.from(original);
  const mid = bytes.length >> 1;
  bytes[mid] = (bytes[mid] ?? 0) ^ 1;
  writeFileSync(blob, bytes);
  t.after(() => writeFileSync(blob, original));
  const a = await agentRun(
    t,
    { source: src, manifestDigest: rv.manifestDigest },
    imageMeasuredArgs(src, rv.manifestDigest),
  );
  await assert.rejects(a.run, (e: { code?: string }) => {
    assert.match(e.code ?? '', /^IMAGE_/);
    return true;
  });
  assert.deepEqual(readdirSync(a.work), []);
  assert.equal(a.out(), '');
});

test('image workload: unpinned image refused without the development flag', async (t) => {
  if (skipped(t)) return;
  const { resolveImagePin } = await import('../src/image-workload.js');
  assert.throws(() => resolveImagePin(undefined, {}), { code: 'AGENT_USAGE' });
  assert.equal(resolveImagePin(undefined, { allowUnpinned: true }), undefined);
  assert.throws(
    () =>
      resolveImagePin(
        { ref: src, manifestDigest: rv.manifestDigest },
        { manifestDigest: `sha256:${'1'.repeat(64)}` },
      ),
    { code: 'IMAGE_DIGEST_MISMATCH' },
  );
});
