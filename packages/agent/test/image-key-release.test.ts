/**
 * Image key release by the coordinator (docs/images.md "Key release"): an image converted to the
 * coordinator's image key (GET /v1/image-key) is decrypted by an attested agent of the workload
 * that pins it, with the layer keys released inside its activation bundle. Another image, a
 * workload that pins none, an image encrypted to a user's key and evidence that does not match
 * get no layer key.
 */
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { readFile, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { simMeasurement, toHex } from '@cloister/evidence';
import {
  OciLayoutDestination,
  OciLayoutSource,
  copyImage,
  loadPublicKey,
  pullImage,
  releasedKeyUnwrapper,
} from '@cloister/image';
import type { ReferenceValues } from '@cloister/image';
import { ImageKeyResponseSchema, checkBody, ZERO_HASH } from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import type { RunningCoordinator } from '../../coordinator/src/index.js';
import { signTransition, startFixture } from '../../coordinator/test/helpers.js';
import type { Fixture } from '../../coordinator/test/helpers.js';
import { makeLayout } from '../../image/test/fixtures.js';
import { activate } from '../src/activate.js';
import { CoordinatorClient } from '../src/coordinator-client.js';
import { openWorkloadImage } from '../src/image-workload.js';
import { simProvider } from '../src/providers/sim.js';

const EXE = new TextEncoder().encode('cloister image key release test');
let fixture: Fixture;
let tmp: string;
let simDir: string;
let coord: RunningCoordinator;
let pinned: ReferenceValues;
let pinnedSrc: string;
let otherSrc: string;
let userKeyedSrc: string;

async function encrypt(
  name: string,
  content: string,
  to: Parameters<typeof copyImage>[2],
): Promise<{ rv: ReferenceValues; src: string }> {
  const plain = await makeLayout(join(tmp, `${name}-plain`), [
    [{ name: 'etc/greeting', content }],
    [{ name: 'bin/app', content: `#!/bin/sh\necho ${name}\n` }],
  ]);
  const dir = join(tmp, name);
  const rv = await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new OciLayoutDestination(dir, 'v1'),
    to,
  );
  return { rv, src: `oci:${dir}:v1` };
}

before(async () => {
  fixture = await startFixture();
  ({ coord, simDir, dir: tmp } = fixture);
  const res = await coord.server.inject({ method: 'GET', url: '/v1/image-key' });
  assert.equal(res.statusCode, 200, res.body);
  const { publicKey } = checkBody(ImageKeyResponseSchema, res.json());
  const coordinatorKey = loadPublicKey(new Uint8Array(Buffer.from(publicKey)), 'image key');
  const user = await webcrypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, [
    'deriveBits',
  ]);
  const userPem = `-----BEGIN PUBLIC KEY-----\n${Buffer.from(
    await webcrypto.subtle.exportKey('spki', user.publicKey),
  ).toString('base64')}\n-----END PUBLIC KEY-----\n`;

  ({ rv: pinned, src: pinnedSrc } = await encrypt('shop', 'hello from the shop', {
    coordinatorKey,
  }));
  ({ src: otherSrc } = await encrypt('other', 'someone else', { coordinatorKey }));
  const userKeyed = await encrypt('userkeyed', 'for a user key', {
    recipients: [loadPublicKey(new Uint8Array(Buffer.from(userPem)), 'user key')],
  });
  userKeyedSrc = userKeyed.src;

  const measurement = toHex(await simMeasurement(EXE, []));
  const manifest = {
    version: 1,
    trustDomain: 'keys.test',
    packages: {
      app: { tee: 'sim', measurement },
      wrong: { tee: 'sim', measurement: '00'.repeat(48) },
    },
    workloads: {
      shop: { package: 'app', image: { ref: pinnedSrc, manifestDigest: pinned.manifestDigest } },
      userkeyed: {
        package: 'app',
        image: { ref: userKeyedSrc, manifestDigest: userKeyed.rv.manifestDigest },
      },
      noimage: { package: 'app' },
      impostor: {
        package: 'wrong',
        image: { ref: pinnedSrc, manifestDigest: pinned.manifestDigest },
      },
    },
    policy: { allowSimulation: true },
  } as Manifest;
  const sig = await signTransition(manifest, 0, ZERO_HASH, 'set', fixture.install);
  const put = await coord.server.inject({
    method: 'PUT',
    url: '/v1/manifest',
    payload: { manifest, signatures: [sig] },
  });
  assert.equal(put.statusCode, 200, put.body);
});

after(async () => {
  await fixture.cleanup();
});

async function activateWith(workload: string, imageSource: string) {
  const client = new CoordinatorClient({ url: coord.url, rootCa: coord.rootCaPem });
  const image = await openWorkloadImage(imageSource);
  try {
    return await activate({
      client,
      workload,
      provider: simProvider({ dir: simDir, executable: EXE, args: [] }),
      image: image.keyRequest,
    });
  } finally {
    await image.close();
  }
}

function refusalCode(e: unknown): string | undefined {
  return (e as { details?: { problem?: { code?: string } } }).details?.problem?.code;
}

test('the attested workload that pins the image gets its layer keys and decrypts it', async () => {
  const a = await activateWith('shop', pinnedSrc);
  const released = a.bundle.layerKeys ?? {};
  assert.deepEqual(Object.keys(released).sort(), [...pinned.encryptedLayers].sort());
  const out = await mkdtemp(join(tmp, 'pull-'));
  await pullImage({
    source: new OciLayoutSource(pinnedSrc.slice('oci:'.length, -':v1'.length), 'v1'),
    expected: { manifestDigest: pinned.manifestDigest },
    unwrap: releasedKeyUnwrapper(released),
    rootfs: join(out, 'rootfs'),
    stagingDir: out,
    chown: false,
  });
  assert.equal(
    await readFile(join(out, 'rootfs', 'etc', 'greeting'), 'utf8'),
    'hello from the shop',
  );
});

test('another image, even one wrapped to the same coordinator key, is refused', async () => {
  await assert.rejects(activateWith('shop', otherSrc), (e) => {
    assert.equal(refusalCode(e), 'COORDINATOR_IMAGE_MISMATCH');
    return true;
  });
});

test('evidence that does not match the workload package gets no key', async () => {
  await assert.rejects(activateWith('impostor', pinnedSrc), (e) => {
    assert.equal(refusalCode(e), 'COORDINATOR_APPRAISAL_FAILED');
    return true;
  });
});

test('a workload that pins no image, and an image for a user key, get no layer keys', async () => {
  assert.equal((await activateWith('noimage', pinnedSrc)).bundle.layerKeys, undefined);
  assert.equal((await activateWith('userkeyed', userKeyedSrc)).bundle.layerKeys, undefined);
});
