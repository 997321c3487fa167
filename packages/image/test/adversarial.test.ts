/**
 * Hostile images: every attack is refused with a typed error, and nothing appears outside the
 * staging directory (the rootfs never appears, no file lands outside it).
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import {
  OciLayoutDestination,
  OciLayoutSource,
  DockerArchiveSource,
  PUBOPTS_ANNOTATION,
  copyImage,
  keyUnwrapper,
  loadPrivateKey,
  loadPublicKey,
  pullImage,
  releaseLayerKeys,
  releasedKeyUnwrapper,
  unpackRootfs,
  wrappedLayerKeys,
  serializePublicOptions,
  type Digest,
} from '@cloister/image';
import { makeLayout, makeTar, type Entry } from './fixtures.js';
import { tempDir } from './helpers.js';

const coord = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const coordPub = loadPublicKey(
  new Uint8Array(Buffer.from(coord.publicKey.export({ type: 'spki', format: 'pem' }))),
);
const coordPrivPem = new Uint8Array(
  Buffer.from(coord.privateKey.export({ type: 'pkcs8', format: 'pem' })),
);
const sha = (b: Buffer | string): string =>
  `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Json {
  [k: string]: unknown;
}

/** Rewrites the tagged manifest of a layout through `fn` (as an attacker controlling storage). */
function rewriteManifest(dir: string, fn: (m: Json) => Json): string {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Json[] };
  const entry = index.manifests[0] as Json;
  const m = JSON.parse(
    readFileSync(join(dir, 'blobs', 'sha256', (entry.digest as string).slice(7)), 'utf8'),
  ) as Json;
  const out = JSON.stringify(fn(m));
  const d = sha(out);
  writeFileSync(join(dir, 'blobs', 'sha256', d.slice(7)), out);
  entry.digest = d;
  entry.size = Buffer.byteLength(out);
  writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
  return d;
}

const layers = (m: Json): Json[] => m.layers as Json[];
const blobPath = (dir: string, d: string): string => join(dir, 'blobs', 'sha256', d.slice(7));

async function encryptedImage(t: { after(fn: () => void): void }, layerEntries: Entry[][]) {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'plain'), layerEntries);
  const enc = join(dir, 'enc');
  const rv = await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new OciLayoutDestination(enc, 'latest'),
    {
      coordinatorKey: coordPub,
    },
  );
  return { dir, enc, rv, plain };
}

function pullInto(dir: string, enc: string, manifestDigest: string, extra: Json = {}) {
  const rootfs = join(dir, 'out', 'rootfs');
  mkdirSync(join(dir, 'out'), { recursive: true });
  mkdirSync(join(dir, 'staging'), { recursive: true });
  const run = pullImage({
    source: new OciLayoutSource(enc, 'latest'),
    expected: { manifestDigest: manifestDigest as Digest },
    unwrap: keyUnwrapper([coord.privateKey]),
    rootfs,
    stagingDir: join(dir, 'staging'),
    ...extra,
  });
  return { rootfs, run };
}

/** Asserts a failed pull left no rootfs, no staging leftovers and nothing new outside. */
function assertNothingWritten(dir: string, rootfs: string): void {
  assert.equal(existsSync(rootfs), false, 'rootfs must not appear');
  assert.deepEqual(readdirSync(join(dir, 'out')), [], 'no staging directory left behind');
  assert.deepEqual(readdirSync(join(dir, 'staging')), [], 'no staged layer left behind');
}

const base: Entry[] = [
  { name: 'etc/' },
  { name: 'etc/hostname', content: 'box\n' },
  { name: 'bin/' },
  { name: 'bin/tool', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
];

test('an encrypted image pulls, verifies and unpacks (local keys and key release)', async (t) => {
  const { dir, enc, rv, plain } = await encryptedImage(t, [
    base,
    [{ name: 'etc/motd', content: 'hello\n' }],
  ]);
  assert.deepEqual(rv.diffIds, plain.diffIds);
  const { rootfs, run } = pullInto(dir, enc, rv.manifestDigest);
  const r = await run;
  assert.equal(readFileSync(join(rootfs, 'etc/motd'), 'utf8'), 'hello\n');
  assert.equal(lstatSync(join(rootfs, 'bin/tool')).mode & 0o777, 0o755);
  assert.deepEqual(r.unpacked.diffIds, plain.diffIds);

  // Key release: agent extracts wrapped keys, coordinator unwraps only allowed layers.
  const manifest = JSON.parse(readFileSync(blobPath(enc, rv.manifestDigest), 'utf8')) as Json;
  const { parseManifestOrIndex } = await import('@cloister/image');
  const parsed = parseManifestOrIndex(new Uint8Array(Buffer.from(JSON.stringify(manifest))));
  assert.equal(parsed.kind, 'manifest');
  if (parsed.kind !== 'manifest') return;
  const requests = wrappedLayerKeys(parsed.layers);
  const { released, notWrapped } = await releaseLayerKeys(
    requests,
    [coord.privateKey],
    rv.encryptedLayers,
  );
  assert.deepEqual(notWrapped, []);
  const rootfs2 = join(dir, 'out', 'rootfs2');
  await pullImage({
    source: new OciLayoutSource(enc, 'latest'),
    expected: {
      manifestDigest: rv.manifestDigest,
      configDigest: rv.configDigest,
      diffIds: rv.diffIds,
    },
    unwrap: releasedKeyUnwrapper(released),
    rootfs: rootfs2,
    stagingDir: join(dir, 'staging'),
  });
  assert.equal(readFileSync(join(rootfs2, 'etc/hostname'), 'utf8'), 'box\n');
  await assert.rejects(
    releaseLayerKeys(requests, [coord.privateKey], [rv.encryptedLayers[0] as string]),
    {
      code: 'IMAGE_NO_KEY',
    },
  );
  // A key no layer is wrapped to releases nothing and names every layer.
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  assert.deepEqual(await releaseLayerKeys(requests, [stranger], rv.encryptedLayers), {
    released: {},
    notWrapped: [...rv.encryptedLayers],
  });
});

test('tampered ciphertext (descriptor unchanged) is refused: digest', async (t) => {
  const { dir, enc, rv } = await encryptedImage(t, [base]);
  const l = rv.layers[0];
  assert.ok(l);
  const b = readFileSync(blobPath(enc, l.digest));
  b[10] = (b[10] ?? 0) ^ 1;
  writeFileSync(blobPath(enc, l.digest), b);
  const { rootfs, run } = pullInto(dir, enc, rv.manifestDigest);
  await assert.rejects(run, { code: 'IMAGE_DIGEST_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('tampered ciphertext with a rewritten manifest is refused: HMAC', async (t) => {
  const { dir, enc, rv } = await encryptedImage(t, [base]);
  const l = rv.layers[0];
  assert.ok(l);
  const b = readFileSync(blobPath(enc, l.digest));
  b[10] = (b[10] ?? 0) ^ 1;
  writeFileSync(blobPath(enc, sha(b)), b);
  const md = rewriteManifest(enc, (m) => {
    const x = layers(m)[0] as Json;
    x.digest = sha(b);
    return m;
  });
  const { rootfs, run } = pullInto(dir, enc, md);
  await assert.rejects(run, { code: 'IMAGE_ENC_HMAC_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('a wrong HMAC in pubopts is refused', async (t) => {
  const { dir, enc } = await encryptedImage(t, [base]);
  const md = rewriteManifest(enc, (m) => {
    const a = (layers(m)[0] as Json).annotations as Record<string, string>;
    a[PUBOPTS_ANNOTATION] = serializePublicOptions(new Uint8Array(32).fill(7));
    return m;
  });
  const { rootfs, run } = pullInto(dir, enc, md);
  await assert.rejects(run, { code: 'IMAGE_ENC_HMAC_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('swapped layers are refused: diff_id', async (t) => {
  const { dir, enc } = await encryptedImage(t, [base, [{ name: 'etc/motd', content: 'x' }]]);
  const md = rewriteManifest(enc, (m) => {
    m.layers = [...layers(m)].reverse();
    return m;
  });
  const { rootfs, run } = pullInto(dir, enc, md);
  await assert.rejects(run, { code: 'IMAGE_DIFF_ID_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('a wrong diff_id in the config is refused', async (t) => {
  const { dir, enc, rv } = await encryptedImage(t, [base]);
  const cfg = JSON.parse(readFileSync(blobPath(enc, rv.configDigest), 'utf8')) as {
    rootfs: { diff_ids: string[] };
  };
  cfg.rootfs.diff_ids = [sha('something else')];
  const cfgBytes = JSON.stringify(cfg);
  writeFileSync(blobPath(enc, sha(cfgBytes)), cfgBytes);
  const md = rewriteManifest(enc, (m) => {
    m.config = { ...(m.config as Json), digest: sha(cfgBytes), size: Buffer.byteLength(cfgBytes) };
    return m;
  });
  const { rootfs, run } = pullInto(dir, enc, md);
  await assert.rejects(run, { code: 'IMAGE_DIFF_ID_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('a layer that does not match its diff_id: convert and decrypt refuse it unless told not to check, and the pull refuses it always', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'plain'), [base]);
  const cfg = JSON.parse(readFileSync(blobPath(plain.dir, plain.configDigest), 'utf8')) as {
    rootfs: { diff_ids: string[] };
  };
  cfg.rootfs.diff_ids = [sha('something else')];
  const cfgBytes = JSON.stringify(cfg);
  writeFileSync(blobPath(plain.dir, sha(cfgBytes)), cfgBytes);
  rewriteManifest(plain.dir, (m) => {
    m.config = { ...(m.config as Json), digest: sha(cfgBytes), size: Buffer.byteLength(cfgBytes) };
    return m;
  });
  const copy = (to: string, verifyDiffIds?: boolean) =>
    copyImage(new OciLayoutSource(plain.dir, 'latest'), new OciLayoutDestination(to, 'latest'), {
      coordinatorKey: coordPub,
      ...(verifyDiffIds === undefined ? {} : { verifyDiffIds }),
    });
  await assert.rejects(copy(join(dir, 'checked')), { code: 'IMAGE_DIFF_ID_MISMATCH' });
  const enc = join(dir, 'unchecked');
  const rv = await copy(enc, false);
  const { rootfs, run } = pullInto(dir, enc, rv.manifestDigest);
  await assert.rejects(run, { code: 'IMAGE_DIFF_ID_MISMATCH' });
  assertNothingWritten(dir, rootfs);

  const decrypt = (to: string, verifyDiffIds?: boolean) =>
    copyImage(new OciLayoutSource(enc, 'latest'), new OciLayoutDestination(to, 'latest'), {
      decryptKeys: [loadPrivateKey(coordPrivPem)],
      ...(verifyDiffIds === undefined ? {} : { verifyDiffIds }),
    });
  await assert.rejects(decrypt(join(dir, 'decrypted')), { code: 'IMAGE_DIFF_ID_MISMATCH' });
  assert.equal(existsSync(join(dir, 'decrypted', 'index.json')), false);
  const back = await decrypt(join(dir, 'decrypted-unchecked'), false);
  assert.deepEqual(back.diffIds, [sha('something else')]);
});

test('a manifest that is not the pinned one is refused', async (t) => {
  const { dir, enc } = await encryptedImage(t, [base]);
  const { rootfs, run } = pullInto(dir, enc, sha('another manifest'));
  await assert.rejects(run, { code: 'IMAGE_DIGEST_MISMATCH' });
  assertNothingWritten(dir, rootfs);
});

test('an oversized manifest is refused before parsing', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'img'), [base]);
  rewriteManifest(plain.dir, (m) => ({ ...m, annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } }));
  await assert.rejects(new OciLayoutSource(plain.dir, 'latest').getManifest(), {
    code: 'IMAGE_TOO_LARGE',
  });
});

test('duplicate JSON keys in a manifest are refused', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'img'), [base]);
  const mPath = blobPath(plain.dir, plain.manifestDigest);
  const text = readFileSync(mPath, 'utf8').replace(
    '{"schemaVersion":2,',
    '{"schemaVersion":2,"schemaVersion":2,',
  );
  rewriteManifest(plain.dir, () => JSON.parse(text) as Json);
  const md = sha(text);
  writeFileSync(blobPath(plain.dir, md), text);
  const index = JSON.parse(readFileSync(join(plain.dir, 'index.json'), 'utf8')) as {
    manifests: Json[];
  };
  (index.manifests[0] as Json).digest = md;
  (index.manifests[0] as Json).size = Buffer.byteLength(text);
  writeFileSync(join(plain.dir, 'index.json'), JSON.stringify(index));
  await assert.rejects(
    copyImage(new OciLayoutSource(plain.dir, 'latest'), new OciLayoutDestination(join(dir, 'o'))),
    {
      code: 'IMAGE_MALFORMED',
    },
  );
  assert.equal(existsSync(join(dir, 'o')), false, 'failed copy leaves no destination');
});

// ---- unpack attacks: each layer alone, through unpackRootfs ----

async function unpackEntries(t: { after(fn: () => void): void }, layerList: Entry[][]) {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'out'));
  mkdirSync(join(dir, 'outside'));
  const tars = await Promise.all(layerList.map((l) => makeTar(l)));
  const rootfs = join(dir, 'out', 'rootfs');
  const run = unpackRootfs(
    rootfs,
    tars.map((b) => ({ open: () => Readable.from([b]), compression: 'none' as const })),
  );
  return { dir, rootfs, run };
}

function assertContained(dir: string, rootfs: string): void {
  assert.equal(existsSync(rootfs), false, 'rootfs must not appear');
  assert.deepEqual(readdirSync(join(dir, 'out')), [], 'staging removed');
  assert.deepEqual(readdirSync(join(dir, 'outside')), [], 'nothing written outside');
}

for (const [name, entries, code] of [
  ['../ in a name', [{ name: '../outside/pwned', content: 'x' }], 'IMAGE_UNPACK_PATH_TRAVERSAL'],
  ['nested ../', [{ name: 'a/../../outside/pwned', content: 'x' }], 'IMAGE_UNPACK_PATH_TRAVERSAL'],
  [
    'relative symlink above the root, then a write through it',
    [
      { name: 'evil', type: 'symlink', linkname: '../outside' },
      { name: 'evil/pwned', content: 'x' },
    ],
    'IMAGE_UNPACK_LINK_ESCAPE',
  ],
  [
    'hard link with ../',
    [{ name: 'h', type: 'link', linkname: '../outside/secret' }],
    'IMAGE_UNPACK_PATH_TRAVERSAL',
  ],
  [
    'hard link through a symlinked directory',
    [
      { name: 'd', type: 'symlink', linkname: '/etc' },
      { name: 'h', type: 'link', linkname: 'd/passwd' },
    ],
    'IMAGE_UNPACK_LINK_ESCAPE',
  ],
  [
    'character device',
    [{ name: 'dev/null', type: 'character-device' }],
    'IMAGE_UNPACK_SPECIAL_FILE',
  ],
  ['block device', [{ name: 'sda', type: 'block-device' }], 'IMAGE_UNPACK_SPECIAL_FILE'],
  ['fifo', [{ name: 'p', type: 'fifo' }], 'IMAGE_UNPACK_SPECIAL_FILE'],
] as [string, Entry[], string][]) {
  test(`unpack refuses ${name}`, async (t) => {
    const { dir, rootfs, run } = await unpackEntries(t, [[{ name: 'etc/' }, ...entries]]);
    await assert.rejects(run, { code });
    assertContained(dir, rootfs);
  });
}

test('unpack refuses the escape even when the symlink comes from a lower layer', async (t) => {
  const { dir, rootfs, run } = await unpackEntries(t, [
    [{ name: 'lib', type: 'symlink', linkname: '../../outside' }],
    [{ name: 'lib/pwned', content: 'x' }],
  ]);
  await assert.rejects(run, { code: 'IMAGE_UNPACK_LINK_ESCAPE' });
  assertContained(dir, rootfs);
});

test('absolute symlinks are re-rooted: writes through them stay inside the rootfs', async (t) => {
  const { dir, rootfs, run } = await unpackEntries(t, [
    [
      { name: 'usr/lib/' },
      { name: 'lib', type: 'symlink', linkname: '/usr/lib' },
      { name: 'var/' },
      { name: 'var/run', type: 'symlink', linkname: '/run' },
    ],
    [
      { name: 'lib/libx.so', content: 'elf' },
      { name: 'var/run/pid', content: '1' },
    ],
  ]);
  await run;
  assert.equal(readFileSync(join(rootfs, 'usr/lib/libx.so'), 'utf8'), 'elf');
  assert.equal(readFileSync(join(rootfs, 'run/pid'), 'utf8'), '1');
  assert.equal(readlinkSync(join(rootfs, 'lib')), '/usr/lib');
  assert.deepEqual(readdirSync(join(dir, 'outside')), []);
});

test('whiteouts and opaque directories are honoured', async (t) => {
  const { rootfs, run } = await unpackEntries(t, [
    [
      { name: 'a/' },
      { name: 'a/b', content: 'b' },
      { name: 'a/c', content: 'c' },
      { name: 'd/' },
      { name: 'd/e', content: 'e' },
      { name: 'd/sub/' },
      { name: 'd/sub/g', content: 'g' },
    ],
    [
      { name: 'a/.wh.b', content: '' },
      { name: 'd/' },
      { name: 'd/.wh..wh..opq', content: '' },
      { name: 'd/f', content: 'f' },
    ],
  ]);
  await run;
  assert.equal(existsSync(join(rootfs, 'a/b')), false);
  assert.equal(readFileSync(join(rootfs, 'a/c'), 'utf8'), 'c');
  assert.equal(existsSync(join(rootfs, 'd/e')), false);
  assert.equal(existsSync(join(rootfs, 'd/sub')), false);
  assert.equal(readFileSync(join(rootfs, 'd/f'), 'utf8'), 'f');
  assert.equal(existsSync(join(rootfs, 'a/.wh.b')), false);
});

test('unpack limits: entry count and total bytes', async (t) => {
  const dir = tempDir(t);
  const tarBytes = await makeTar([
    { name: 'a', content: 'x'.repeat(1000) },
    { name: 'b', content: 'y' },
  ]);
  await assert.rejects(
    unpackRootfs(
      join(dir, 'r1'),
      [{ open: () => Readable.from([tarBytes]), compression: 'none' }],
      {
        limits: { maxEntries: 1 },
      },
    ),
    { code: 'IMAGE_UNPACK_LIMIT' },
  );
  await assert.rejects(
    unpackRootfs(
      join(dir, 'r2'),
      [{ open: () => Readable.from([tarBytes]), compression: 'none' }],
      {
        limits: { maxBytes: 500 },
      },
    ),
    { code: 'IMAGE_UNPACK_LIMIT' },
  );
  assert.deepEqual(readdirSync(dir), []);
});

test('a layer that is not tar or not gzip is refused as malformed', async (t) => {
  const dir = tempDir(t);
  const junk = Buffer.alloc(2048, 0x41);
  await assert.rejects(
    unpackRootfs(join(dir, 'r1'), [{ open: () => Readable.from([junk]), compression: 'none' }]),
    { code: 'IMAGE_UNPACK_MALFORMED' },
  );
  await assert.rejects(
    unpackRootfs(join(dir, 'r2'), [{ open: () => Readable.from([junk]), compression: 'gzip' }]),
    { code: 'IMAGE_UNPACK_MALFORMED' },
  );
  assert.deepEqual(readdirSync(dir), []);
});

test('a refused docker-archive leaves no extracted files behind, closed or not', async (t) => {
  const dir = tempDir(t);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  const before = process.env['TMPDIR'];
  process.env['TMPDIR'] = tmp;
  t.after(() => {
    if (before === undefined) delete process.env['TMPDIR'];
    else process.env['TMPDIR'] = before;
  });
  const notArchive = join(dir, 'img.tar');
  writeFileSync(notArchive, await makeTar([{ name: 'hello.txt', content: 'no manifest.json' }]));
  await assert.rejects(new DockerArchiveSource(notArchive).getManifest(), {
    code: 'IMAGE_MALFORMED',
  });
  assert.deepEqual(readdirSync(tmp), []);
});
