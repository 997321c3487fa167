/**
 * The file-to-file layer functions and the helper-thread taps behind them: a diff_id computed
 * on a helper equals the in-thread one for any chunking, ciphertext written from a local blob
 * equals the streaming cipher's, and a local blob is checked (digest, size, HMAC, diff_id)
 * before anything is kept.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import type { Digest } from '../src/digest.js';
import { FileChunks } from '../src/file-chunks.js';
import {
  LayerEncryptStream,
  PUBOPTS_ANNOTATION,
  decryptLayerToFile,
  encryptLayerToFile,
  newPrivateOptions,
  serializePublicOptions,
} from '../src/ocicrypt.js';
import { OffloadedTap, type SinkResult } from '../src/offload.js';
import { tempDir } from './helpers.js';

const sha = (b: Uint8Array): Digest =>
  `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
const hex = (r: SinkResult | undefined): string =>
  r !== undefined && 'digest' in r
    ? `sha256:${r.digest.toString('hex')}`
    : `failed:${JSON.stringify(r)}`;
const code = (e: unknown): string | undefined => (e as { code?: string }).code;
/** Files in `dir` named `stagingPath` or after it (what a decryption may have staged). */
const staged = (dir: string, stagingPath: string): string[] =>
  readdirSync(dir).filter((n) => n.startsWith(basename(stagingPath)));

async function feed(tap: OffloadedTap, b: Uint8Array, cuts: number[]): Promise<SinkResult[]> {
  let at = 0;
  for (const c of [...cuts.map((x) => x % (b.length + 1)).sort((x, y) => x - y), b.length]) {
    await tap.update(b.subarray(at, Math.max(at, c)));
    at = Math.max(at, c);
  }
  return tap.results();
}

test('taps: digest, HMAC and gzip diff_id on a helper equal in-thread ones for any chunking', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 200_000 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.boolean(),
      async (plain, cuts, offload) => {
        const gz = gzipSync(plain, { level: 1 });
        const key = Buffer.from('k');
        const r = await feed(
          new OffloadedTap(
            [
              { kind: 'sha256' },
              { kind: 'hmac', key },
              { kind: 'diffId', compression: 'gzip', max: 1e9 },
              { kind: 'diffId', compression: 'none', max: 1e9 },
            ],
            { offload },
          ),
          gz,
          cuts,
        );
        assert.equal(hex(r[0]), sha(gz));
        assert.equal(hex(r[1]), `sha256:${createHmac('sha256', key).update(gz).digest('hex')}`);
        assert.equal(hex(r[2]), sha(plain));
        assert.equal(hex(r[3]), sha(gz));
      },
    ),
    { numRuns: 40 },
  );
});

test('taps: malformed gzip and an exceeded cap are recorded, not thrown', async () => {
  const plain = randomBytes(3 * 1024 * 1024);
  const gz = gzipSync(plain, { level: 0 });
  for (const offload of [true, false]) {
    const bad = Buffer.from(gz);
    bad[20] = (bad[20] as number) ^ 0xff;
    const tampered = await feed(
      new OffloadedTap([{ kind: 'diffId', compression: 'gzip', max: 1e9 }], { offload }),
      bad.subarray(0, bad.length - 1000),
      [100_000],
    );
    assert.ok(tampered[0] !== undefined && 'failure' in tampered[0]);
    const capped = await feed(
      new OffloadedTap([{ kind: 'diffId', compression: 'gzip', max: 1024 * 1024 }], { offload }),
      gz,
      [1_000_000, 2_000_000],
    );
    assert.deepEqual(
      capped[0] !== undefined && 'failure' in capped[0] && capped[0].failure,
      'limit',
    );
  }
});

test('FileChunks yields a file front to back with reused buffers', async (t) => {
  const dir = tempDir(t);
  const data = randomBytes(3 * 1024 * 1024 + 777);
  writeFileSync(join(dir, 'f'), data);
  const r = await FileChunks.open(join(dir, 'f'), 256 * 1024, 2);
  const got: Buffer[] = [];
  const held: Buffer[] = [];
  for (let c = await r.next(); c !== null; c = await r.next()) {
    got.push(Buffer.from(c));
    held.push(c);
    // Give buffers back late: the reader waits for one rather than ending early.
    if (held.length === 2) r.release(held.shift() as Buffer);
  }
  await r.close();
  assert.deepEqual(Buffer.concat(got), data);
});

/**
 * A gzip layer blob in a file (`blob`), with its encrypted form from the streaming cipher, also
 * in a file (`ct`).
 */
async function layer(dir: string, n: number, compression: 'gzip' | 'none' = 'gzip') {
  const plain = randomBytes(n);
  const gz = compression === 'gzip' ? gzipSync(plain, { level: 0 }) : plain;
  const mediaType = `application/vnd.oci.image.layer.v1.tar${compression === 'gzip' ? '+gzip' : ''}`;
  writeFileSync(join(dir, 'blob'), gz);
  const options = newPrivateOptions(sha(gz));
  const enc = new LayerEncryptStream(options);
  const out: Buffer[] = [];
  await pipeline(Readable.from([gz]), enc, async (s: AsyncIterable<Buffer>) => {
    for await (const c of s) out.push(c);
  });
  const ct = Buffer.concat(out);
  writeFileSync(join(dir, 'ct'), ct);
  return {
    plain,
    gz,
    ct,
    options,
    hmac: enc.result.hmac,
    source: { mediaType, digest: sha(gz), size: gz.length },
    encrypted: {
      mediaType: `${mediaType}+encrypted`,
      digest: sha(ct),
      size: ct.length,
      annotations: { [PUBOPTS_ANNOTATION]: serializePublicOptions(enc.result.hmac) },
    },
  };
}

test('encryptLayerToFile from a local blob equals the streaming cipher, and checks the blob', async (t) => {
  const dir = tempDir(t);
  const l = await layer(dir, 2 * 1024 * 1024 + 5);
  const out = join(dir, 'out');
  const r = await encryptLayerToFile({
    plaintext: { path: join(dir, 'blob') },
    descriptor: l.source,
    options: l.options,
    outPath: out,
    diffId: true,
  });
  assert.deepEqual(readFileSync(out), l.ct);
  assert.deepEqual(r.hmac, l.hmac);
  assert.equal(r.digest, sha(l.ct));
  assert.equal(r.size, l.ct.length);
  assert.equal(r.diffId, sha(l.plain));

  // A blob that does not match its descriptor: refused, nothing left behind.
  const bad = Buffer.from(l.gz);
  bad[bad.length - 100] = (bad[bad.length - 100] as number) ^ 1;
  writeFileSync(join(dir, 'blob'), bad);
  for (const descriptor of [l.source, { ...l.source, size: l.gz.length - 1 }]) {
    const p = join(dir, `out-${descriptor.size}`);
    await assert.rejects(
      encryptLayerToFile({
        plaintext: { path: join(dir, 'blob') },
        descriptor,
        options: l.options,
        outPath: p,
        diffId: true,
      }),
      (e) => code(e) === 'IMAGE_DIGEST_MISMATCH',
    );
    assert.equal(existsSync(p), false);
  }
});

test('encryptLayerToFile checks a plain stream; only a source-verified stream is trusted', async (t) => {
  const dir = tempDir(t);
  const l = await layer(dir, 300 * 1024 + 1);
  const bad = Buffer.from(l.gz);
  bad[7] = (bad[7] as number) ^ 1;
  const out = join(dir, 'out');
  await assert.rejects(
    encryptLayerToFile({
      plaintext: Readable.from([bad]),
      descriptor: l.source,
      options: l.options,
      outPath: out,
    }),
    (e) => code(e) === 'IMAGE_DIGEST_MISMATCH',
  );
  assert.equal(existsSync(out), false);
  // The same bytes as a SourceBlob (what layerInput makes of getBlob, which has checked them
  // already) are not hashed again: the caller vouched for them.
  const r = await encryptLayerToFile({
    plaintext: { verifiedStream: Readable.from([l.gz]) },
    descriptor: l.source,
    options: l.options,
    outPath: out,
  });
  assert.deepEqual(readFileSync(out), l.ct);
  assert.equal(r.digest, sha(l.ct));
});

test('decryptLayerToFile from a local blob: always checked against the descriptor', async (t) => {
  const dir = tempDir(t);
  const l = await layer(dir, 1024 * 1024 + 3);
  const ok = await decryptLayerToFile({
    ciphertext: { path: join(dir, 'ct') },
    descriptor: l.encrypted,
    options: l.options,
    stagingPath: join(dir, 'plain'),
    diffId: sha(l.plain),
  });
  assert.deepEqual(readFileSync(ok.path), l.gz);
  assert.equal(ok.plaintextDigest, sha(l.gz));

  const bad = Buffer.from(l.ct);
  bad[10] = (bad[10] as number) ^ 1;
  writeFileSync(join(dir, 'ct'), bad);
  const cases: [Record<string, unknown>, string][] = [
    // Substituted bytes under the same descriptor.
    [{}, 'IMAGE_DIGEST_MISMATCH'],
    // A descriptor naming the tampered bytes: the HMAC still refuses them.
    [{ digest: sha(bad) }, 'IMAGE_ENC_HMAC_MISMATCH'],
    // A blob longer than declared: refused mid-stream, once a chunk was decrypted.
    [{ digest: sha(bad), size: bad.length - 1 }, 'IMAGE_DIGEST_MISMATCH'],
    // A blob shorter than declared: refused at the end.
    [{ digest: sha(bad), size: bad.length + 1 }, 'IMAGE_DIGEST_MISMATCH'],
  ];
  for (const [i, [patch, want]] of cases.entries()) {
    const staging = join(dir, `plain-${i}`);
    await assert.rejects(
      decryptLayerToFile({
        ciphertext: { path: join(dir, 'ct') },
        descriptor: { ...l.encrypted, ...patch },
        options: l.options,
        stagingPath: staging,
        diffId: sha(l.plain),
      }),
      (e) => code(e) === want,
    );
    // No staged file of any name is left, plaintext or ciphertext.
    assert.deepEqual(staged(dir, staging), []);
  }

  // Authentic ciphertext of another layer than the config names.
  writeFileSync(join(dir, 'ct'), l.ct);
  // Authentic bytes under a descriptor whose digest is wrong: the HMAC from the same descriptor
  // binds them (ADR 0006), and the output is named by its own digest.
  const named = await decryptLayerToFile({
    ciphertext: { path: join(dir, 'ct') },
    descriptor: { ...l.encrypted, digest: sha(Buffer.from('not this blob')) },
    options: l.options,
    stagingPath: join(dir, 'plain-named'),
    diffId: sha(l.plain),
  });
  assert.equal(named.plaintextDigest, sha(l.gz));
  await assert.rejects(
    decryptLayerToFile({
      ciphertext: { path: join(dir, 'ct') },
      descriptor: l.encrypted,
      options: l.options,
      stagingPath: join(dir, 'plain-diff'),
      diffId: sha(Buffer.from('another layer')),
    }),
    (e) => code(e) === 'IMAGE_DIFF_ID_MISMATCH',
  );
  assert.deepEqual(staged(dir, join(dir, 'plain-diff')), []);
});

test('an uncompressed layer: one hash gives its digest and diff_id, still checked and capped', async (t) => {
  const dir = tempDir(t);
  const l = await layer(dir, 1024 * 1024 + 9, 'none');
  const encArgs = {
    plaintext: { path: join(dir, 'blob') },
    descriptor: l.source,
    options: l.options,
    diffId: true,
  };
  const enc = await encryptLayerToFile({ ...encArgs, outPath: join(dir, 'out') });
  assert.deepEqual(readFileSync(join(dir, 'out')), l.ct);
  assert.equal(enc.diffId, sha(l.plain));
  await assert.rejects(
    encryptLayerToFile({
      ...encArgs,
      outPath: join(dir, 'out-capped'),
      maxUncompressed: l.plain.length - 1,
    }),
    // The limit reported is the one in force.
    (e) =>
      code(e) === 'IMAGE_UNPACK_LIMIT' &&
      (e as { details?: { limit?: number } }).details?.limit === l.plain.length - 1,
  );
  assert.equal(existsSync(join(dir, 'out-capped')), false);

  const decArgs = {
    ciphertext: { path: join(dir, 'ct') },
    descriptor: l.encrypted,
    options: l.options,
  };
  const dec = await decryptLayerToFile({
    ...decArgs,
    stagingPath: join(dir, 'plain'),
    diffId: sha(l.plain),
  });
  assert.deepEqual(readFileSync(dec.path), l.plain);
  assert.equal(dec.plaintextDigest, sha(l.plain));
  assert.equal(dec.diffId, sha(l.plain));
  const pulled = await decryptLayerToFile({
    ...decArgs,
    stagingPath: join(dir, 'plain-pull'),
    diffId: sha(l.plain),
    digestPlaintext: false,
  });
  assert.equal(pulled.plaintextDigest, undefined);
  for (const [i, [patch, want]] of (
    [
      [{ diffId: sha(Buffer.from('another layer')) }, 'IMAGE_DIFF_ID_MISMATCH'],
      [{ diffId: sha(l.plain), maxUncompressed: l.plain.length - 1 }, 'IMAGE_UNPACK_LIMIT'],
    ] as const
  ).entries()) {
    const staging = join(dir, `refused-${i}`);
    await assert.rejects(
      decryptLayerToFile({ ...decArgs, stagingPath: staging, ...patch }),
      (e) => code(e) === want,
    );
    assert.deepEqual(staged(dir, staging), []);
  }
});

test("decryptLayerToFile with diffId 'unchecked': no diff_id, the same digest and HMAC checks", async (t) => {
  const dir = tempDir(t);
  const l = await layer(dir, 512 * 1024 + 7);
  const ok = await decryptLayerToFile({
    ciphertext: { path: join(dir, 'ct') },
    descriptor: l.encrypted,
    options: l.options,
    stagingPath: join(dir, 'plain'),
    diffId: 'unchecked',
  });
  assert.deepEqual(readFileSync(ok.path), l.gz);
  assert.equal(ok.plaintextDigest, sha(l.gz));
  assert.equal(ok.diffId, undefined);

  const bad = Buffer.from(l.ct);
  bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
  writeFileSync(join(dir, 'ct'), bad);
  for (const [patch, want] of [
    [{}, 'IMAGE_DIGEST_MISMATCH'],
    [{ digest: sha(bad) }, 'IMAGE_ENC_HMAC_MISMATCH'],
  ] as const) {
    await assert.rejects(
      decryptLayerToFile({
        ciphertext: { path: join(dir, 'ct') },
        descriptor: { ...l.encrypted, ...patch },
        options: l.options,
        stagingPath: join(dir, 'plain-bad'),
        diffId: 'unchecked',
      }),
      (e) => code(e) === want,
    );
    assert.deepEqual(staged(dir, join(dir, 'plain-bad')), []);
  }
});
