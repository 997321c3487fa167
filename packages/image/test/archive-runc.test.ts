/**
 * docker-archive in both directions (and with skopeo), and the end-to-end path users run:
 * busybox image → encrypt for the coordinator → guest pull → runtime spec → runc.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  DockerArchiveDestination,
  DockerArchiveSource,
  OciLayoutDestination,
  OciLayoutSource,
  buildRuntimeSpec,
  defaultSeccomp,
  copyImage,
  keyUnwrapper,
  loadPublicKey,
  pullImage,
  runImage,
  writeBundle,
} from '@cloister/image';
import { makeLayout } from './fixtures.js';
import { buildBusybox, have, layoutImage, skipWithout, skopeo, tempDir } from './helpers.js';

const coord = generateKeyPairSync('rsa', { modulusLength: 2048 });
const coordPub = loadPublicKey(
  new Uint8Array(Buffer.from(coord.publicKey.export({ type: 'spki', format: 'pem' }))),
);

test('docker-archive: write, read back, skopeo both ways, encrypted refused', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'p'), [
    [{ name: 'a', content: 'x' }],
    [{ name: 'b', content: 'y' }],
  ]);
  const file = join(dir, 'img.tar');
  await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new DockerArchiveDestination(file, 'test/img:1'),
  );
  const archive = new DockerArchiveSource(file);
  t.after(() => archive.close());
  const back = await copyImage(archive, new OciLayoutDestination(join(dir, 'back'), 'b'));
  assert.deepEqual(back.diffIds, plain.diffIds);
  await assert.rejects(
    copyImage(new OciLayoutSource(plain.dir, 'latest'), new DockerArchiveDestination(file)),
    {
      code: 'IMAGE_DESTINATION_EXISTS',
    },
  );
  const encFile = join(dir, 'enc.tar');
  await assert.rejects(
    copyImage(new OciLayoutSource(plain.dir, 'latest'), new DockerArchiveDestination(encFile), {
      coordinatorKey: coordPub,
    }),
    { code: 'IMAGE_UNSUPPORTED' },
  );
  assert.equal(existsSync(encFile), false);
  if (!have('skopeo'))
    return console.error('*** SKIPPED docker-archive skopeo interop: skopeo not installed ***');
  skopeo(['copy', `docker-archive:${file}`, `oci:${join(dir, 'sk')}:x`]);
  assert.deepEqual(layoutImage(join(dir, 'sk'), 'x').diffIds, plain.diffIds);
  const skFile = join(dir, 'skopeo.tar');
  skopeo(['copy', `oci:${plain.dir}:latest`, `docker-archive:${skFile}:made/by:skopeo`]);
  const skArchive = new DockerArchiveSource(skFile);
  t.after(() => skArchive.close());
  const fromSk = await copyImage(skArchive, new OciLayoutDestination(join(dir, 'fromsk'), 'x'), {
    coordinatorKey: coordPub,
  });
  assert.deepEqual(fromSk.diffIds, plain.diffIds);
});

test('busybox: encrypt → guest pull → runc runs echo with the image config', async (t) => {
  if (skipWithout(t, 'umoci', 'busybox', 'runc')) return;
  const dir = tempDir(t);
  const src = buildBusybox(dir);
  const enc = join(dir, 'enc');
  const rv = await copyImage(
    new OciLayoutSource(src, 'latest'),
    new OciLayoutDestination(enc, 'latest'),
    {
      coordinatorKey: coordPub,
    },
  );
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle);
  mkdirSync(join(dir, 'staging'));
  const pulled = await pullImage({
    source: new OciLayoutSource(enc, 'latest'),
    expected: {
      manifestDigest: rv.manifestDigest,
      configDigest: rv.configDigest,
      diffIds: rv.diffIds,
    },
    unwrap: keyUnwrapper([coord.privateKey]),
    rootfs: join(bundle, 'rootfs'),
    stagingDir: join(dir, 'staging'),
    requireEncrypted: true,
  });
  const run = async (spec: Awaited<ReturnType<typeof buildRuntimeSpec>>) => {
    await writeBundle(bundle, spec);
    let out = '';
    let err = '';
    const code = await runImage({
      bundleDir: bundle,
      onStdout: (b) => (out += b.toString()),
      onStderr: (b) => (err += b.toString()),
    });
    return { code, out, err };
  };
  // The image's own Entrypoint + Cmd: `/bin/sh -c 'echo hello from busybox'`.
  const first = await run(
    await buildRuntimeSpec({ config: pulled.config, rootfs: join(bundle, 'rootfs') }),
  );
  if (first.code !== 0 && /operation not permitted|permission denied|cgroup/i.test(first.err)) {
    console.error(
      `\n*** SKIPPED runc execution: runc cannot create containers here: ${first.err.trim()} ***\n`,
    );
    t.skip('runc cannot create containers here');
    return;
  }
  assert.equal(first.code, 0, first.err);
  assert.equal(first.out, 'hello from busybox\n');
  // Manifest args and env override the image; the exit code comes back.
  const second = await run(
    await buildRuntimeSpec({
      config: pulled.config,
      rootfs: join(bundle, 'rootfs'),
      args: ['/bin/sh', '-c', 'echo "$GREETING"; touch /etc/x 2>/dev/null || echo ro; exit 3'],
      env: { GREETING: 'hi manifest' },
    }),
  );
  assert.equal(second.out, 'hi manifest\nro\n');
  assert.equal(second.code, 3);
  // The seccomp filter: a new user namespace (which needs no capability) is refused; without
  // the filter the same command succeeds here.
  const probe = 'unshare -U true && echo userns-ok || echo userns-refused';
  const filtered = await run(
    await buildRuntimeSpec({
      config: pulled.config,
      rootfs: join(bundle, 'rootfs'),
      args: ['/bin/sh', '-c', probe],
    }),
  );
  assert.equal(filtered.out, 'userns-refused\n', filtered.err);
  const unfiltered = await buildRuntimeSpec({
    config: pulled.config,
    rootfs: join(bundle, 'rootfs'),
    args: ['/bin/sh', '-c', probe],
  });
  delete (unfiltered.linux as { seccomp?: unknown }).seccomp;
  const open = await run(unfiltered);
  if (open.out !== 'userns-ok\n') {
    console.error(`\n*** the unfiltered probe could not create a user namespace here either ***\n`);
  } else assert.equal(open.out, 'userns-ok\n');
});

test('runtime spec: hardened defaults and bad input refused', async (t) => {
  const dir = tempDir(t);
  const config = {
    os: 'linux',
    architecture: 'amd64',
    diffIds: [],
    entrypoint: ['/app'],
    env: ['A=1'],
    raw: {},
  };
  const spec = await buildRuntimeSpec({
    config,
    rootfs: dir,
    files: [{ containerPath: '/etc/app/db.conf', hostPath: '/dev/shm/x' }],
  });
  assert.equal(spec.process.args[0], '/app');
  assert.equal((spec.process as { noNewPrivileges?: boolean }).noNewPrivileges, true);
  assert.equal((spec.root as { readonly: boolean }).readonly, true);
  const seccomp = (spec.linux as { seccomp: ReturnType<typeof defaultSeccomp> }).seccomp;
  assert.deepEqual(seccomp, defaultSeccomp());
  assert.deepEqual(defaultSeccomp('x64')['architectures'], [
    'SCMP_ARCH_X86_64',
    'SCMP_ARCH_X86',
    'SCMP_ARCH_X32',
  ]);
  const linux = spec.linux as { namespaces: { type: string }[]; maskedPaths: string[] };
  assert.deepEqual(
    linux.namespaces.map((n) => n.type),
    ['pid', 'ipc', 'uts', 'mount'],
  );
  assert.ok(linux.maskedPaths.includes('/proc/kcore'));
  const caps = (spec.process as unknown as { capabilities: { bounding: string[] } }).capabilities
    .bounding;
  assert.ok(!caps.includes('CAP_SYS_ADMIN') && !caps.includes('CAP_NET_RAW'));
  const mounts = spec.mounts as { destination: string; options?: string[] }[];
  assert.ok(mounts.find((m) => m.destination === '/etc/app/db.conf')?.options?.includes('ro'));
  await assert.rejects(buildRuntimeSpec({ config: { ...config, entrypoint: [] }, rootfs: dir }), {
    code: 'IMAGE_RUNTIME_CONFIG',
  });
  await assert.rejects(buildRuntimeSpec({ config, rootfs: dir, env: { 'BAD=NAME': 'x' } }), {
    code: 'IMAGE_RUNTIME_CONFIG',
  });
  await assert.rejects(buildRuntimeSpec({ config, rootfs: dir, user: 'nosuchuser' }), {
    code: 'IMAGE_RUNTIME_CONFIG',
  });
  await assert.rejects(
    buildRuntimeSpec({
      config,
      rootfs: dir,
      files: [{ containerPath: '/etc/../x', hostPath: '/y' }],
    }),
    { code: 'IMAGE_RUNTIME_CONFIG' },
  );
  assert.equal(spawnSync('true').status, 0);
});
