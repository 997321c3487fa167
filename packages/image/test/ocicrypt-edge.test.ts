/**
 * Edge cases of the image formats and the ocicrypt key schemes, as other tools produce them:
 * a layout left without `index.json` or holding entries this reader does not model,
 * docker-archives re-packed with `tar` or carrying duplicate members and absolute symlinks, and
 * a keyprovider asked to wrap to several coordinator keys.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  DockerArchiveSource,
  OciLayoutDestination,
  OciLayoutSource,
  PROVIDER_KEYS_ANNOTATION,
  copyImage,
  handleKeyproviderRequest,
  loadPrivateKey,
  newPrivateOptions,
  parsePrivateOptions,
  serializePrivateOptions,
  unwrapLayerKey,
  type Digest,
} from '@cloister/image';
import { makeLayout, makeTar, type Entry } from './fixtures.js';
import { keyPair, layoutImage, tempDir } from './helpers.js';

const sha = (b: Buffer | string): string =>
  `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('a layout with oci-layout but no index.json is IMAGE_NOT_FOUND, and a destination again', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'plain'), [[{ name: 'a', content: 'b' }]]);
  // The user made the destination directory; the first copy fails midway (here: the source
  // layer is damaged), which leaves the layout marker and no index.
  const dst = join(dir, 'out');
  mkdirSync(dst);
  const broken = await makeLayout(join(dir, 'broken'), [[{ name: 'a', content: 'b' }]]);
  const layer = layoutImage(broken.dir).manifest.layers[0]?.digest ?? '';
  writeFileSync(join(broken.dir, 'blobs', 'sha256', layer.slice(7)), 'not the layer');
  await assert.rejects(
    copyImage(new OciLayoutSource(broken.dir, 'latest'), new OciLayoutDestination(dst, 'x')),
    { code: 'IMAGE_DIGEST_MISMATCH' },
  );
  await assert.rejects(new OciLayoutSource(dst).getManifest(), { code: 'IMAGE_NOT_FOUND' });
  // Retrying into the same directory works.
  await copyImage(new OciLayoutSource(plain.dir, 'latest'), new OciLayoutDestination(dst, 'x'));
  assert.equal(layoutImage(dst, 'x').manifestDigest, plain.manifestDigest);
});

async function dockerArchive(dir: string, members: Entry[]): Promise<string> {
  const file = join(dir, `archive-${Math.random().toString(16).slice(2)}.tar`);
  writeFileSync(file, await makeTar(members));
  return file;
}

function dockerImage(layer: Buffer): { config: string; diffId: string } {
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [sha(layer)] },
  });
  return { config, diffId: sha(layer) };
}

test('docker-archive re-packed with tar (a "./" member) is read', async (t) => {
  const dir = tempDir(t);
  const layer = await makeTar([{ name: 'x', content: 'y' }]);
  const { config } = dockerImage(layer);
  const file = await dockerArchive(dir, [
    { name: './', type: 'directory' },
    { name: './l/', type: 'directory' },
    { name: './l/layer.tar', content: layer },
    { name: './c.json', content: config },
    {
      name: './manifest.json',
      content: JSON.stringify([{ Config: 'c.json', RepoTags: ['a:b'], Layers: ['l/layer.tar'] }]),
    },
  ]);
  const src = new DockerArchiveSource(file);
  t.after(() => src.close());
  const m = JSON.parse(Buffer.from((await src.getManifest()).bytes).toString()) as {
    layers: { digest: string }[];
  };
  assert.equal(m.layers[0]?.digest, sha(layer));
});

test('docker-archive: a later member of the same name replaces the earlier one, as docker load does', async (t) => {
  const dir = tempDir(t);
  const benign = await makeTar([{ name: 'benign', content: '1' }]);
  const other = await makeTar([{ name: 'other', content: '2' }]);
  // The config names `other` as the layer: the archive is consistent only when the later
  // `layer.tar` member (a symlink to other.tar) is the one that counts.
  const { config } = dockerImage(other);
  const manifest = JSON.stringify([{ Config: 'c.json', RepoTags: [], Layers: ['layer.tar'] }]);
  const symlinkLast = await dockerArchive(dir, [
    { name: 'layer.tar', content: benign },
    { name: 'other.tar', content: other },
    { name: 'layer.tar', type: 'symlink', linkname: 'other.tar' },
    { name: 'c.json', content: config },
    { name: 'manifest.json', content: manifest },
  ]);
  const a = new DockerArchiveSource(symlinkLast);
  t.after(() => a.close());
  const ma = JSON.parse(Buffer.from((await a.getManifest()).bytes).toString()) as {
    layers: { digest: string }[];
  };
  assert.equal(ma.layers[0]?.digest, sha(other));

  // And the other way round: a file after a symlink of the same name is the file.
  const fileLast = await dockerArchive(dir, [
    { name: 'benign.tar', content: benign },
    { name: 'layer.tar', type: 'symlink', linkname: 'benign.tar' },
    { name: 'layer.tar', content: other },
    { name: 'c.json', content: config },
    { name: 'manifest.json', content: manifest },
  ]);
  const b = new DockerArchiveSource(fileLast);
  t.after(() => b.close());
  const mb = JSON.parse(Buffer.from((await b.getManifest()).bytes).toString()) as {
    layers: { digest: string }[];
  };
  assert.equal(mb.layers[0]?.digest, sha(other));

  // A hard link is the file its target was when the link was extracted.
  const hardLink = await dockerArchive(dir, [
    { name: 'a.tar', content: other },
    { name: 'layer.tar', type: 'link', linkname: 'a.tar' },
    { name: 'a.tar', content: benign },
    { name: 'c.json', content: config },
    { name: 'manifest.json', content: manifest },
  ]);
  const c = new DockerArchiveSource(hardLink);
  t.after(() => c.close());
  const mc = JSON.parse(Buffer.from((await c.getManifest()).bytes).toString()) as {
    layers: { digest: string }[];
  };
  assert.equal(mc.layers[0]?.digest, sha(other));
});

test('keyprovider keywrap wraps to every provider:cloister key skopeo was given', async (t) => {
  const dir = tempDir(t);
  const k1 = keyPair(dir, 'ec256', 'k1');
  const k2 = keyPair(dir, 'rsa', 'k2');
  const opts = serializePrivateOptions(newPrivateOptions(`sha256:${'ab'.repeat(32)}` as Digest));
  // `--encryption-key provider:cloister:k1 --encryption-key provider:cloister:k2` gives one
  // call with both parameters (ocicrypt EncryptWithKeyProvider).
  const out = await handleKeyproviderRequest(
    new Uint8Array(
      Buffer.from(
        JSON.stringify({
          op: 'keywrap',
          keywrapparams: {
            ec: {
              Parameters: {
                cloister: [
                  Buffer.from(k1.pub).toString('base64'),
                  Buffer.from(k2.pub).toString('base64'),
                ],
              },
              DecryptConfig: { Parameters: null },
            },
            optsdata: Buffer.from(opts).toString('base64'),
          },
        }),
      ),
    ),
    { env: {} },
  );
  const annotation = (
    JSON.parse(Buffer.from(out).toString()) as { keywrapresults: { annotation: string } }
  ).keywrapresults.annotation;
  for (const k of [k1, k2]) {
    const key = loadPrivateKey(new Uint8Array(readFileSync(k.priv)));
    const back = await unwrapLayerKey({ [PROVIDER_KEYS_ANNOTATION]: annotation }, [key]);
    assert.deepEqual(back, parsePrivateOptions(opts));
  }
});

test('docker-archive: an absolute symlink member resolves from the archive root', async (t) => {
  const dir = tempDir(t);
  const layer = await makeTar([{ name: 'x', content: 'y' }]);
  const decoy = await makeTar([{ name: 'decoy', content: 'z' }]);
  const { config } = dockerImage(layer);
  const file = await dockerArchive(dir, [
    { name: 'blobs/layer.tar', content: layer },
    // Resolved inside the archive as docker load does, `/blobs/layer.tar` is the layer above,
    // not `l/blobs/layer.tar`.
    { name: 'l/blobs/layer.tar', content: decoy },
    { name: 'l/layer.tar', type: 'symlink', linkname: '/blobs/layer.tar' },
    { name: 'c.json', content: config },
    {
      name: 'manifest.json',
      content: JSON.stringify([{ Config: 'c.json', RepoTags: [], Layers: ['l/layer.tar'] }]),
    },
  ]);
  const src = new DockerArchiveSource(file);
  t.after(() => src.close());
  const m = JSON.parse(Buffer.from((await src.getManifest()).bytes).toString()) as {
    layers: { digest: string }[];
  };
  assert.equal(m.layers[0]?.digest, sha(layer));
});

test('committing to a layout keeps the other index entries as they were', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'plain'), [[{ name: 'a', content: 'b' }]]);
  const dst = await makeLayout(join(dir, 'dst'), [[{ name: 'c', content: 'd' }]], { tag: 'old' });
  // Fields this reader does not model (an artifact's type, a Windows platform's os.version)
  // belong to other images: rewriting index.json must not drop them.
  const index = JSON.parse(readFileSync(join(dst.dir, 'index.json'), 'utf8')) as {
    manifests: Record<string, unknown>[];
  };
  const other = {
    ...index.manifests[0],
    artifactType: 'application/vnd.example.sbom',
    platform: { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' },
    urls: ['https://example.com/x'],
  };
  index.manifests = [other];
  writeFileSync(join(dst.dir, 'index.json'), JSON.stringify(index));
  await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new OciLayoutDestination(dst.dir, 'new'),
  );
  const after = JSON.parse(readFileSync(join(dst.dir, 'index.json'), 'utf8')) as {
    manifests: Record<string, unknown>[];
  };
  assert.equal(after.manifests.length, 2);
  assert.deepEqual(after.manifests[0], other);
  assert.equal(layoutImage(dst.dir, 'new').manifestDigest, plain.manifestDigest);
});
