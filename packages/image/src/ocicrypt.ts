/**
 * ocicrypt-compatible layer encryption, as implemented by containers/ocicrypt (there is no
 * merged OCI spec; image-spec#747 is the proposal): `blockcipher/blockcipher_aes_ctr.go`
 * (AES_256_CTR_HMAC_SHA256), `encryption.go` (annotations), `keywrap/jwe/keywrapper_jwe.go`
 * (JWE JSON serialization, go-jose field order), `keywrap/keyprovider` (provider.<name>).
 *
 * Cipher: AES-256-CTR with the 16-byte nonce as the full initial counter block (128-bit
 * big-endian increment, which Node's `aes-256-ctr` matches), no header or trailer, and
 * HMAC-SHA256 over the ciphertext with the same 32-byte key, stored in the public options.
 * Decryption is one pass: it deciphers into a private staging file while it authenticates,
 * and nothing is unpacked, put at the caller's path or returned before the HMAC over the whole
 * ciphertext, its digest and the diff_id verify; on any failure the staged plaintext is
 * removed (docs/adr/0004-single-pass-layer-decryption.md).
 *
 * The layer functions (`encryptLayerToFile`, `decryptLayerToFile`) read into reused buffers
 * and split the work between this thread and the helper threads (`offload.ts`), so both cores
 * work on one layer and nothing is allocated per chunk but the cipher's output.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  timingSafeEqual,
  type Cipher,
  type Hash,
  type Hmac,
  type KeyObject,
} from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import * as jose from 'jose';
import { fileDigest, parseDigest, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { FileChunks, FileSink, StreamChunks, type ChunkSource } from './file-chunks.js';
import { KEY_WRAP_ALGS, type WrapRecipient } from './keys.js';
import { obj, refuseGoFieldTwins, str } from './json.js';
import { OffloadedHash, OffloadedTap, type SinkResult, type SinkSpec } from './offload.js';
import { layerType, type Descriptor } from './manifest.js';
import type { ImageSource } from './transport.js';

export const ENC_ANNOTATION_PREFIX = 'org.opencontainers.image.enc.';
export const PUBOPTS_ANNOTATION = 'org.opencontainers.image.enc.pubopts';
export const JWE_KEYS_ANNOTATION = 'org.opencontainers.image.enc.keys.jwe';
/** Cloister's keyprovider name: `provider:cloister:<arg>` in skopeo, `provider.cloister` here. */
export const CLOISTER_PROVIDER = 'cloister';
export const PROVIDER_KEYS_ANNOTATION = `org.opencontainers.image.enc.keys.provider.${CLOISTER_PROVIDER}`;
export const CIPHER_AES_CTR_HMAC = 'AES_256_CTR_HMAC_SHA256';

/** Read size and stream buffering for layer data: large enough that per-chunk costs vanish. */
export const STREAM_CHUNK = 1024 * 1024;

/** The secret per-layer options ocicrypt wraps for each recipient. */
export interface PrivateOptions {
  readonly symkey: Uint8Array;
  readonly nonce: Uint8Array;
  /** Digest of the plaintext blob. ocicrypt never verifies it; we keep it only for interop. */
  readonly digest: string;
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

function unb64(s: unknown, field: string, len?: number): Uint8Array {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0)
    throw imageError('IMAGE_ENC_MALFORMED', `${field} is not standard base64`, {
      details: { field },
    });
  const b = new Uint8Array(Buffer.from(s, 'base64'));
  if (len !== undefined && b.length !== len)
    throw imageError('IMAGE_ENC_MALFORMED', `${field} must be ${len} bytes`, {
      details: { field, length: b.length },
    });
  return b;
}

/**
 * Parses ocicrypt's options JSON, whose `fields` Go reads into a struct (and whose twins in
 * another case it would read instead: json.ts `refuseGoFieldTwins`).
 */
function parseJson(
  bytes: Uint8Array,
  what: string,
  fields: readonly string[],
): Record<string, unknown> {
  let o: Record<string, unknown>;
  try {
    o = obj(JSON.parse(Buffer.from(bytes).toString('utf8')), what);
  } catch (cause) {
    throw imageError('IMAGE_ENC_MALFORMED', `${what} is not a JSON object`, {
      cause,
      details: { what },
    });
  }
  refuseGoFieldTwins(o, fields, what, 'IMAGE_ENC_MALFORMED');
  return o;
}

/** Fresh random key and nonce for one layer (never reused: CTR with a repeated nonce leaks). */
export function newPrivateOptions(plaintextDigest: Digest): PrivateOptions {
  return { symkey: randomBytes(32), nonce: randomBytes(16), digest: plaintextDigest };
}

/** PrivateOptions JSON exactly as Go's encoding/json writes ocicrypt's struct. */
export function serializePrivateOptions(p: PrivateOptions): Uint8Array {
  return Buffer.from(
    `{"symkey":${JSON.stringify(b64(p.symkey))},"digest":${JSON.stringify(p.digest)},"cipheroptions":{"nonce":${JSON.stringify(b64(p.nonce))}}}`,
  );
}

/** Parses unwrapped PrivateOptions; key and nonce sizes are enforced. */
export function parsePrivateOptions(bytes: Uint8Array): PrivateOptions {
  const o = parseJson(bytes, 'private options', ['symkey', 'digest', 'cipheroptions']);
  const co = obj(o.cipheroptions ?? {}, 'private options.cipheroptions');
  return {
    symkey: unb64(o.symkey, 'private options.symkey', 32),
    nonce: unb64(co.nonce, 'private options.cipheroptions.nonce', 16),
    digest: typeof o.digest === 'string' ? o.digest : '',
  };
}

/** The `pubopts` annotation value: base64 of the PublicOptions JSON (Go field order). */
export function serializePublicOptions(hmac: Uint8Array): string {
  return b64(
    Buffer.from(
      `{"cipher":"${CIPHER_AES_CTR_HMAC}","hmac":${JSON.stringify(b64(hmac))},"cipheroptions":{}}`,
    ),
  );
}

/** Parses the `pubopts` annotation; a missing HMAC is refused like ocicrypt does. */
export function parsePublicOptions(annotation: string | undefined): { hmac: Uint8Array } {
  if (annotation === undefined)
    throw imageError('IMAGE_ENC_MALFORMED', 'encrypted layer has no pubopts annotation', {
      details: { annotation: PUBOPTS_ANNOTATION },
    });
  const o = parseJson(unb64(annotation, 'pubopts'), 'pubopts', ['cipher', 'hmac', 'cipheroptions']);
  const cipher = str(o, 'cipher', 'pubopts');
  if (cipher !== CIPHER_AES_CTR_HMAC)
    throw imageError('IMAGE_UNSUPPORTED', `layer cipher ${cipher} is not supported`, {
      details: { cipher },
    });
  return { hmac: unb64(o.hmac, 'pubopts.hmac', 32) };
}

// ---------------------------------------------------------------------------------------------
// JWE key wrapping (go-jose JSON serialization)

/** Reorders a JWE JSON object into go-jose's field order (rawJSONWebEncryption). */
function goJoseOrder(j: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of ['protected', 'unprotected', 'header']) if (j[k] !== undefined) out[k] = j[k];
  if (Array.isArray(j.recipients))
    out.recipients = (j.recipients as Record<string, unknown>[]).map((r) => {
      const header = r.header as Record<string, unknown> | undefined;
      const epk = header?.epk as Record<string, unknown> | undefined;
      const h =
        header === undefined
          ? undefined
          : {
              ...header,
              ...(epk === undefined
                ? {}
                : { epk: { kty: epk.kty, crv: epk.crv, x: epk.x, y: epk.y } }),
            };
      return { ...(h === undefined ? {} : { header: h }), encrypted_key: r.encrypted_key };
    });
  for (const k of ['aad', 'encrypted_key', 'iv', 'ciphertext', 'tag'])
    if (j[k] !== undefined) out[k] = j[k];
  return out;
}

/**
 * Wraps bytes (PrivateOptions JSON) to recipients like ocicrypt's JWE key wrapper: A256GCM,
 * flattened serialization for one recipient (its `alg` in the protected header), general
 * serialization for several (`alg` per recipient). Returns the JWE JSON bytes.
 */
export async function wrapJwe(
  plaintext: Uint8Array,
  recipients: readonly WrapRecipient[],
): Promise<Uint8Array> {
  if (recipients.length === 0)
    throw imageError('IMAGE_KEY_INVALID', 'at least one recipient key is required', {});
  let jwe: Record<string, unknown>;
  const [first] = recipients;
  if (recipients.length === 1 && first !== undefined) {
    jwe = (await new jose.FlattenedEncrypt(plaintext)
      .setProtectedHeader({ alg: first.alg, enc: 'A256GCM' })
      .encrypt(first.key)) as unknown as Record<string, unknown>;
  } else {
    const g = new jose.GeneralEncrypt(plaintext).setProtectedHeader({ enc: 'A256GCM' });
    for (const r of recipients) g.addRecipient(r.key).setUnprotectedHeader({ alg: r.alg });
    jwe = (await g.encrypt()) as unknown as Record<string, unknown>;
  }
  return Buffer.from(JSON.stringify(goJoseOrder(jwe)));
}

const DECRYPT_OPTIONS = {
  keyManagementAlgorithms: [...KEY_WRAP_ALGS],
  contentEncryptionAlgorithms: [
    'A128GCM',
    'A192GCM',
    'A256GCM',
    'A128CBC-HS256',
    'A192CBC-HS384',
    'A256CBC-HS512',
  ],
};

/**
 * Unwraps a JWE (flattened or general JSON) with any of `keys`; every recipient is tried with
 * every key, since ocicrypt writes no `kid`. Throws IMAGE_NO_KEY when none fits.
 */
export async function unwrapJwe(
  jweBytes: Uint8Array,
  keys: readonly KeyObject[],
): Promise<Uint8Array> {
  // go-jose's JSON serialization fields (RFC 7516 section 7.2).
  const jwe = parseJson(jweBytes, 'JWE', [
    'protected',
    'unprotected',
    'header',
    'recipients',
    'aad',
    'encrypted_key',
    'iv',
    'ciphertext',
    'tag',
  ]);
  for (const key of keys) {
    try {
      const r = Array.isArray(jwe.recipients)
        ? await jose.generalDecrypt(jwe as unknown as jose.GeneralJWE, key, DECRYPT_OPTIONS)
        : await jose.flattenedDecrypt(jwe as unknown as jose.FlattenedJWE, key, DECRYPT_OPTIONS);
      return r.plaintext;
    } catch (e) {
      if (e instanceof jose.errors.JOSENotSupported || e instanceof jose.errors.JWEInvalid) {
        // Wrong key type for this recipient or a shape we do not read: try the next key.
        continue;
      }
      if (e instanceof jose.errors.JOSEError) continue;
      throw e;
    }
  }
  throw imageError('IMAGE_NO_KEY', 'no given key unwraps this layer key', {
    details: { keys: keys.length },
  });
}

/** The wrapped-key items of one scheme annotation (comma-joined base64, ocicrypt `encryption.go`). */
export function wrappedKeyItems(annotation: string | undefined): Uint8Array[] {
  if (annotation === undefined || annotation === '') return [];
  return annotation.split(',').map((s, i) => unb64(s, `wrapped key ${i}`));
}

/** Everything needed to unwrap one layer's key: the annotations of its descriptor. */
export interface WrappedLayerKey {
  readonly layerDigest: Digest;
  readonly annotations: Readonly<Record<string, string>>;
}

/**
 * Given a layer's wrapped keys, returns its PrivateOptions. Implementations: `keyUnwrapper`
 * (local private keys), or one that asks the coordinator after attestation (key release).
 */
export type LayerKeyUnwrapper = (layer: WrappedLayerKey) => Promise<PrivateOptions>;

/**
 * Unwraps a layer key with local private keys: tries the `jwe` scheme and the
 * `provider.cloister` scheme (both hold JWE JSON). Other schemes (pgp, pkcs7, pkcs11, other
 * providers) are not ours and are ignored.
 */
export async function unwrapLayerKey(
  annotations: Readonly<Record<string, string>>,
  keys: readonly KeyObject[],
): Promise<PrivateOptions> {
  const items = [
    ...wrappedKeyItems(annotations[JWE_KEYS_ANNOTATION]),
    ...wrappedKeyItems(annotations[PROVIDER_KEYS_ANNOTATION]),
  ];
  if (items.length === 0)
    throw imageError('IMAGE_NO_KEY', 'the layer has no jwe or provider.cloister wrapped key', {
      details: {
        schemes: Object.keys(annotations)
          .filter((k) => k.startsWith(`${ENC_ANNOTATION_PREFIX}keys.`))
          .map((k) => k.slice(`${ENC_ANNOTATION_PREFIX}keys.`.length)),
      },
    });
  for (const item of items) {
    try {
      return parsePrivateOptions(await unwrapJwe(item, keys));
    } catch (e) {
      if ((e as { code?: string }).code === 'IMAGE_NO_KEY') continue;
      throw e;
    }
  }
  throw imageError('IMAGE_NO_KEY', 'no given key unwraps this layer key', {
    details: { wrappedKeys: items.length, keys: keys.length },
  });
}

/** A `LayerKeyUnwrapper` over local private keys. */
export function keyUnwrapper(keys: readonly KeyObject[]): LayerKeyUnwrapper {
  return (layer) => unwrapLayerKey(layer.annotations, keys);
}

// ---------------------------------------------------------------------------------------------
// Streaming cipher

/** Result of encrypting one layer (the destination computes the ciphertext digest). */
export interface EncryptedLayer {
  readonly size: number;
  readonly hmac: Uint8Array;
}

/**
 * AES-256-CTR + HMAC-SHA256 as a transform: ciphertext out, and after the end the HMAC of
 * the ciphertext. Memory stays flat: one chunk at a time.
 */
export class LayerEncryptStream extends Transform {
  readonly #cipher: Cipher;
  readonly #hmac: Hmac;
  #size = 0;
  #result: EncryptedLayer | undefined;

  constructor(opts: PrivateOptions) {
    super({ highWaterMark: STREAM_CHUNK });
    this.#cipher = createCipheriv('aes-256-ctr', opts.symkey, opts.nonce);
    this.#hmac = createHmac('sha256', opts.symkey);
  }

  #emit(ct: Buffer): void {
    if (ct.length === 0) return;
    this.#hmac.update(ct);
    this.#size += ct.length;
    this.push(ct);
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#emit(this.#cipher.update(chunk));
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.#emit(this.#cipher.final());
    this.#result = {
      size: this.#size,
      hmac: new Uint8Array(this.#hmac.digest()),
    };
    cb();
  }

  get result(): EncryptedLayer {
    if (this.#result === undefined) throw new Error('LayerEncryptStream read before end');
    return this.#result;
  }
}

/** Default cap on a decompressed layer (64 GiB): stops decompression bombs. */
export const MAX_UNCOMPRESSED_LAYER = 64 * 1024 ** 3;

/**
 * Passes bytes through and hashes their decompressed form (the layer's diff_id). It never fails
 * the stream itself: on plaintext that is not yet authenticated, a gzip error must not be
 * reported before the HMAC verdict (that would be an oracle on unauthenticated data). Callers
 * read `digest` after their other checks; it throws the recorded failure, if any.
 */
export class DiffIdStream extends Transform {
  // On the helper thread: the thread running the stream is busy with the cipher and the HMAC.
  readonly #sha = new OffloadedHash();
  readonly #gunzip: Gunzip | undefined;
  readonly #max: number;
  #out = 0;
  #digest: Digest | undefined;
  #failed: Error | undefined;

  constructor(compression: 'none' | 'gzip' | 'zstd', maxUncompressed = MAX_UNCOMPRESSED_LAYER) {
    super({ highWaterMark: STREAM_CHUNK });
    this.#max = maxUncompressed;
    if (compression === 'zstd')
      throw imageError('IMAGE_UNSUPPORTED', 'zstd-compressed layers are not supported yet', {
        details: { compression },
      });
    if (compression === 'gzip') {
      // A deep input buffer lets inflate (on the libuv pool) run while this thread ciphers.
      // Transform options pass through to the stream (not in the ZlibOptions typing).
      const opts = { chunkSize: STREAM_CHUNK, writableHighWaterMark: 4 * STREAM_CHUNK };
      const gz = createGunzip(opts);
      this.#gunzip = gz;
      gz.on('data', (d: Buffer) => {
        const queued = this.#count(d);
        if (queued === undefined) return;
        gz.pause();
        void queued.then(() => gz.resume());
      });
      gz.on('error', (e) => {
        this.#failed ??= imageError('IMAGE_UNPACK_MALFORMED', 'layer is not valid gzip', {
          cause: e,
        });
      });
    }
  }

  #count(d: Buffer): Promise<void> | undefined {
    if (this.#failed) return undefined;
    this.#out += d.length;
    if (this.#out > this.#max) {
      this.#failed = imageError('IMAGE_UNPACK_LIMIT', 'decompressed layer exceeds the size limit', {
        details: { limit: this.#max },
      });
      this.#gunzip?.destroy();
      return undefined;
    }
    return this.#sha.update(d);
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.#failed || this.#gunzip === undefined || this.#gunzip.destroyed) {
      const queued = this.#gunzip === undefined ? this.#count(chunk) : undefined;
      if (queued === undefined) return cb(null, chunk);
      void queued.then(() => cb(null, chunk));
      return;
    }
    if (this.#gunzip.write(chunk)) cb(null, chunk);
    else {
      const go = (): void => {
        this.#gunzip?.off('drain', go);
        this.#gunzip?.off('close', go);
        cb(null, chunk);
      };
      this.#gunzip.on('drain', go);
      this.#gunzip.on('close', go);
    }
  }

  override _flush(cb: TransformCallback): void {
    const done = (): void => {
      if (this.#failed) {
        this.#sha.abandon();
        return cb();
      }
      this.#sha.digest().then(
        (d) => {
          this.#digest = `sha256:${d.toString('hex')}` as Digest;
          cb();
        },
        (e: unknown) => cb(e as Error),
      );
    };
    const gz = this.#gunzip;
    if (gz === undefined || this.#failed || gz.destroyed) return done();
    let finished = false;
    const once = (): void => {
      if (finished) return;
      finished = true;
      done();
    };
    gz.once('end', once);
    gz.once('close', once);
    gz.end();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.#sha.abandon();
    this.#gunzip?.destroy();
    cb(err);
  }

  /** The diff_id; throws the gzip or size failure recorded while streaming. */
  get digest(): Digest {
    if (this.#failed) throw this.#failed;
    if (this.#digest === undefined) throw new Error('DiffIdStream read before end');
    return this.#digest;
  }
}

/**
 * A blob as a local file whose bytes are not verified yet (an OCI layout's or an extracted
 * archive's blob). The layer functions read it in place and check its digest and size.
 */
export interface LocalBlob {
  readonly path: string;
}

/**
 * A blob stream from `ImageSource.getBlob`, whose contract fails the stream on a digest or size
 * mismatch: the layer functions do not hash it again. Only `layerInput` makes one.
 */
export interface SourceBlob {
  readonly verifiedStream: Readable;
}

/**
 * What the layer functions read: a `SourceBlob` (already verified by its source), a `LocalBlob`
 * or any other stream (both checked against the descriptor: a stream in the pass, a local file
 * in the pass when encrypting and by its HMAC when decrypting, ADR 0006).
 */
export type LayerInput = SourceBlob | LocalBlob | Readable;

/** Whether the layer functions must check `input` against its descriptor themselves. */
function unverified(input: LayerInput): boolean {
  return input instanceof Readable || !('verifiedStream' in input);
}

/**
 * Bytes fed to the cipher per call. Node allocates the output of every `update`; allocations
 * up to this size come from the allocator's reused heap, larger ones as fresh pages (faults
 * and zeroing cost more than the AES itself).
 */
const CIPHER_SLICE = 256 * 1024;

/**
 * The loop both directions share: each chunk of `src` goes to `inTap` (one copy), through the
 * cipher in CIPHER_SLICE slices, each slice to `outTap` (one copy), to `outHash` on this thread
 * and to `sink`. A read buffer is released once its tap has copied it, so memory stays flat.
 * Refuses a source longer than `declared` (when given) as soon as it is. Returns the bytes read;
 * the cipher's final block (none for CTR) goes the same way.
 */
async function cipherThrough(o: {
  src: ChunkSource;
  cipher: Cipher;
  inTap: OffloadedTap | undefined;
  outTap: OffloadedTap;
  outHash?: Hash | undefined;
  sink: FileSink;
  declared: Descriptor | undefined;
  onBytes: ((bytes: number, done?: boolean) => void) | undefined;
}): Promise<number> {
  let bytes = 0;
  for (let chunk = await o.src.next(); chunk !== null; chunk = await o.src.next()) {
    bytes += chunk.length;
    if (o.declared !== undefined && bytes > o.declared.size) throw tooLarge(o.declared);
    // A chunk read into shared memory is lent to the input tap's helper (no copy) and goes
    // back to the reader when the helper is done with it; any other is copied into its ring.
    const shared = o.inTap !== undefined && chunk.buffer instanceof SharedArrayBuffer;
    const lent = shared ? o.inTap?.lend(chunk) : undefined;
    const inQueued = shared ? undefined : o.inTap?.update(chunk);
    const parts: Buffer[] = [];
    let outQueued: Promise<void> | undefined;
    for (let at = 0; at < chunk.length; at += CIPHER_SLICE) {
      const out = o.cipher.update(chunk.subarray(at, at + CIPHER_SLICE));
      outQueued = o.outTap.update(out) ?? outQueued;
      o.outHash?.update(out);
      parts.push(out);
    }
    if (inQueued !== undefined) await inQueued;
    if (lent === undefined) o.src.release(chunk);
    else void lent.then(() => o.src.release(chunk));
    if (outQueued !== undefined) await outQueued;
    await o.sink.write(parts);
    o.onBytes?.(bytes);
  }
  o.onBytes?.(bytes, true);
  const tail = o.cipher.final();
  if (tail.length > 0) {
    await o.outTap.update(tail);
    o.outHash?.update(tail);
    await o.sink.write([tail]);
  }
  await o.sink.finish();
  return bytes;
}

/**
 * A layer as the layer functions read it: the source's local file (an OCI layout's or an
 * extracted archive's blob), read in place and checked by them, else its `getBlob` stream,
 * which fails on a digest or size mismatch.
 */
export async function layerInput(src: ImageSource, d: Descriptor): Promise<SourceBlob | LocalBlob> {
  const path = await src.blobFile?.(d);
  return path === undefined ? { verifiedStream: await src.getBlob(d) } : { path };
}

async function chunksOf(input: LayerInput): Promise<ChunkSource> {
  if (input instanceof Readable) return new StreamChunks(input);
  return 'verifiedStream' in input
    ? new StreamChunks(input.verifiedStream)
    : FileChunks.open(input.path);
}

function tooLarge(d: Descriptor): Error {
  return imageError('IMAGE_DIGEST_MISMATCH', `content of ${d.digest} is larger than declared`, {
    details: { digest: d.digest, expectedSize: d.size },
  });
}

/** The same checks as `VerifyingStream`, on a digest computed by a tap. */
function checkBlob(d: Descriptor, bytes: number, r: SinkResult | undefined): void {
  checkSize(d, bytes);
  checkBlobDigest(d, r !== undefined && 'digest' in r ? `sha256:${r.digest.toString('hex')}` : '');
}

function checkSize(d: Descriptor, bytes: number): void {
  if (bytes !== d.size)
    throw imageError('IMAGE_DIGEST_MISMATCH', `content of ${d.digest} has the wrong size`, {
      details: { digest: d.digest, expectedSize: d.size, actualSize: bytes },
    });
}

function checkBlobDigest(d: Descriptor, actual: string): void {
  if (actual !== d.digest)
    throw imageError('IMAGE_DIGEST_MISMATCH', `content does not match ${d.digest}`, {
      details: { expected: d.digest, actual },
    });
}

function unpackLimitError(limit: number): Error {
  return imageError('IMAGE_UNPACK_LIMIT', 'decompressed layer exceeds the size limit', {
    details: { limit },
  });
}

/** The diff_id a `diffIdSink(…, limit)` computed, or the failure it recorded. */
function diffIdOf(r: SinkResult | undefined, limit: number): Digest {
  if (r === undefined) throw new Error('no diff_id result');
  if ('digest' in r) return `sha256:${r.digest.toString('hex')}` as Digest;
  if (r.failure === 'limit') throw unpackLimitError(limit);
  throw imageError('IMAGE_UNPACK_MALFORMED', 'layer is not valid gzip', {
    cause: new Error(r.message),
  });
}

function diffIdSink(
  compression: 'none' | 'gzip' | 'zstd',
  max = MAX_UNCOMPRESSED_LAYER,
): SinkSpec & { kind: 'diffId' } {
  if (compression === 'zstd')
    throw imageError('IMAGE_UNSUPPORTED', 'zstd-compressed layers are not supported yet', {
      details: { compression },
    });
  return { kind: 'diffId', compression, max };
}

/** What `encryptLayerToFile` wrote and computed. */
export interface EncryptedLayerFile extends EncryptedLayer {
  /** Digest of the ciphertext (the encrypted layer's blob digest). */
  readonly digest: Digest;
  /** Digest of the decompressed plaintext, when it was asked for. */
  readonly diffId: Digest | undefined;
}

/**
 * Encrypts one layer blob into a new file `outPath` (created exclusively, mode 0644): AES-256-
 * CTR, HMAC-SHA256 and the ciphertext digest on this thread; the plaintext's digest (for a
 * input that its source has not verified) and its diff_id (with `diffId`) on the helper
 * thread, from one copy of each chunk. Read buffers are reused, so memory stays flat. A
 * `SourceBlob` is not hashed again; a `LocalBlob` or a plain stream is checked against
 * `descriptor`.
 * Throws (and removes `outPath`) on a digest, size, gzip or size-limit failure; the caller
 * compares the returned diff_id with the config's.
 */
export async function encryptLayerToFile(args: {
  plaintext: LayerInput;
  descriptor: Descriptor;
  options: PrivateOptions;
  outPath: string;
  /** Compute the diff_id of the plaintext (gzip inflated) on the way. */
  diffId?: boolean;
  maxUncompressed?: number;
  /** Progress: bytes read so far (`done` on the last call). */
  onBytes?: (bytes: number, done?: boolean) => void;
}): Promise<EncryptedLayerFile> {
  const d = args.descriptor;
  const verify = unverified(args.plaintext);
  const diffSpec =
    args.diffId === true
      ? diffIdSink(layerType(d.mediaType).compression, args.maxUncompressed)
      : undefined;
  // An uncompressed layer's diff_id is its blob's digest: when the blob is hashed anyway, that
  // one hash gives both (the size cap is checked on the byte count).
  const diffIsDigest = verify && diffSpec?.compression === 'none';
  const inSinks: SinkSpec[] = [];
  if (verify) inSinks.push({ kind: 'sha256' });
  if (diffSpec !== undefined && !diffIsDigest) inSinks.push(diffSpec);
  // Opened first: a source that cannot be opened must not leave taps reserved on the helpers.
  const src = await chunksOf(args.plaintext);
  // Plaintext functions from one copy on one helper, ciphertext ones (HMAC and digest) from
  // one copy on another; this thread only reads, enciphers and writes.
  const inTap = inSinks.length > 0 ? new OffloadedTap(inSinks) : undefined;
  const outTap = new OffloadedTap([{ kind: 'hmac', key: args.options.symkey }, { kind: 'sha256' }]);
  let sink: FileSink | undefined;
  try {
    // Ciphertext is not secret: readable like any other blob.
    sink = await FileSink.create(args.outPath, { mode: 0o644 });
    const bytes = await cipherThrough({
      src,
      cipher: createCipheriv('aes-256-ctr', args.options.symkey, args.options.nonce),
      inTap,
      outTap,
      sink,
      declared: verify ? d : undefined,
      onBytes: args.onBytes,
    });
    const inResults = inTap === undefined ? [] : await inTap.results();
    const [mac, out] = await outTap.results();
    if (verify) checkBlob(d, bytes, inResults[0]);
    if (mac === undefined || !('digest' in mac) || out === undefined || !('digest' in out))
      throw new Error('no ciphertext HMAC or digest');
    if (diffIsDigest && bytes > diffSpec.max) throw unpackLimitError(diffSpec.max);
    return {
      size: sink.bytes,
      hmac: new Uint8Array(mac.digest),
      digest: `sha256:${out.digest.toString('hex')}` as Digest,
      diffId:
        diffSpec === undefined
          ? undefined
          : diffIdOf(inResults[verify && !diffIsDigest ? 1 : 0], diffSpec.max),
    };
  } catch (e) {
    inTap?.abandon();
    outTap.abandon();
    await sink?.close();
    await rm(args.outPath, { force: true });
    throw e;
  } finally {
    await src.close();
  }
}

/** What `decryptLayerToFile` verified. */
export interface DecryptedLayer {
  readonly path: string;
  readonly size: number;
  /** The decrypted blob's digest; undefined when the caller passed `digestPlaintext: false`. */
  readonly plaintextDigest: Digest | undefined;
  /** The config's diff_id, verified; undefined when the caller passed `diffId: 'unchecked'`. */
  readonly diffId: Digest | undefined;
}

/** The HMAC a tap computed, compared with the one in the public options. */
function checkHmac(d: Descriptor, r: SinkResult | undefined, want: Uint8Array): void {
  if (r === undefined || !('digest' in r)) throw new Error('no HMAC');
  // Constant-time compare: a timing oracle on the MAC would let a forger learn it bytewise.
  if (r.digest.length !== want.length || !timingSafeEqual(r.digest, want))
    throw imageError('IMAGE_ENC_HMAC_MISMATCH', `HMAC of layer ${d.digest} does not verify`, {
      details: { digest: d.digest },
    });
}

/** What `decryptLayerToFile` takes. */
export interface DecryptLayerArgs {
  readonly ciphertext: LayerInput;
  readonly descriptor: Descriptor;
  readonly options: PrivateOptions;
  readonly stagingPath: string;
  /**
   * The config's diff_id for this layer, which the decompressed plaintext must match; or
   * `'unchecked'` not to decompress at all (what skopeo does), only for a caller that asked not
   * to verify diff_ids. Required, so that no caller skips the check by omission. The digest
   * and HMAC checks are the same either way.
   */
  readonly diffId: Digest | 'unchecked';
  /**
   * Whether to compute the decrypted blob's digest (default true): a caller that writes the blob
   * into an image needs it; one that only unpacks the layer (pull) does not, and saves a
   * SHA-256 pass over every byte. The diff_id is checked either way.
   */
  readonly digestPlaintext?: boolean;
  readonly maxUncompressed?: number;
  /** Progress: ciphertext bytes read so far (`done` on the last call). */
  readonly onBytes?: (bytes: number, done?: boolean) => void;
}

/**
 * Decrypts one encrypted layer into `stagingPath` in a single pass over the ciphertext, and
 * puts a file there only once the layer has verified completely:
 *
 * - each chunk of ciphertext is read once; its digest (unless a `SourceBlob`) and its
 *   HMAC run on one helper thread, AES-256-CTR and the plaintext's digest (unless
 *   `digestPlaintext: false`; an uncompressed layer's is its diff_id) on this thread, and
 *   the diff_id (inflate, capped at `maxUncompressed`, and SHA-256) on another helper;
 * - the plaintext goes to a private sibling file `${stagingPath}.partial` (created exclusively,
 *   mode 0600) while the ciphertext is still unauthenticated;
 * - at the end, in this order: the ciphertext's size and digest against the descriptor
 *   (registry substitution), its HMAC against pubopts, constant-time (tampering by anyone
 *   without the key), then the diff_id against `diffId` (a layer swapped for another
 *   one encrypted under a key the attacker could unwrap). Only when all three verify is the
 *   file renamed to `stagingPath` and the result returned.
 *
 * The ciphertext of a `LocalBlob` is not hashed in the pass: its HMAC already binds it to the
 * descriptor. The HMAC value is in the descriptor's pubopts, next to its digest, so a blob
 * whose HMAC verifies is the blob the descriptor names: another one would need an HMAC-SHA256
 * collision, even for someone holding the key (which a SHA-256 collision bounds). Only when
 * the HMAC fails is the file hashed, to report a substituted or damaged blob as a digest
 * mismatch rather than a failed HMAC. A stream, which cannot be read twice, is hashed in the
 * pass. Either way a layer is refused by the same checks; this saves one of the four SHA-256
 * passes over every byte (ADR 0006).
 *
 * Invariant: nothing is unpacked, nothing is at `stagingPath` and nothing is returned before
 * the whole ciphertext's digest, its HMAC and the diff_id verify. Until then the decrypted
 * bytes are stored only in the private `.partial` file and read only by the hashes and the
 * inflate of the diff_id (which records a gzip or size failure instead of throwing it
 * mid-stream, so an early error is no oracle); on any failure, an exception mid-stream
 * included, that file is removed before the error propagates. The HMAC and the decryption
 * read the same buffer, so what is decrypted is exactly what was authenticated even if the
 * source changes meanwhile.
 *
 * A `SourceBlob` (from `ImageSource.getBlob`, whose contract already fails the stream on a
 * digest or size mismatch) is not hashed again; a `LocalBlob` or a plain stream is always
 * checked. Read buffers are reused and every tap bounds the bytes in flight, so memory stays
 * flat.
 */
export async function decryptLayerToFile(
  args: DecryptLayerArgs & { digestPlaintext?: true },
): Promise<DecryptedLayer & { plaintextDigest: Digest }>;
export async function decryptLayerToFile(args: DecryptLayerArgs): Promise<DecryptedLayer>;
export async function decryptLayerToFile(args: DecryptLayerArgs): Promise<DecryptedLayer> {
  const { descriptor } = args;
  const lt = layerType(descriptor.mediaType);
  if (!lt.encrypted)
    throw imageError('IMAGE_ENC_MALFORMED', 'layer media type is not +encrypted', {
      details: { mediaType: descriptor.mediaType },
    });
  const { hmac } = parsePublicOptions(descriptor.annotations?.[PUBOPTS_ANNOTATION]);
  const partial = `${args.stagingPath}.partial`;
  const input = args.ciphertext;
  // Checked against the descriptor: a local file after the pass (size, and digest if its HMAC
  // fails), a plain stream in the pass; a source's stream was checked by its source.
  const localPath = !(input instanceof Readable) && 'path' in input ? input.path : undefined;
  const hashInPass = input instanceof Readable;
  const verify = hashInPass || localPath !== undefined;
  // The ciphertext's HMAC (and a stream's digest) from one copy on one helper, the diff_id
  // (inflate and SHA-256) on another; this thread reads, deciphers, hashes the plaintext and
  // writes. Of the splits measured on two cores (plaintext digest with the diff_id as in
  // encryption, HMAC here, one tap per function), this one was fastest for one layer at a time
  // (pull) and as fast as any for two at a time (convert).
  // Without the diff_id the other helper hashes the plaintext instead, as in encryption. Decided
  // before any tap is made: an unsupported compression must not leave taps reserved.
  const expectedDiffId = args.diffId === 'unchecked' ? undefined : args.diffId;
  const diffSpec =
    expectedDiffId === undefined ? undefined : diffIdSink(lt.compression, args.maxUncompressed);
  const ctTap = new OffloadedTap([
    ...(hashInPass ? [{ kind: 'sha256' } as const] : []),
    { kind: 'hmac', key: args.options.symkey },
  ]);
  const plainTap = new OffloadedTap([diffSpec ?? { kind: 'sha256' }]);
  // The helper's digest is the plaintext's own unless it inflates: an uncompressed layer's
  // diff_id is its blob's digest. Only a gzip layer's plaintext needs a hash of its own here.
  const plainHash =
    diffSpec?.compression === 'gzip' && args.digestPlaintext !== false
      ? createHash('sha256')
      : undefined;
  let src: ChunkSource | undefined;
  let sink: FileSink | undefined;
  try {
    src = await chunksOf(args.ciphertext);
    sink = await FileSink.create(partial);
    const bytes = await cipherThrough({
      src,
      cipher: createDecipheriv('aes-256-ctr', args.options.symkey, args.options.nonce),
      inTap: ctTap,
      outTap: plainTap,
      outHash: plainHash,
      sink,
      declared: verify ? descriptor : undefined,
      onBytes: args.onBytes,
    });
    // 1. size and digest, 2. HMAC, 3. diff_id: the first failure is the one reported, so a
    // tampered layer is always an HMAC failure, never the gzip error its garbage would give.
    const ct = await ctTap.results();
    if (hashInPass) checkBlob(descriptor, bytes, ct[0]);
    else if (verify) checkSize(descriptor, bytes);
    try {
      checkHmac(descriptor, ct[hashInPass ? 1 : 0], hmac);
    } catch (e) {
      // Refused either way; the digest only says why (a substituted or damaged blob).
      if (localPath !== undefined)
        checkBlobDigest(descriptor, (await fileDigest(localPath)).digest);
      throw e;
    }
    const helperDigest = diffIdOf(
      (await plainTap.results())[0],
      diffSpec?.max ?? MAX_UNCOMPRESSED_LAYER,
    );
    const diffId = diffSpec === undefined ? undefined : helperDigest;
    const plaintextDigest =
      plainHash !== undefined
        ? (`sha256:${plainHash.digest('hex')}` as Digest)
        : diffSpec === undefined || args.digestPlaintext !== false
          ? helperDigest
          : undefined;
    if (diffId !== expectedDiffId)
      throw imageError(
        'IMAGE_DIFF_ID_MISMATCH',
        `layer ${descriptor.digest} does not match its diff_id`,
        {
          details: {
            digest: descriptor.digest,
            expected: expectedDiffId,
            actual: diffId,
          },
        },
      );
    await rename(partial, args.stagingPath);
    return {
      path: args.stagingPath,
      size: sink.bytes,
      plaintextDigest,
      diffId,
    };
  } catch (e) {
    ctTap.abandon();
    plainTap.abandon();
    await sink?.close();
    if (sink !== undefined) await rm(partial, { force: true });
    throw e;
  } finally {
    await src?.close();
  }
}

/** Strips `+encrypted` and every `org.opencontainers.image.enc.*` annotation (ocicrypt decrypt). */
export function decryptedDescriptor(
  d: Descriptor,
  plain: { digest: Digest; size: number },
): Descriptor {
  const annotations = Object.fromEntries(
    Object.entries(d.annotations ?? {}).filter(([k]) => !k.startsWith(ENC_ANNOTATION_PREFIX)),
  );
  return {
    mediaType: layerType(d.mediaType).plain,
    digest: plain.digest,
    size: plain.size,
    ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
    ...(d.platform === undefined ? {} : { platform: d.platform }),
  };
}

/** Validates a digest string coming from ocicrypt private options (informational only). */
export function privateOptionsDigest(p: PrivateOptions): Digest | undefined {
  try {
    return parseDigest(p.digest);
  } catch {
    return undefined;
  }
}
