// `cloister up` with an image workload: workloads.json names an encrypted OCI image instead of a
// command; the image key and a greeting are user-defined secrets uploaded from DIR/secrets; the
// agent runs the image under runc only after attestation, and the container's status comes back.
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { imageMeasuredArgs } from '@cloister/agent';
import { OciLayoutDestination, OciLayoutSource, copyImage, loadPublicKey } from '@cloister/image';
import { generateOwnerKey } from '../src/client/local.js';
import { parseRunFile } from '../src/up/runfile.js';
import { startUp } from '../src/up/runtime.js';
import { measure, tempDir } from './helpers.js';

const repoRoot = new URL('../../../', import.meta.url).pathname;
const have = (bin: string) =>
  spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

test('up runs an encrypted image workload under runc after attestation', async (t) => {
  const missing = ['runc', 'umoci'].filter((b) => !have(b));
  if (missing.length > 0) {
    console.error(`\n*** SKIPPED up image workload: ${missing.join(', ')} not installed ***\n`);
    t.skip(`${missing.join(', ')} not installed`);
    return;
  }
  const d = await tempDir('cloister-image-up-');
  t.after(d.cleanup);
  const plain = execFileSync(join(repoRoot, 'scripts', 'build-test-image.sh'), [
    join(d.dir, 'build'),
  ])
    .toString()
    .trim();
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rv = await copyImage(
    new OciLayoutSource(plain, 'latest'),
    new OciLayoutDestination(join(d.dir, 'image'), 'v1'),
    {
      recipients: [
        loadPublicKey(
          new Uint8Array(Buffer.from(key.publicKey.export({ type: 'spki', format: 'pem' }))),
        ),
      ],
    },
  );
  const owner = await generateOwnerKey('owner', d.dir);
  const runc = execFileSync('sh', ['-c', 'command -v runc']).toString().trim();
  const manifest = {
    version: 1,
    trustDomain: 'image-up.test',
    packages: {
      shop: {
        tee: 'sim',
        measurement: await measure(
          new Uint8Array(await readFile(runc)),
          imageMeasuredArgs('oci:image:v1', rv.manifestDigest),
        ),
      },
    },
    workloads: {
      shop: {
        package: 'shop',
        image: { ref: 'oci:image:v1', manifestDigest: rv.manifestDigest, diffIds: rv.diffIds },
        files: {
          '/run/cloister/image-key.pem': '{{ raw .secrets.imageKey }}',
          '/run/cloister/greeting': '{{ string .secrets.greeting }}',
        },
        args: ['/bin/sh', '-c', 'test "$(cat /run/cloister/greeting)" = hello-image && exit 7'],
      },
    },
    secrets: {
      imageKey: { type: 'plain', userDefined: true },
      greeting: { type: 'plain', userDefined: true },
    },
    owners: {
      owner: {
        publicKey: owner.publicKeyPem,
        roles: ['update', 'secrets:imageKey', 'secrets:greeting'],
      },
    },
    policy: { allowSimulation: true },
  };
  await writeFile(join(d.dir, 'manifest.json'), JSON.stringify(manifest));
  await writeFile(
    join(d.dir, 'workloads.json'),
    JSON.stringify({ workloads: { shop: { image: 'oci:image:v1', oneShot: true } } }),
  );
  await mkdir(join(d.dir, 'secrets'));
  await writeFile(
    join(d.dir, 'secrets', 'imageKey'),
    key.privateKey.export({ type: 'pkcs8', format: 'pem' }),
  );
  await writeFile(join(d.dir, 'secrets', 'greeting'), 'hello-image');
  const logs: string[] = [];
  const up = await startUp(d.dir, { graceMs: 2000, log: (l) => logs.push(l) });
  try {
    await up.oneShotsDone;
  } finally {
    const results = await up.stop();
    assert.equal(results.length, 1, logs.join('\n'));
    assert.equal(results[0]?.status, 7, logs.join('\n'));
  }
});

test('up run-file: image and command are exclusive, the manifest must pin the image', () => {
  const m = {
    version: 1,
    trustDomain: 'x.test',
    packages: { p: { tee: 'sim', measurement: '00'.repeat(32) } },
    workloads: {
      pinned: { package: 'p', image: { ref: 'oci:x', manifestDigest: `sha256:${'a'.repeat(64)}` } },
      loose: { package: 'p' },
    },
  } as unknown as Parameters<typeof parseRunFile>[1];
  const ok = parseRunFile(JSON.stringify({ workloads: { pinned: { image: 'oci:x:1' } } }), m);
  assert.equal(ok.workloads['pinned']?.image, 'oci:x:1');
  for (const w of [
    { pinned: { image: 'oci:x:1', command: ['true'] } },
    { loose: { image: 'oci:x:1' } },
    { pinned: { image: 42 } },
  ]) {
    assert.throws(() => parseRunFile(JSON.stringify({ workloads: w }), m), {
      code: 'UP_RUNFILE_INVALID',
    });
  }
});
