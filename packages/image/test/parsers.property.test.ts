/**
 * Property tests over the parsers of untrusted bytes: manifests/indexes/configs, ocicrypt
 * options, references, WWW-Authenticate, and the tar unpacker. Each either succeeds or throws
 * one of our typed errors (never TypeError/RangeError), and the unpacker never writes outside
 * its root.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError_ } from './property-helpers.js';
import {
  parseConfig,
  parseImageReference,
  parseManifestOrIndex,
  parsePrivateOptions,
  parsePublicOptions,
  parseWwwAuthenticate,
  unpackRootfs,
} from '@cloister/image';
import { makeTar } from './fixtures.js';
import { tempDir } from './helpers.js';

const validManifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: `sha256:${'a'.repeat(64)}`,
    size: 10,
  },
  layers: [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: `sha256:${'b'.repeat(64)}`,
      size: 5,
      annotations: { k: 'v' },
    },
  ],
});
const validConfig = JSON.stringify({
  os: 'linux',
  architecture: 'amd64',
  config: { Cmd: ['x'] },
  rootfs: { type: 'layers', diff_ids: [`sha256:${'c'.repeat(64)}`] },
});

function typedOrOk(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isCloisterError_(e), `untyped error: ${String(e)}`);
  }
}

/** Mutations of a valid document: byte flips, truncation, insertion. */
const mutated = (doc: string) =>
  fc.oneof(
    fc.tuple(fc.nat(doc.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
      const buf = Buffer.from(doc);
      buf[i] = b;
      return buf;
    }),
    fc.nat(doc.length).map((n) => Buffer.from(doc).subarray(0, n)),
    fc
      .tuple(fc.nat(doc.length), fc.string())
      .map(([i, s]) => Buffer.from(doc.slice(0, i) + s + doc.slice(i))),
  );

test('manifest, index and config parsers: typed error or success on any input', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
        mutated(validManifest),
        fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))),
      ),
      (b) => {
        typedOrOk(() => parseManifestOrIndex(new Uint8Array(b)));
        typedOrOk(() =>
          parseManifestOrIndex(new Uint8Array(b), 'application/vnd.oci.image.index.v1+json'),
        );
      },
    ),
    { numRuns: 1500 },
  );
  fc.assert(
    fc.property(
      fc.oneof(
        mutated(validConfig),
        fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))),
      ),
      (b) => {
        typedOrOk(() => parseConfig(new Uint8Array(b)));
      },
    ),
    { numRuns: 1500 },
  );
  assert.equal(parseManifestOrIndex(new Uint8Array(Buffer.from(validManifest))).kind, 'manifest');
});

test('ocicrypt options, references and challenges: typed error or success', () => {
  fc.assert(
    fc.property(fc.string(), fc.jsonValue(), (s, v) => {
      typedOrOk(() => parsePublicOptions(s));
      typedOrOk(() => parsePublicOptions(Buffer.from(JSON.stringify(v)).toString('base64')));
      typedOrOk(() => parsePrivateOptions(new Uint8Array(Buffer.from(JSON.stringify(v)))));
      typedOrOk(() => parseImageReference(s));
      typedOrOk(() => parseImageReference(`docker://${s}`));
      typedOrOk(() => parseWwwAuthenticate(s));
    }),
    { numRuns: 2000 },
  );
});

test('tar unpacker: mutated and random layers never escape and fail typed', async (t) => {
  const dir = tempDir(t);
  const good = await makeTar([
    { name: 'etc/' },
    { name: 'etc/a', content: 'hello world' },
    { name: 'lnk', type: 'symlink', linkname: 'etc/a' },
    { name: 'hard', type: 'link', linkname: 'etc/a' },
    { name: 'etc/.wh.zzz', content: '' },
  ]);
  mkdirSync(join(dir, 'out'));
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
          const c = Buffer.from(good);
          c[i] = b;
          return c;
        }),
        fc.nat(good.length).map((k) => good.subarray(0, k)),
        fc.uint8Array({ maxLength: 2048 }).map((u) => Buffer.from(u)),
      ),
      async (bytes) => {
        const root = join(dir, 'out', `r${n++}`);
        try {
          await unpackRootfs(root, [{ open: () => Readable.from([bytes]), compression: 'none' }]);
        } catch (e) {
          assert.ok(isCloisterError_(e), `untyped error: ${String(e)}`);
        }
        // Nothing but complete rootfs directories may exist next to the root.
        for (const name of readdirSync(join(dir, 'out'))) assert.match(name, /^r\d+$/);
      },
    ),
    { numRuns: 250 },
  );
  assert.deepEqual(readdirSync(dir), ['out']);
});
