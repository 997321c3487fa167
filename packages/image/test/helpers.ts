/** Shared helpers of the image tests: tool discovery, the busybox test image, key files. */
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

export const repoRoot = new URL('../../../', import.meta.url).pathname;

/** True when `bin` is on PATH. */
export function have(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

/** Skips the test loudly when a binary is missing. Returns true when skipped. */
export function skipWithout(t: TestContext, ...bins: string[]): boolean {
  const missing = bins.filter((b) => !have(b));
  if (missing.length === 0) return false;
  const msg = `SKIPPED: ${missing.join(', ')} not installed (apt-get install ${missing.join(' ')})`;
  console.error(`\n*** ${msg} ***\n`);
  t.skip(msg);
  return true;
}

export function tempDir(
  t: { after(fn: () => void): void },
  prefix = 'cloister-image-test-',
): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Builds the busybox test image with scripts/build-test-image.sh; returns the layout dir. */
export function buildBusybox(dir: string): string {
  execFileSync(join(repoRoot, 'scripts', 'build-test-image.sh'), [dir], { stdio: 'pipe' });
  return join(dir, 'busybox');
}

export interface KeyFiles {
  pub: string;
  priv: string;
}

/** Writes a key pair as PEM files (`rsa`, `ec256`, `ec384`). */
export function keyPair(
  dir: string,
  kind: 'rsa' | 'ec256' | 'ec384',
  name: string = kind,
): KeyFiles {
  const kp =
    kind === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: kind === 'ec256' ? 'P-256' : 'P-384' });
  const pub = join(dir, `${name}.pub.pem`);
  const priv = join(dir, `${name}.pem`);
  writeFileSync(pub, kp.publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(priv, kp.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return { pub, priv };
}

/** Writes an executable that runs `cloister keyprovider` and an ocicrypt config naming it. */
export function keyproviderConfig(dir: string): string {
  const script = join(dir, 'cloister-keyprovider.sh');
  writeFileSync(
    script,
    `#!/bin/sh\ncd '${repoRoot}' && exec '${process.execPath}' --conditions=source --import tsx packages/image/test/keyprovider-bin.ts\n`,
  );
  chmodSync(script, 0o755);
  const config = join(dir, 'ocicrypt.json');
  writeFileSync(
    config,
    JSON.stringify({ 'key-providers': { cloister: { cmd: { path: script, args: [] } } } }),
  );
  return config;
}

/** Runs skopeo, throwing with its stderr on failure. */
export function skopeo(args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync('skopeo', ['--insecure-policy', ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Reads the manifest and config of the tagged image in a layout (plain JSON, for assertions). */
export function layoutImage(
  dir: string,
  tag?: string,
): {
  manifestDigest: string;
  manifest: {
    config: { digest: string };
    layers: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
  };
  diffIds: string[];
} {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const entry =
    tag === undefined
      ? index.manifests[0]
      : index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (entry === undefined) throw new Error('no such tag');
  const blob = (d: string): string =>
    readFileSync(join(dir, 'blobs', 'sha256', d.slice(7)), 'utf8');
  const manifest = JSON.parse(blob(entry.digest)) as ReturnType<typeof layoutImage>['manifest'];
  const config = JSON.parse(blob(manifest.config.digest)) as { rootfs: { diff_ids: string[] } };
  return { manifestDigest: entry.digest, manifest, diffIds: config.rootfs.diff_ids };
}
