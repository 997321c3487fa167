/**
 * The streaming layer pipeline: hashes computed on the helper thread equal in-thread ones for
 * any chunking, decryption puts nothing at the caller's path before the whole ciphertext, its
 * digest and the diff_id verify and leaves no staged plaintext behind on any failure, and
 * concurrent layer copies keep every layer in its place.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import {
  DockerArchiveDestination,
  DockerArchiveSource,
  LayerEncryptStream,
  OciLayoutDestination,
  OciLayoutSource,
  OffloadedHash,
  PUBOPTS_ANNOTATION,
  copyImage,
  decryptLayerToFile,
  loadPublicKey,
  newPrivateOptions,
  resolveImage,
  serializePublicOptions,
  type Digest,
} from '@cloister/image';
import { encryptLayerToFile } from '../src/ocicrypt.js';
import { OffloadedTap, helperLoad } from '../src/offload.js';
import { makeLayout } from './fixtures.js';
import { tempDir } from './helpers.js';

const sha = (b: Uint8Array): Digest =>
  `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

async function offloaded(chunks: Uint8Array[], hmacKey?: Uint8Array): Promise<Buffer> {
  const h = new OffloadedHash(hmacKey === undefined ? {} : { hmacKey });
  for (const c of chunks) await h.update(c);
  return h.digest();
}

test('offloaded SHA-256 and HMAC equal in-thread ones for any chunking', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 12 }),
      fc.option(fc.uint8Array({ minLength: 1, maxLength: 80 }), { nil: undefined }),
      async (chunks, key) => {
        const all = Buffer.concat(chunks);
        const want =
          key === undefined
            ? createHash('sha256').update(all).digest()
            : createHmac('sha256', key).update(all).digest();
        assert.deepEqual(await offloaded(chunks, key), want);
      },
    ),
    { numRuns: 60 },
  );
});

test('the hashing helper thread works whatever flags Node was started with', () => {
  // A worker inherits the parent's flags by default; `--input-type=module` once made the helper
  // read its CommonJS source as a module and crash the command.
  const offload = new URL('../src/offload.ts', import.meta.url).href;
  const script = `
    const { OffloadedHash } = await import(${JSON.stringify(offload)});
    const h = new OffloadedHash({});
    await h.update(new TextEncoder().encode('abc'));
    process.stdout.write((await h.digest()).toString('hex'));`;
  const r = spawnSync(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', script],
    { encoding: 'utf8', timeout: 60_000 },
  );
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, createHash('sha256').update('abc').digest('hex'));
});

test('offloaded hashes: chunks larger than the ring, many at once, abandoned ones', async () => {
  const big = randomBytes(7 * 1024 * 1024 + 13);
  // Fed without awaiting between hashes: interleaved updates of several open hashes.
  const parts = [
    big.subarray(0, 1),
    big.subarray(1, 3 * 1024 * 1024),
    big.subarray(3 * 1024 * 1024),
  ];
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) => offloaded(i % 2 === 0 ? [big] : parts)),
  );
  for (const r of results) assert.equal(`sha256:${r.toString('hex')}`, sha(big));
  // Abandoned hashes return their rings; later hashes stay correct.
  for (let i = 0; i < 20; i++) {
    const h = new OffloadedHash();
    await h.update(big.subarray(0, 2 * 1024 * 1024));
    h.abandon();
  }
  assert.equal(`sha256:${(await offloaded([big])).toString('hex')}`, sha(big));
  // An empty input is the empty hash.
  assert.equal(`sha256:${(await offloaded([])).toString('hex')}`, sha(new Uint8Array(0)));
});

test('lent chunks (shared memory, no copy) hash like copied ones, in order, whatever is mixed', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.uint8Array({ maxLength: 300_000 }), fc.boolean()), { maxLength: 10 }),
      fc.boolean(),
      async (parts, gzipped) => {
        const plain = Buffer.concat(parts.map(([b]) => b));
        const input = gzipped ? gzipSync(plain) : plain;
        const tap = new OffloadedTap([
          { kind: 'sha256' },
          { kind: 'diffId', compression: gzipped ? 'gzip' : 'none', max: 1e9 },
        ]);
        // Fed in pieces as long as the parts, the last piece whatever is left: the pieces marked
        // true are lent, the others copied.
        const released: Promise<void>[] = [];
        let at = 0;
        for (const [i, [b, lend]] of parts.entries()) {
          const end = i === parts.length - 1 ? input.length : Math.min(at + b.length, input.length);
          const piece = input.subarray(at, end);
          at = end;
          if (lend) {
            const shared = Buffer.from(new SharedArrayBuffer(piece.length));
            shared.set(piece);
            // Once released the memory is the caller's: scribbling on it changes nothing.
            released.push(tap.lend(shared).then(() => void shared.fill(0xa5)));
          } else await tap.update(piece);
        }
        if (at < input.length) await tap.update(input.subarray(at));
        const [digest, diffId] = await tap.results();
        await Promise.all(released);
        assert.deepEqual(digest, { digest: createHash('sha256').update(input).digest() });
        assert.deepEqual(diffId, { digest: createHash('sha256').update(plain).digest() });
      },
    ),
    { numRuns: 40 },
  );
});

/** A gzip layer of `n` random bytes, encrypted; returns what decryptLayerToFile needs. */
async function encryptedLayer(n: number): Promise<{
  gz: Buffer;
  ct: Buffer;
  diffId: Digest;
  descriptor: {
    mediaType: string;
    digest: Digest;
    size: number;
    annotations: Record<string, string>;
  };
  options: ReturnType<typeof newPrivateOptions>;
}> {
  const plain = randomBytes(n);
  const gz = gzipSync(plain, { level: 0 });
  const options = newPrivateOptions(sha(gz));
  const enc = new LayerEncryptStream(options);
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([gz.subarray(0, 5), gz.subarray(5, 1_500_000), gz.subarray(1_500_000)]),
    enc,
    async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) out.push(c);
    },
  );
  const ct = Buffer.concat(out);
  assert.deepEqual(
    enc.result.hmac,
    new Uint8Array(createHmac('sha256', options.symkey).update(ct).digest()),
  );
  return {
    gz,
    ct,
    diffId: sha(plain),
    options,
    descriptor: {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted',
      digest: sha(ct),
      size: ct.length,
      annotations: { [PUBOPTS_ANNOTATION]: serializePublicOptions(enc.result.hmac) },
    },
  };
}

/** What `watchedCiphertext` saw while the ciphertext was being read. */
interface Seen {
  /** Chunks yielded (so a test knows the watcher ran). */
  chunks: number;
  /** Whether the staging path existed before some chunk was read. */
  early: boolean;
  /** Every name in the directory, and its permission bits, before some chunk was read. */
  files: Map<string, number>;
}

/**
 * Yields `ct` in 64 KiB chunks (failing the stream `failAt` bytes in, if given) and records,
 * before each chunk, whether `stagingPath` exists and what its directory holds.
 */
function watchedCiphertext(ct: Buffer, stagingPath: string, seen: Seen, failAt?: number): Readable {
  const dir = dirname(stagingPath);
  return Readable.from(
    (function* () {
      for (let o = 0; o < ct.length; o += 65536) {
        if (failAt !== undefined && o >= failAt) throw new Error('source broke');
        if (existsSync(stagingPath)) seen.early = true;
        for (const n of readdirSync(dir)) seen.files.set(n, statSync(join(dir, n)).mode & 0o777);
        seen.chunks++;
        yield ct.subarray(o, o + 65536);
      }
    })(),
  );
}

const watch = (): Seen => ({ chunks: 0, early: false, files: new Map() });

test('decryption puts nothing at the staging path before the whole ciphertext is authenticated', async (t) => {
  const dir = tempDir(t);
  const layer = await encryptedLayer(3 * 1024 * 1024 + 7);

  const ok = join(dir, 'ok');
  const seen = watch();
  const r = await decryptLayerToFile({
    ciphertext: watchedCiphertext(layer.ct, ok, seen),
    descriptor: layer.descriptor,
    options: layer.options,
    stagingPath: ok,
    diffId: layer.diffId,
  });
  assert.ok(seen.chunks > 40);
  assert.equal(seen.early, false, 'staging path existed while ciphertext was unread');
  // Whatever was staged meanwhile was private to this user.
  for (const [name, mode] of seen.files) assert.equal(mode & 0o077, 0, `${name} is not private`);
  assert.deepEqual(readFileSync(ok), layer.gz);
  assert.equal(r.plaintextDigest, sha(layer.gz));
  assert.equal(r.size, layer.gz.length);
  assert.equal(r.diffId, layer.diffId);
  assert.deepEqual(readdirSync(dir), ['ok']);

  // Tampered ciphertext whose digest an attacker controlling the manifest also updated: the
  // HMAC refuses it, and neither staging file is left.
  const bad = Buffer.from(layer.ct);
  bad[bad.length - 3] = (bad[bad.length - 3] as number) ^ 1;
  for (const verified of [true, false])
    await assert.rejects(
      decryptLayerToFile({
        ciphertext: verified ? { verifiedStream: Readable.from([bad]) } : Readable.from([bad]),
        descriptor: { ...layer.descriptor, digest: sha(bad) },
        options: layer.options,
        stagingPath: join(dir, 'bad'),
        diffId: layer.diffId,
      }),
      { code: 'IMAGE_ENC_HMAC_MISMATCH' },
    );
  // A plain stream's digest is checked in the same pass as the HMAC.
  await assert.rejects(
    decryptLayerToFile({
      ciphertext: Readable.from([bad]),
      descriptor: layer.descriptor,
      options: layer.options,
      stagingPath: join(dir, 'bad'),
      diffId: layer.diffId,
    }),
    { code: 'IMAGE_DIGEST_MISMATCH' },
  );
  // The diff_id is checked whether or not the blob's own digest is wanted.
  for (const digestPlaintext of [true, false])
    await assert.rejects(
      decryptLayerToFile({
        ciphertext: Readable.from([layer.ct]),
        descriptor: layer.descriptor,
        options: layer.options,
        stagingPath: join(dir, 'bad'),
        diffId: sha(Buffer.from('another layer')),
        digestPlaintext,
      }),
      { code: 'IMAGE_DIFF_ID_MISMATCH' },
    );
  assert.deepEqual(readdirSync(dir), ['ok']);

  // Without the blob's digest (a pull only unpacks it): the same bytes.
  const r2 = await decryptLayerToFile({
    ciphertext: Readable.from([layer.ct]),
    descriptor: layer.descriptor,
    options: layer.options,
    stagingPath: join(dir, 'unpack-only'),
    diffId: layer.diffId,
    digestPlaintext: false,
  });
  assert.equal(r2.plaintextDigest, undefined);
  assert.equal(r2.diffId, layer.diffId);
  assert.deepEqual(readFileSync(join(dir, 'unpack-only')), layer.gz);
  assert.deepEqual(readdirSync(dir).sort(), ['ok', 'unpack-only']);
});

test('a failed decryption leaves no staged plaintext, and never a file at the staging path', async (t) => {
  const layer = await encryptedLayer(3 * 1024 * 1024 + 7);
  // Flipped bits early (in the gzip header: its plaintext no longer inflates) and late.
  const flip = (at: number): Buffer => {
    const b = Buffer.from(layer.ct);
    b[at] = (b[at] as number) ^ 1;
    return b;
  };
  const early = flip(0);
  const late = flip(layer.ct.length - 3);
  const cases: {
    name: string;
    ct: Buffer;
    patch?: Record<string, unknown>;
    verified?: boolean;
    failAt?: number;
    expectedDiffId?: Digest;
    maxUncompressed?: number;
    want: { code: string } | { message: string };
  }[] = [
    ...[early, late].flatMap((bad, i) =>
      [true, false].map((verified) => ({
        name: `tampered-${i}-${verified}`,
        ct: bad,
        // An attacker who controls the manifest names the tampered bytes.
        patch: { digest: sha(bad) },
        verified,
        want: { code: 'IMAGE_ENC_HMAC_MISMATCH' },
      })),
    ),
    // Substituted bytes under the authentic descriptor: the digest is checked first.
    { name: 'substituted', ct: late, want: { code: 'IMAGE_DIGEST_MISMATCH' } },
    // Tampered and over the cap: still reported as the HMAC failure (checked before the
    // diff_id, whose inflate recorded the cap without stopping the stream).
    {
      name: 'tampered-capped',
      ct: late,
      patch: { digest: sha(late) },
      maxUncompressed: 1024 * 1024,
      want: { code: 'IMAGE_ENC_HMAC_MISMATCH' },
    },
    // Authentic, but another layer than the config names.
    {
      name: 'swapped',
      ct: layer.ct,
      expectedDiffId: sha(Buffer.from('another layer')),
      want: { code: 'IMAGE_DIFF_ID_MISMATCH' },
    },
    // Authentic, but inflating past the cap.
    {
      name: 'capped',
      ct: layer.ct,
      maxUncompressed: 1024 * 1024,
      want: { code: 'IMAGE_UNPACK_LIMIT' },
    },
    // The source fails mid-stream, after plaintext was staged: its own error propagates.
    {
      name: 'broken',
      ct: layer.ct,
      verified: true,
      failAt: 2 * 1024 * 1024,
      want: { message: 'source broke' },
    },
  ];
  for (const c of cases) {
    const dir = tempDir(t);
    const stagingPath = join(dir, 'layer');
    const seen = watch();
    await assert.rejects(
      decryptLayerToFile({
        ciphertext:
          c.verified === true
            ? { verifiedStream: watchedCiphertext(c.ct, stagingPath, seen, c.failAt) }
            : watchedCiphertext(c.ct, stagingPath, seen, c.failAt),
        descriptor: { ...layer.descriptor, ...c.patch },
        options: layer.options,
        stagingPath,
        diffId: c.expectedDiffId ?? layer.diffId,
        ...(c.maxUncompressed === undefined ? {} : { maxUncompressed: c.maxUncompressed }),
      }),
      c.want,
      c.name,
    );
    // Plaintext was staged while the ciphertext streamed (so its removal is what is tested)...
    assert.ok(seen.files.size > 0, `${c.name}: nothing was staged`);
    // ...never at the staging path, and nothing is left.
    assert.equal(seen.early, false, `${c.name}: staging path existed mid-stream`);
    assert.deepEqual(readdirSync(dir), [], `${c.name}: left ${readdirSync(dir).join(', ')}`);
  }
});

test('layers copied concurrently keep their order (OCI layout and docker-archive)', async (t) => {
  const dir = tempDir(t);
  const layers = Array.from({ length: 5 }, (_, i) => [
    { name: `f${i}`, content: randomBytes(200_000 * (5 - i)) },
  ]);
  const built = await makeLayout(join(dir, 'src'), layers);
  const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = loadPublicKey(
    new Uint8Array(Buffer.from(kp.publicKey.export({ type: 'spki', format: 'pem' }))),
  );
  const rv = await copyImage(
    new OciLayoutSource(built.dir, 'latest'),
    new OciLayoutDestination(join(dir, 'enc'), 'x'),
    { coordinatorKey: pub },
  );
  assert.deepEqual(rv.diffIds, built.diffIds);
  const encrypted = await resolveImage(new OciLayoutSource(join(dir, 'enc'), 'x'));
  assert.deepEqual(
    encrypted.manifest.layers.map((l) => l.digest),
    rv.encryptedLayers,
  );
  const archive = join(dir, 'out.tar');
  await copyImage(
    new OciLayoutSource(join(dir, 'enc'), 'x'),
    new DockerArchiveDestination(archive),
    { decryptKeys: [kp.privateKey] },
  );
  const archiveSource = new DockerArchiveSource(archive);
  t.after(() => archiveSource.close());
  const back = await resolveImage(archiveSource);
  assert.deepEqual(back.config.diffIds, built.diffIds);
  const original = await resolveImage(new OciLayoutSource(built.dir, 'latest'));
  assert.deepEqual(
    back.manifest.layers.map((l) => l.digest),
    original.manifest.layers.map((l) => l.digest),
  );
});

test('a layer refused before its pass leaves no load reserved on the helper threads', async (t) => {
  const dir = tempDir(t);
  const before = helperLoad();
  const l = await encryptedLayer(1000);
  // zstd is refused (not supported yet), after the public options parsed.
  await assert.rejects(
    decryptLayerToFile({
      ciphertext: Readable.from([l.ct]),
      descriptor: {
        ...l.descriptor,
        mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd+encrypted',
      },
      options: l.options,
      stagingPath: join(dir, 'zstd'),
      diffId: l.diffId,
    }),
    { code: 'IMAGE_UNSUPPORTED' },
  );
  // A source file that is not there.
  await assert.rejects(
    encryptLayerToFile({
      plaintext: { path: join(dir, 'missing') },
      descriptor: {
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: sha(l.gz),
        size: l.gz.length,
      },
      options: l.options,
      outPath: join(dir, 'out'),
      diffId: true,
    }),
  );
  assert.equal(helperLoad(), before);
});
