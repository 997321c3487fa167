/**
 * Registry client edge cases: where credentials may go when a CDN answers with a challenge, how
 * upload `Location` headers resolve (RFC 7231 §7.1.2), Docker Hub name normalisation, how token
 * server failures are reported, and when plain HTTP is spoken.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { Agent } from 'undici';
import {
  RegistryClient,
  openDestination,
  parseImageReference,
  parseRegistryReference,
  sha256Digest,
} from '@cloister/image';
import { startFakeServer, type FakeRequest } from './registry-helpers.js';

const creds = { username: 'alice', password: 's3cret' };
const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;

async function consume(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('a 401 challenge from a redirect target does not send credentials to the realm it names', async (t) => {
  const evil = await startFakeServer(() => ({
    status: 200,
    body: JSON.stringify({ token: 'EVIL' }),
  }));
  t.after(() => evil.close());
  const cdn = await startFakeServer(() => ({
    status: 401,
    headers: { 'www-authenticate': `Bearer realm="http://${evil.host}/token",service="x"` },
  }));
  t.after(() => cdn.close());
  const reg = await startFakeServer((r) => {
    if (r.url.startsWith('/token'))
      return r.headers.authorization === basic
        ? { status: 200, body: JSON.stringify({ token: 'GOOD' }) }
        : { status: 401 };
    if (r.headers.authorization !== 'Bearer GOOD')
      return {
        status: 401,
        headers: { 'www-authenticate': `Bearer realm="http://${reg.host}/token",service="x"` },
      };
    if (r.url.includes('/manifests/'))
      return {
        status: 200,
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
        body: '{}',
      };
    return { status: 307, headers: { location: `http://${cdn.host}/storage/blob` } };
  });
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host, { credentials: creds });
  // The manifest fetch obtains (and caches) the registry's token, as a pull does.
  await client.getManifest('r', 'latest');
  const blob = Buffer.from('blob');
  const d = { mediaType: 'application/octet-stream', digest: sha256Digest(blob), size: 4 };
  await assert.rejects(
    client.getBlob('r', d).then((s) => consume(s)),
    { code: 'IMAGE_REGISTRY_UNAUTHORIZED' },
  );
  assert.equal(evil.requests.length, 0, 'a realm named by the CDN never sees our credentials');
  assert.ok(
    reg.requests.every((q) => q.headers.authorization !== 'Bearer EVIL'),
    'a token from elsewhere is never sent to the registry',
  );
});

/** A registry whose upload Locations are path-relative (`<session>?_state=…`). */
function relativeUploadRegistry(): (r: FakeRequest) => {
  status: number;
  headers?: Record<string, string>;
} {
  const sessions = new Map<string, Buffer[]>();
  let next = 0;
  return (r) => {
    const u = new URL(r.url, 'http://x');
    if (r.method === 'POST' && u.pathname === '/v2/r/blobs/uploads/') {
      const id = `s${next++}`;
      sessions.set(id, []);
      return { status: 202, headers: { location: `${id}?_state=0` } };
    }
    const m = /^\/v2\/r\/blobs\/uploads\/(s\d+)$/.exec(u.pathname);
    const parts = m ? sessions.get(m[1] ?? '') : undefined;
    if (parts === undefined) return { status: 404 };
    parts.push(r.body);
    if (r.method === 'PATCH')
      return { status: 202, headers: { location: `${m?.[1]}?_state=${parts.length}` } };
    if (r.method === 'PUT') {
      const digest = u.searchParams.get('digest');
      return { status: digest === sha256Digest(Buffer.concat(parts)) ? 201 : 400 };
    }
    if (r.method === 'DELETE') return { status: 204 };
    return { status: 405 };
  };
}

test('a path-relative upload Location resolves against the URL that returned it', async (t) => {
  const reg = await startFakeServer(relativeUploadRegistry());
  t.after(() => reg.close());
  const data = Buffer.from('0123456789abcdef-relative-location');
  const d = {
    mediaType: 'application/octet-stream',
    digest: sha256Digest(data),
    size: data.length,
  };

  const client = new RegistryClient(reg.host, { chunkSize: 8 });
  assert.deepEqual(await client.pushBlob('r', Readable.from([data])), {
    digest: d.digest,
    size: data.length,
  });
  assert.deepEqual(await client.pushBlob('r', Readable.from([data]), d), {
    digest: d.digest,
    size: data.length,
  });
  // A mount the registry turns into an upload is cancelled at the same resolved URL.
  assert.equal(await client.mountBlob('r', d.digest, 'other'), false);
  const uploads = reg.requests.filter((q) => q.method !== 'POST');
  assert.deepEqual(
    uploads.map((q) => q.method),
    [...Array<string>(Math.ceil(data.length / 8)).fill('PATCH'), 'PUT', 'PUT', 'DELETE'],
  );
  for (const q of uploads) assert.match(q.url, /^\/v2\/r\/blobs\/uploads\/s\d+\?/);
});

test('index.docker.io names Docker Hub, with the library/ prefix for official images', () => {
  assert.deepEqual(parseRegistryReference('index.docker.io/ubuntu:22.04'), {
    registry: 'registry-1.docker.io',
    repository: 'library/ubuntu',
    tag: '22.04',
  });
  assert.deepEqual(parseRegistryReference('index.docker.io/team/app'), {
    registry: 'registry-1.docker.io',
    repository: 'team/app',
    tag: 'latest',
  });
});

test('a reference with a port out of range is a bad reference, not a TypeError later', () => {
  assert.throws(() => parseRegistryReference('localhost:99999/a'), {
    code: 'IMAGE_BAD_REFERENCE',
  });
  assert.equal(parseRegistryReference('localhost:65535/a').registry, 'localhost:65535');
});

test('a token server that fails is unavailable, not a refusal of the credentials', async (t) => {
  const auth = await startFakeServer(() => ({ status: 503 }));
  t.after(() => auth.close());
  const reg = await startFakeServer(() => ({
    status: 401,
    headers: { 'www-authenticate': `Bearer realm="http://${auth.host}/token",service="x"` },
  }));
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host, { credentials: creds, retries: 0 });
  await assert.rejects(client.getManifest('r', 'latest'), { code: 'IMAGE_REGISTRY_UNAVAILABLE' });
  assert.equal(auth.requests.length, 1);
});

test('Authorization stays on the registry origin across relative and cross-port redirects', async (t) => {
  const blob = Buffer.from('moved blob');
  const other = await startFakeServer(() => ({ status: 200, body: blob }));
  t.after(() => other.close());
  const reg = await startFakeServer((r) => {
    if (r.url.startsWith('/token')) return { status: 200, body: JSON.stringify({ token: 'T' }) };
    if (r.headers.authorization !== 'Bearer T')
      return {
        status: 401,
        headers: { 'www-authenticate': `Bearer realm="http://${reg.host}/token"` },
      };
    if (r.url.startsWith('/v2/r/blobs/')) return { status: 302, headers: { location: '../moved' } };
    if (r.url === '/v2/r/moved')
      return { status: 307, headers: { location: `//${other.host}/cdn/blob` } };
    return { status: 404 };
  });
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host);
  const d = {
    mediaType: 'application/octet-stream',
    digest: sha256Digest(blob),
    size: blob.length,
  };
  assert.deepEqual(await consume(await client.getBlob('r', d)), blob);
  assert.ok(
    reg.requests.some((q) => q.url === '/v2/r/moved' && q.headers.authorization === 'Bearer T'),
  );
  assert.deepEqual(
    other.requests.map((q) => q.headers.authorization),
    [undefined],
    'another port on the same host is another origin',
  );
});

test('--insecure-http speaks plain HTTP to a registry that is not on loopback; without it, HTTPS', async (t) => {
  const reg = await startFakeServer((r) =>
    r.url === '/v2/r/manifests/latest'
      ? {
          status: 200,
          headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
          body: '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}',
        }
      : { status: 404 },
  );
  t.after(() => reg.close());
  const port = reg.host.split(':')[1] ?? '';
  // A lab registry by name: resolved to the test server, not a loopback name to the client.
  const dispatcher = new Agent({
    connect: {
      lookup: (_host, _opts, cb) => cb(null, [{ address: '127.0.0.1', family: 4 }]),
    },
  });
  t.after(() => dispatcher.close());
  const host = `registry.lab.example:${port}`;
  const insecure = new RegistryClient(host, { allowInsecureHttp: true, dispatcher });
  const got = await insecure.getManifest('r', 'latest');
  assert.equal(got.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(reg.requests.length, 1);
  // Without the flag the client speaks TLS, which the plain server cannot answer.
  const secure = new RegistryClient(host, { dispatcher, retries: 0 });
  await assert.rejects(secure.getManifest('r', 'latest'));
  assert.throws(() => new RegistryClient(host, { scheme: 'http' }), {
    code: 'IMAGE_REGISTRY_INSECURE',
  });
});

test('a malformed digest is a bad reference; a destination with a digest is refused', () => {
  assert.throws(() => parseRegistryReference('localhost:5000/a@sha256:xyz'), {
    code: 'IMAGE_BAD_REFERENCE',
  });
  for (const ref of [
    'localhost:5000/a@' + sha256Digest(Buffer.from('m')),
    'localhost:5000/a:v1@' + sha256Digest(Buffer.from('m')),
  ])
    assert.throws(() => openDestination(parseImageReference(`docker://${ref}`)), {
      code: 'IMAGE_BAD_REFERENCE',
    });
});

test('a GET is tried again after 429/502/503/504 and a dropped connection; other methods are not', async (t) => {
  const manifest =
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}';
  const answers: { status: number; headers?: Record<string, string> }[] = [];
  const reg = await startFakeServer(() => {
    const next = answers.shift();
    return (
      next ?? {
        status: 200,
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
        body: manifest,
      }
    );
  });
  t.after(() => reg.close());
  const client = new RegistryClient(reg.host, { retryDelayMs: 1 });

  answers.push({ status: 503 }, { status: 429, headers: { 'retry-after': '0' } }, { status: 502 });
  await client.getManifest('r', 'latest');
  assert.equal(reg.requests.length, 4, 'three refusals, then the answer');

  reg.requests.length = 0;
  answers.push({ status: 504 }, { status: 504 }, { status: 504 }, { status: 504 });
  await assert.rejects(client.getManifest('r', 'latest'), { code: 'IMAGE_REGISTRY_UNAVAILABLE' });
  assert.equal(reg.requests.length, 4, 'the first try and three retries');

  reg.requests.length = 0;
  answers.length = 0;
  answers.push({ status: 429, headers: { 'retry-after': '3600' } });
  await assert.rejects(client.getManifest('r', 'latest'), { code: 'IMAGE_REGISTRY_UNAVAILABLE' });
  assert.equal(reg.requests.length, 1, 'told to come back in an hour: fails now');

  reg.requests.length = 0;
  answers.length = 0;
  answers.push({ status: 503 });
  await assert.rejects(
    client.send('POST', '/v2/r/blobs/uploads/', { scopes: [] }).then(async (r) => {
      await r.body.dump();
      assert.equal(r.statusCode, 503);
      throw Object.assign(new Error('503'), { code: 'POST_NOT_RETRIED' });
    }),
    { code: 'POST_NOT_RETRIED' },
  );
  assert.equal(reg.requests.length, 1);

  // Nobody listening: tried four times, then unavailable.
  const closed = await startFakeServer(() => ({ status: 200 }));
  await closed.close();
  const gone = new RegistryClient(closed.host, { retryDelayMs: 1 });
  await assert.rejects(gone.getManifest('r', 'latest'), { code: 'IMAGE_REGISTRY_UNAVAILABLE' });
});
