/**
 * Key release edge cases (docs/images.md "Key release"): what the coordinator accepts as "the
 * pinned image" when the agent resolved it through an index. The manifest's digest is what the
 * owner pins (`cloister image inspect` prints a child's digest for a multi-platform tag), so a
 * manifest whose bytes hash to the pin gets its keys whatever index led the agent to it; an
 * index only widens the pin when it is itself the pinned digest.
 */
import { strict as assert } from 'node:assert';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { OciLayoutDestination, OciLayoutSource, copyImage, loadPublicKey } from '@cloister/image';
import type { ReferenceValues } from '@cloister/image';
import type { ImageKeyRequest, Manifest } from '@cloister/protocol';
import { makeLayout } from '../../image/test/fixtures.js';
import { releaseImageKeys } from '../src/image-keys.js';
import type { ImageKey } from '../src/image-keys.js';

type WorkloadImage = Manifest['workloads'][string]['image'];

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

function imageKey(): ImageKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey,
    publicKeyPem: String(createPublicKey(privateKey).export({ format: 'pem', type: 'spki' })),
  };
}

interface Encrypted {
  rv: ReferenceValues;
  manifest: Uint8Array;
}

/** An image encrypted to the coordinator key; its manifest bytes as the agent would send them. */
async function encrypted(
  t: { after(fn: () => void): void },
  key: ImageKey,
  name: string,
): Promise<Encrypted> {
  const dir = mkdtempSync(join(tmpdir(), 'cloister-image-keys-edge-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const plain = await makeLayout(join(dir, 'plain'), [[{ name: 'etc/who', content: name }]]);
  const enc = join(dir, 'enc');
  const rv = await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new OciLayoutDestination(enc, 'v1'),
    { coordinatorKey: loadPublicKey(new Uint8Array(Buffer.from(key.publicKeyPem)), 'key') },
  );
  const manifest = new Uint8Array(
    readFileSync(join(enc, 'blobs', 'sha256', rv.manifestDigest.slice('sha256:'.length))),
  );
  return { rv, manifest };
}

/** A multi-platform index listing `children` (amd64 first), as a registry tag would serve it. */
function indexOf(children: readonly Uint8Array[]): Uint8Array {
  const arches = ['amd64', 'arm64', 's390x'];
  return new Uint8Array(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: children.map((m, i) => ({
          mediaType: OCI_MANIFEST,
          digest: sha(m),
          size: m.length,
          platform: { os: 'linux', architecture: arches[i] },
        })),
      }),
    ),
  );
}

function request(manifest: Uint8Array, index?: Uint8Array): ImageKeyRequest {
  return {
    manifest: b64u(manifest),
    manifestMediaType: OCI_MANIFEST,
    ...(index === undefined ? {} : { index: b64u(index), indexMediaType: OCI_INDEX }),
  };
}

const pin = (manifestDigest: string): WorkloadImage => ({ ref: 'docker://r/x:1', manifestDigest });

function refusal(code: string, rule?: string) {
  return (e: unknown): boolean => {
    const err = e as { code?: string; details?: { rule?: string } };
    assert.equal(err.code, code);
    if (rule !== undefined) assert.equal(err.details?.rule, rule);
    return true;
  };
}

test('a pinned manifest reached through an unpinned index still gets its keys', async (t) => {
  const key = imageKey();
  const shop = await encrypted(t, key, 'shop');
  const other = await encrypted(t, key, 'other');
  const index = indexOf([shop.manifest, other.manifest]);
  const released = await releaseImageKeys(
    pin(shop.rv.manifestDigest),
    request(shop.manifest, index),
    key,
  );
  assert.deepEqual(Object.keys(released ?? {}).sort(), [...shop.rv.encryptedLayers].sort());
});

test('a pinned index releases the keys of a manifest it lists, and only those', async (t) => {
  const key = imageKey();
  const shop = await encrypted(t, key, 'shop');
  const other = await encrypted(t, key, 'other');
  const stranger = await encrypted(t, key, 'stranger');
  const index = indexOf([shop.manifest, other.manifest]);
  const released = await releaseImageKeys(pin(sha(index)), request(other.manifest, index), key);
  assert.deepEqual(Object.keys(released ?? {}).sort(), [...other.rv.encryptedLayers].sort());
  await assert.rejects(
    releaseImageKeys(pin(sha(index)), request(stranger.manifest, index), key),
    refusal('COORDINATOR_IMAGE_MISMATCH', 'image.manifestDigest'),
  );
});

test('an index listing the pinned manifest does not release a sibling of it', async (t) => {
  const key = imageKey();
  const shop = await encrypted(t, key, 'shop');
  const other = await encrypted(t, key, 'other');
  // Workload pins `shop`; an agent (or whoever answers for the registry) sends `other` with an
  // index that lists both: `other` is not the pinned image, and the index is not pinned.
  const index = indexOf([shop.manifest, other.manifest]);
  await assert.rejects(
    releaseImageKeys(pin(shop.rv.manifestDigest), request(other.manifest, index), key),
    refusal('COORDINATOR_IMAGE_MISMATCH', 'image.manifestDigest'),
  );
  await assert.rejects(
    releaseImageKeys(pin(shop.rv.manifestDigest), request(other.manifest), key),
    refusal('COORDINATOR_IMAGE_MISMATCH', 'image.manifestDigest'),
  );
});

test('a pinned manifest sent as the index, or an index sent as the manifest, is refused', async (t) => {
  const key = imageKey();
  const shop = await encrypted(t, key, 'shop');
  const index = indexOf([shop.manifest]);
  await assert.rejects(
    releaseImageKeys(pin(shop.rv.manifestDigest), request(index, shop.manifest), key),
    refusal('COORDINATOR_IMAGE_MISMATCH'),
  );
  await assert.rejects(
    releaseImageKeys(pin(sha(index)), request(index), key),
    refusal('COORDINATOR_IMAGE_MISMATCH'),
  );
});
