/**
 * Registry round trips against a real Distribution registry on loopback (open, and with token
 * auth through a tiny token server), plus protocol attacks from a fake registry: credentials
 * across redirects, oversized manifests, substituted blobs.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  OciLayoutDestination,
  OciLayoutSource,
  RegistryClient,
  RegistryDestination,
  RegistrySource,
  copyImage,
  keyUnwrapper,
  loadPublicKey,
  parseRegistryReference,
  pullImage,
  sha256Digest,
  type Digest,
} from '@cloister/image';
import { makeLayout } from './fixtures.js';
import { keyPair, layoutImage, skipWithout, skopeo, tempDir, have } from './helpers.js';
import { freePort } from '@cloister/testkit';
import { startRegistry, startTokenServer } from './registry-helpers.js';

const coord = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const coordPub = loadPublicKey(
  new Uint8Array(Buffer.from(coord.publicKey.export({ type: 'spki', format: 'pem' }))),
);
const big = Buffer.alloc(200_000);
for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;

test('registry round trip: push encrypted (chunked), mount, pull + decrypt + unpack, skopeo reads it', async (t) => {
  if (skipWithout(t, 'docker-registry')) return;
  const dir = tempDir(t);
  const reg = await startRegistry(join(dir, 'reg'));
  t.after(() => reg.stop());
  const plain = await makeLayout(join(dir, 'plain'), [
    [{ name: 'etc/' }, { name: 'etc/data', content: big }],
    [{ name: 'app/' }, { name: 'app/run', content: 'run\n' }],
  ]);
  const opts = { chunkSize: 64 * 1024 };
  const dstRef = parseRegistryReference(`${reg.host}/team/app:enc`);
  const rsa = keyPair(dir, 'rsa');
  const rv = await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new RegistryDestination(dstRef, opts),
    {
      coordinatorKey: coordPub,
      recipients: [loadPublicKey(new Uint8Array(readFileSync(rsa.pub)))],
    },
  );
  assert.deepEqual(rv.diffIds, plain.diffIds);

  // Copy within the registry to another repository: blobs are mounted, digest preserved.
  const rv2 = await copyImage(
    new RegistrySource(parseRegistryReference(`${reg.host}/team/app:enc`), opts),
    new RegistryDestination(parseRegistryReference(`${reg.host}/other/app:v1`), opts),
  );
  assert.equal(rv2.manifestDigest, rv.manifestDigest);

  // Guest pull pinned by digest.
  const rootfs = join(dir, 'rootfs');
  const r = await pullImage({
    source: new RegistrySource(
      parseRegistryReference(`${reg.host}/other/app@${rv.manifestDigest}`),
    ),
    expected: { manifestDigest: rv.manifestDigest, diffIds: rv.diffIds },
    unwrap: keyUnwrapper([coord.privateKey]),
    rootfs,
    stagingDir: dir,
  });
  assert.deepEqual(r.unpacked.diffIds, plain.diffIds);
  assert.deepEqual(readFileSync(join(rootfs, 'etc/data')), big);

  // A tag that moved (registry serves another image) is refused against the pin.
  await assert.rejects(
    pullImage({
      source: new RegistrySource(parseRegistryReference(`${reg.host}/other/app:v1`)),
      expected: { manifestDigest: sha256Digest(new Uint8Array([1])) },
      unwrap: keyUnwrapper([coord.privateKey]),
      rootfs: join(dir, 'rootfs-x'),
      stagingDir: dir,
    }),
    { code: 'IMAGE_DIGEST_MISMATCH' },
  );

  if (have('skopeo')) {
    const dec = join(dir, 'skopeo-dec');
    skopeo([
      'copy',
      '--src-tls-verify=false',
      '--decryption-key',
      rsa.priv,
      `docker://${reg.host}/team/app:enc`,
      `oci:${dec}:x`,
    ]);
    assert.deepEqual(layoutImage(dec, 'x').diffIds, plain.diffIds);
  } else console.error('*** SKIPPED skopeo read-back: skopeo not installed ***');
});

test('registry with token auth: credentials work, wrong ones are refused', async (t) => {
  if (skipWithout(t, 'docker-registry', 'openssl')) return;
  const dir = tempDir(t);
  const token = await startTokenServer(dir, 'alice', 's3cret');
  t.after(() => token.server.close());
  const reg = await startRegistry(join(dir, 'reg'), token);
  t.after(() => reg.stop());
  const plain = await makeLayout(join(dir, 'plain'), [[{ name: 'a', content: 'x' }]]);
  const ref = parseRegistryReference(`${reg.host}/secure/app:1`);
  const good = { credentials: { username: 'alice', password: 's3cret' } };
  const rv = await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new RegistryDestination(ref, good),
    {
      coordinatorKey: coordPub,
    },
  );
  const back = await copyImage(
    new RegistrySource(ref, good),
    new OciLayoutDestination(join(dir, 'back'), 'b'),
  );
  assert.equal(back.manifestDigest, rv.manifestDigest);
  assert.ok(token.requests.some((q) => q.authorized && q.scope.some((s) => s.includes('push'))));
  await assert.rejects(
    new RegistrySource(ref, {
      credentials: { username: 'alice', password: 'wrong' },
    }).getManifest(),
    { code: 'IMAGE_REGISTRY_UNAUTHORIZED' },
  );
  await assert.rejects(new RegistrySource(ref).getManifest(), {
    code: 'IMAGE_REGISTRY_UNAUTHORIZED',
  });
});

/** A fake registry for protocol attacks. */
async function fakeRegistry(
  handler: (
    url: string,
    headers: IncomingHttpHeaders,
  ) => { status: number; headers?: Record<string, string>; body?: Buffer | string },
) {
  const port = await freePort();
  const server = createServer((req, res) => {
    const r = handler(req.url ?? '/', req.headers);
    res.writeHead(r.status, r.headers ?? {});
    res.end(r.body ?? '');
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('Authorization is not forwarded to another origin on a blob redirect', async (t) => {
  const blob = Buffer.from('blob content');
  const seen: (string | undefined)[] = [];
  const cdn = await fakeRegistry((_u, h) => {
    seen.push(h.authorization);
    return { status: 200, body: blob };
  });
  t.after(() => cdn.close());
  const reg = await fakeRegistry((url, h) => {
    if (url.startsWith('/token')) return { status: 200, body: JSON.stringify({ token: 'T0KEN' }) };
    if (h.authorization !== 'Bearer T0KEN')
      return {
        status: 401,
        headers: {
          'www-authenticate': `Bearer realm="http://${reg.host}/token",service="x",scope="repository:r:pull"`,
        },
      };
    return { status: 307, headers: { location: `http://${cdn.host}/storage/blob` } };
  });
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host);
  const d = {
    mediaType: 'application/octet-stream',
    digest: sha256Digest(blob),
    size: blob.length,
  };
  const chunks: Buffer[] = [];
  for await (const c of await client.getBlob('r', d)) chunks.push(c as Buffer);
  assert.deepEqual(Buffer.concat(chunks), blob);
  assert.deepEqual(seen, [undefined], 'the CDN never sees the registry token');
});

test('a substituted blob and an oversized manifest are refused', async (t) => {
  const reg = await fakeRegistry((url) => {
    if (url.includes('/manifests/'))
      return {
        status: 200,
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
        body: Buffer.alloc(5 * 1024 * 1024, 0x20),
      };
    return { status: 200, body: 'evil' };
  });
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host);
  await assert.rejects(client.getManifest('r', 'latest'), { code: 'IMAGE_TOO_LARGE' });
  const d = { mediaType: 'x', digest: sha256Digest(new Uint8Array(Buffer.from('good'))), size: 4 };
  await assert.rejects(
    (async () => {
      for await (const _ of await client.getBlob('r', d)) {
        /* consume */
      }
    })(),
    { code: 'IMAGE_DIGEST_MISMATCH' },
  );
  const pinned: Digest = sha256Digest(new Uint8Array(Buffer.from('{}')));
  await assert.rejects(client.getManifest('r', pinned), { code: 'IMAGE_TOO_LARGE' });
});

test('plain HTTP is refused for non-loopback registries', () => {
  assert.throws(() => new RegistryClient('registry.example.com', { scheme: 'http' }), {
    code: 'IMAGE_REGISTRY_INSECURE',
  });
  assert.doesNotThrow(() => new RegistryClient('127.0.0.1:5000'));
});
