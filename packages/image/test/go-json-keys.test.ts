/**
 * Go's encoding/json matches an object key to a struct field case-insensitively (ASCII, plus
 * the Kelvin sign for k, long s for s, dotted and dotless i for i), and the last matching key
 * wins. A manifest or config with `digest` and `Digest`, or `diff_ids` and `diff_ıds`, would
 * then say one thing to Cloister and another to skopeo, containerd or Docker behind the same
 * digest: every field Cloister reads must have no such twin.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  DockerArchiveSource,
  parseConfig,
  parseDescriptor,
  parseManifestOrIndex,
  parsePrivateOptions,
  parsePublicOptions,
  unwrapJwe,
  wrapJwe,
} from '@cloister/image';
import { makeTar } from './fixtures.js';
import { tempDir } from './helpers.js';

const D1 = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'b'.repeat(64)}`;
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const desc = (extra = ''): string =>
  `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"${D1}","size":1${extra}}`;
const manifest = (top = '', layer = ''): string =>
  `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
  `"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"${D2}","size":2},` +
  `"layers":[${desc(layer)}]${top}}`;
const config = (top = '', rootfs = '', inner = ''): string =>
  `{"architecture":"amd64","os":"linux"${top},"config":{"Cmd":["a"]${inner}},` +
  `"rootfs":{"type":"layers","diff_ids":["${D1}"]${rootfs}}}`;

test('the documents without twins parse', () => {
  assert.equal(parseManifestOrIndex(utf8(manifest())).kind, 'manifest');
  assert.deepEqual(parseConfig(utf8(config())).diffIds, [D1]);
});

test('a key that Go reads as a field Cloister reads is refused, in every document', () => {
  const cases: [string, () => unknown][] = [
    ['descriptor Digest', () => parseManifestOrIndex(utf8(manifest('', `,"Digest":"${D2}"`)))],
    ['descriptor SIZE', () => parseManifestOrIndex(utf8(manifest('', ',"SIZE":7')))],
    [
      'descriptor annotations with a long s',
      () => parseManifestOrIndex(utf8(manifest('', ',"annotations":{},"annotationſ":{"k":"v"}'))),
    ],
    ['manifest Layers', () => parseManifestOrIndex(utf8(manifest(',"Layers":[]')))],
    ['manifest MediaType', () => parseManifestOrIndex(utf8(manifest(',"MediaType":"x"')))],
    ['config OS', () => parseConfig(utf8(config(',"OS":"windows"')))],
    ['config RootFS', () => parseConfig(utf8(config(',"RootFS":{}')))],
    ['rootfs diff_ıds', () => parseConfig(utf8(config('', `,"diff_ıds":["${D2}"]`)))],
    ['rootfs Type', () => parseConfig(utf8(config('', ',"TYPE":"layers"')))],
    ['config entrypoint', () => parseConfig(utf8(config('', '', ',"entrypoint":["/evil"]')))],
    ['config CMD', () => parseConfig(utf8(config('', '', ',"CMD":["b"]')))],
    [
      'platform OS',
      () =>
        parseDescriptor(
          JSON.parse(
            desc(',"platform":{"os":"linux","architecture":"amd64","Architecture":"arm64"}'),
          ),
          'd',
        ),
    ],
  ];
  for (const [name, run] of cases) {
    assert.throws(run, (e: { code?: string; details?: { key?: string } }) => {
      assert.equal(e.code, 'IMAGE_MALFORMED', name);
      assert.equal(typeof e.details?.key, 'string', name);
      return true;
    });
  }
});

test('keys that Go does not read as a field stay accepted', () => {
  // Map keys (annotations, labels) are matched exactly by Go: twins there are distinct keys.
  const m = parseManifestOrIndex(utf8(manifest('', ',"annotations":{"a":"1","A":"2"}')));
  assert.equal(m.kind, 'manifest');
  assert.deepEqual(parseConfig(utf8(config('', '', ',"Labels":{"v":"1","V":"2"}'))).diffIds, [D1]);
  // Unknown fields and fields Cloister does not read are ignored by both.
  assert.equal(parseManifestOrIndex(utf8(manifest(',"Whatever":1'))).kind, 'manifest');
});

test('any case variant of a read field is refused (property)', () => {
  const fields = ['mediaType', 'digest', 'size', 'annotations', 'platform', 'urls'];
  const specials: Record<string, string[]> = {
    k: ['\u212a'],
    s: ['\u017f'],
    i: ['\u0131', '\u0130'],
  };
  const variant = fc
    .tuple(fc.constantFrom(...fields), fc.array(fc.nat(), { minLength: 12, maxLength: 12 }))
    .map(([f, picks]) =>
      [...f]
        .map((c, i) => {
          const p = (picks[i] ?? 0) % 3;
          const lower = c.toLowerCase();
          if (p === 2 && specials[lower] !== undefined) return specials[lower][0] as string;
          return p === 1 ? c.toUpperCase() : lower;
        })
        .join(''),
    )
    .filter((k) => !fields.includes(k));
  fc.assert(
    fc.property(variant, (k) => {
      const text = manifest('', `,${JSON.stringify(k)}:null`);
      assert.throws(() => parseManifestOrIndex(utf8(text)), { code: 'IMAGE_MALFORMED' });
    }),
    { seed: 20261130, numRuns: 300 },
  );
});

test("a docker-archive's manifest.json with a twin of Config or Layers is refused", async (t) => {
  const dir = tempDir(t);
  const layer = await makeTar([{ name: 'x', content: 'y' }]);
  const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
  const cfg = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [diffId] },
  });
  const archive = async (entry: string): Promise<DockerArchiveSource> => {
    const file = join(dir, `a-${Math.random().toString(16).slice(2)}.tar`);
    writeFileSync(
      file,
      await makeTar([
        { name: 'l.tar', content: layer },
        { name: 'c.json', content: cfg },
        { name: 'manifest.json', content: `[${entry}]` },
      ]),
    );
    const src = new DockerArchiveSource(file);
    t.after(() => src.close());
    return src;
  };
  const ok = await archive('{"Config":"c.json","RepoTags":[],"Layers":["l.tar"]}');
  assert.equal((await ok.getManifest()).bytes.length > 0, true);
  const twin = await archive(
    '{"Config":"c.json","RepoTags":[],"Layers":["l.tar"],"layers":["other.tar"]}',
  );
  await assert.rejects(twin.getManifest(), { code: 'IMAGE_MALFORMED' });
});

test("ocicrypt's options with a twin of symkey, digest, hmac or cipher are refused", () => {
  const b64 = (n: number, fill: number): string => Buffer.alloc(n, fill).toString('base64');
  const priv = (extra: string): Uint8Array =>
    utf8(
      `{"symkey":"${b64(32, 1)}","digest":"${D1}","cipheroptions":{"nonce":"${b64(16, 2)}"}${extra}}`,
    );
  const pub = (extra: string): string =>
    Buffer.from(
      `{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"${b64(32, 3)}","cipheroptions":{}${extra}}`,
    ).toString('base64');
  assert.equal(parsePrivateOptions(priv('')).digest, D1);
  assert.equal(parsePublicOptions(pub('')).hmac.length, 32);
  for (const extra of [`,"SymKey":"${b64(32, 9)}"`, `,"Digest":"${D2}"`, ',"CipherOptions":{}'])
    assert.throws(() => parsePrivateOptions(priv(extra)), { code: 'IMAGE_ENC_MALFORMED' });
  for (const extra of [`,"HMAC":"${b64(32, 9)}"`, ',"Cipher":"x"'])
    assert.throws(() => parsePublicOptions(pub(extra)), { code: 'IMAGE_ENC_MALFORMED' });
});

test('a JWE with a twin of one of its members is refused before any key is tried', async () => {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const jwe = await wrapJwe(utf8('key'), [{ key: publicKey, alg: 'ECDH-ES+A256KW' }]);
  assert.deepEqual(Buffer.from(await unwrapJwe(jwe, [privateKey])).toString(), 'key');
  const o = JSON.parse(Buffer.from(jwe).toString()) as Record<string, unknown>;
  const twin = utf8(JSON.stringify({ ...o, Ciphertext: o['ciphertext'] }));
  await assert.rejects(unwrapJwe(twin, [privateKey]), { code: 'IMAGE_ENC_MALFORMED' });
});
