/**
 * Image workload edge cases that need no coordinator: what the agent hands runc, recorded by a
 * stand-in for runc. runc is the measured program of an image workload, so the host's
 * environment reaches it only as it reaches a program (docs/agent.md "Environment and
 * arguments"), and the image key stays with the agent however the host spells its path.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import type { ActivationBundle } from '@cloister/protocol';
import { makeLayout } from '../../image/test/fixtures.js';
import { openWorkloadImage, runImageWorkload } from '../src/image-workload.js';

/** Host variables that would load code into runc, or change what it loads. */
const HOSTILE: Record<string, string> = {
  LD_PRELOAD: '',
  LD_LIBRARY_PATH: '/nonexistent-cloister-test',
  GCONV_PATH: '/nonexistent-cloister-test',
  BASH_ENV: '/nonexistent-cloister-test',
};

interface Seen {
  env: Map<string, string>;
  mounts: { destination: string; source?: string }[];
}

/**
 * Runs a plain (unencrypted, so keyless) image through `runImageWorkload` with a runc that
 * records its environment and the bundle's config.json, and exits 0.
 */
async function runRecorded(
  t: TestContext,
  o: { files?: Record<string, string>; keyFile?: string } = {},
): Promise<Seen> {
  const dir = mkdtempSync(join(tmpdir(), 'cloister-pull-edge-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const layout = await makeLayout(join(dir, 'image'), [[{ name: 'etc/who', content: 'me' }]]);
  const seenEnv = join(dir, 'runc-env');
  const seenConfig = join(dir, 'runc-config.json');
  const runc = join(dir, 'runc');
  // `runc run --bundle DIR ID` records; `runc delete` does nothing.
  writeFileSync(
    runc,
    `#!/bin/sh\nif [ "$1" = run ]; then env > '${seenEnv}'; cp "$3/config.json" '${seenConfig}'; fi\nexit 0\n`,
  );
  chmodSync(runc, 0o755);
  const filesRoot = mkdtempSync(join(dir, 'files-'));
  const work = mkdtempSync(join(dir, 'work-'));
  const source = `oci:${layout.dir}:latest`;
  const image = await openWorkloadImage(source);
  t.after(() => image.close());
  const status = await runImageWorkload({
    image: {
      source,
      manifestDigest: layout.manifestDigest,
      runc,
      workDir: work,
      ...(o.keyFile === undefined ? {} : { keyFile: o.keyFile }),
    },
    workloadImage: image,
    manifestImage: { ref: 'oci:image', manifestDigest: layout.manifestDigest },
    bundle: {
      files: o.files ?? {},
      env: {},
      args: [],
      // No layer of a plain image needs a key.
      layerKeys: {},
    } as unknown as ActivationBundle,
    filesRoot,
  });
  assert.equal(status, 0);
  // Rootfs, staging and bundle are gone.
  assert.deepEqual(readdirSync(work), []);
  const env = new Map(
    readFileSync(seenEnv, 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );
  const config = JSON.parse(readFileSync(seenConfig, 'utf8')) as { mounts: Seen['mounts'] };
  return { env, mounts: config.mounts };
}

test('runc does not inherit the host loader variables', async (t) => {
  const saved = Object.fromEntries(Object.keys(HOSTILE).map((k) => [k, process.env[k]]));
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  Object.assign(process.env, HOSTILE);
  const { env } = await runRecorded(t);
  for (const k of Object.keys(HOSTILE)) assert.equal(env.has(k), false, `${k} reached runc`);
  // The rest of the environment is runc's as before (PATH, for one).
  assert.equal(env.get('PATH'), process.env['PATH']);
});

test('the image key is not mounted into the container, however --image-key spells it', async (t) => {
  const KEY = '/run/cloister/image-key.pem';
  const files = { [KEY]: 'a2V5', '/run/cloister/greeting': 'aGk' };
  for (const keyFile of [KEY, '/run//cloister/image-key.pem', '/run/cloister/image-key.pem/']) {
    const { mounts } = await runRecorded(t, { files, keyFile });
    const destinations = mounts.map((m) => m.destination);
    assert.equal(destinations.includes('/run/cloister/greeting'), true);
    assert.equal(
      mounts.some((m) => m.destination === KEY || (m.source ?? '').endsWith('image-key.pem')),
      false,
      `the image key is mounted with --image-key ${keyFile}`,
    );
  }
});
