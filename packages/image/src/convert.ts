/**
 * The copy pipeline behind `cloister image convert|decrypt` and guest pull: read a verified
 * image, encrypt or decrypt its layers in the ocicrypt format, write it, and report the
 * reference values (manifest digest, config digest, diff_ids, encrypted layer digests) a
 * Cloister manifest pins.
 */
import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sha256Digest, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { MAX_METADATA_BYTES, utf8 } from './json.js';
import type { WrapRecipient } from './keys.js';
import {
  DEFAULT_PLATFORM,
  MEDIA_TYPES,
  descriptorJson,
  layerType,
  ociLayerMediaType,
  parseConfig,
  parseManifestOrIndex,
  selectPlatform,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type Platform,
} from './manifest.js';
import {
  DiffIdStream,
  JWE_KEYS_ANNOTATION,
  LayerEncryptStream,
  PROVIDER_KEYS_ANNOTATION,
  PUBOPTS_ANNOTATION,
  STREAM_CHUNK,
  decryptLayerToFile,
  layerInput,
  encryptLayerToFile,
  decryptedDescriptor,
  keyUnwrapper,
  newPrivateOptions,
  serializePrivateOptions,
  serializePublicOptions,
  wrapJwe,
  type LayerKeyUnwrapper,
} from './ocicrypt.js';
import { RegistryDestination, RegistrySource } from './registry.js';
import type { ImageDestination, ImageSource, ManifestBlob } from './transport.js';

/** Layers copied at the same time (memory per layer is a few MiB of stream buffers). */
const LAYER_CONCURRENCY = 2;

/**
 * Runs `fn` over `items` with at most `limit` at a time, results in input order. After a
 * failure no new item starts; the running ones settle before the first error is thrown, so the
 * caller's cleanup never races a writer.
 */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (i: number, item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  let failure: { e: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(i, items[i] as T);
      } catch (e) {
        failure ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure !== undefined) throw failure.e;
  return out;
}

/** Progress of a long copy, for progress bars. */
export interface ProgressEvent {
  readonly phase: 'manifest' | 'layer' | 'config' | 'done';
  readonly layer?: number;
  readonly layers?: number;
  readonly bytes?: number;
  readonly total?: number;
}

export interface CopyOptions {
  /** `jwe:` recipients: the layer key is wrapped to each (annotation `enc.keys.jwe`). */
  readonly recipients?: readonly WrapRecipient[];
  /** Coordinator key: the layer key is wrapped to it under `enc.keys.provider.cloister`. */
  readonly coordinatorKey?: WrapRecipient;
  /** Decrypt encrypted layers with these private keys (or `unwrap`). */
  readonly decryptKeys?: readonly KeyObject[];
  readonly unwrap?: LayerKeyUnwrapper;
  readonly platform?: Platform;
  readonly onProgress?: (e: ProgressEvent) => void;
  /** Where decrypted layers are staged before they are verified (default: a temp dir). */
  readonly stagingDir?: string;
  /**
   * Check each layer against the config's diff_id (default true): the source's plaintext when
   * encrypting, the decrypted plaintext when decrypting. Off, the copy does what skopeo does
   * (blob digests, and the HMAC when decrypting) and a wrong diff_id surfaces only where the
   * image is unpacked (the agent's pull always checks it); the reference values then repeat
   * the source config's diff_ids unchecked.
   */
  readonly verifyDiffIds?: boolean;
}

/** What a Cloister manifest pins for an image. */
export interface ReferenceValues {
  readonly manifestDigest: Digest;
  readonly manifestMediaType: string;
  readonly manifestSize: number;
  readonly configDigest: Digest;
  readonly diffIds: readonly Digest[];
  readonly platform: Platform;
  readonly layers: readonly {
    readonly digest: Digest;
    readonly size: number;
    readonly mediaType: string;
    readonly encrypted: boolean;
    readonly keySchemes: readonly string[];
  }[];
  /** Digests of the encrypted layers (the ones a coordinator may release keys for). */
  readonly encryptedLayers: readonly Digest[];
}

class ProgressTap extends Transform {
  #bytes = 0;
  #last = 0;
  readonly report: (bytes: number) => void;
  constructor(report: (bytes: number) => void) {
    super({ highWaterMark: STREAM_CHUNK });
    this.report = report;
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length;
    const now = Date.now();
    if (now - this.#last > 100) {
      this.#last = now;
      this.report(this.#bytes);
    }
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.report(this.#bytes);
    cb();
  }
}

/** A progress callback called at most every 100 ms (and always with the final count). */
function throttled(report: (bytes: number) => void): (bytes: number, done?: boolean) => void {
  let last = 0;
  return (bytes, done) => {
    const now = Date.now();
    if (done === true || now - last > 100) {
      last = now;
      report(bytes);
    }
  };
}

async function readAll(stream: Readable, max: number, what: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of stream as AsyncIterable<Buffer>) {
    total += c.length;
    if (total > max) {
      stream.destroy();
      throw imageError('IMAGE_TOO_LARGE', `${what} is larger than ${max} bytes`, {
        details: { what, limit: max },
      });
    }
    chunks.push(c);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/** An image's metadata as a source serves it: what `resolveImage` fetched and checked. */
export interface ResolvedImage {
  /** What the reference names: the manifest, or the index it was selected from. */
  readonly top: ManifestBlob;
  readonly manifestBlob: ManifestBlob;
  readonly manifest: ImageManifest;
  readonly configBytes: Uint8Array;
  readonly config: ImageConfig;
}

/** Resolves the source's manifest (choosing a platform from an index) and its config. */
export async function resolveImage(
  src: ImageSource,
  platform: Platform = DEFAULT_PLATFORM,
): Promise<ResolvedImage> {
  const top = await src.getManifest();
  let manifestBlob = top;
  let parsed = parseManifestOrIndex(top.bytes, top.mediaType);
  if (parsed.kind === 'index') {
    const d = selectPlatform(parsed, platform);
    manifestBlob = await src.getManifestByDescriptor(d);
    parsed = parseManifestOrIndex(manifestBlob.bytes, d.mediaType);
    if (parsed.kind !== 'manifest')
      throw imageError('IMAGE_MALFORMED', 'an index entry is not an image manifest', {});
  }
  const manifest = parsed;
  if (manifest.config.size > MAX_METADATA_BYTES)
    throw imageError('IMAGE_TOO_LARGE', 'image config is too large', {
      details: { size: manifest.config.size, limit: MAX_METADATA_BYTES },
    });
  const configBytes = await readAll(
    await src.getBlob(manifest.config),
    MAX_METADATA_BYTES,
    'config',
  );
  const config = parseConfig(configBytes);
  if (config.diffIds.length !== manifest.layers.length)
    throw imageError('IMAGE_MALFORMED', 'config diff_ids and manifest layers differ in number', {
      details: { diffIds: config.diffIds.length, layers: manifest.layers.length },
    });
  return { top, manifestBlob, manifest, configBytes, config };
}

function keySchemes(d: Descriptor): string[] {
  const prefix = 'org.opencontainers.image.enc.keys.';
  return Object.keys(d.annotations ?? {})
    .filter((k) => k.startsWith(prefix))
    .map((k) => k.slice(prefix.length))
    .sort();
}

/** Reference values of an image as stored (no copy). */
export function referenceValues(
  manifestBlob: ManifestBlob,
  manifest: ImageManifest,
  config: ImageConfig,
): ReferenceValues {
  const layers = manifest.layers.map((l) => ({
    digest: l.digest,
    size: l.size,
    mediaType: l.mediaType,
    encrypted: l.mediaType.endsWith('+encrypted'),
    keySchemes: keySchemes(l),
  }));
  return {
    manifestDigest: manifestBlob.digest,
    manifestMediaType: manifest.mediaType,
    manifestSize: manifestBlob.bytes.length,
    configDigest: manifest.config.digest,
    diffIds: config.diffIds,
    platform: {
      os: config.os,
      architecture: config.architecture,
      ...(config.variant === undefined ? {} : { variant: config.variant }),
    },
    layers,
    encryptedLayers: layers.filter((l) => l.encrypted).map((l) => l.digest),
  };
}

async function copyBlobThrough(
  src: ImageSource,
  dst: ImageDestination,
  d: Descriptor,
): Promise<void> {
  if (await dst.hasBlob(d)) return;
  if (dst.tryMount !== undefined && (await dst.tryMount(d))) return;
  await dst.putBlob(await src.getBlob(d), d);
}

/**
 * Copies one image from `src` to `dst`, encrypting (recipients/coordinatorKey), decrypting
 * (decryptKeys/unwrap) or passing layers through. The destination is committed only after
 * every blob was verified and written; on failure it is aborted.
 */
export async function copyImage(
  src: ImageSource,
  dst: ImageDestination,
  opts: CopyOptions = {},
): Promise<ReferenceValues> {
  const encrypt = (opts.recipients?.length ?? 0) > 0 || opts.coordinatorKey !== undefined;
  const unwrap =
    opts.unwrap ?? (opts.decryptKeys !== undefined ? keyUnwrapper(opts.decryptKeys) : undefined);
  if (encrypt && unwrap !== undefined)
    throw imageError('IMAGE_ALREADY_ENCRYPTED', 'cannot decrypt and encrypt in one copy', {});
  if (encrypt && !dst.supportsEncryption)
    throw imageError('IMAGE_UNSUPPORTED', `${dst.description} cannot hold encrypted layers`, {});
  if (src instanceof RegistrySource && dst instanceof RegistryDestination)
    if (src.ref.registry === dst.ref.registry) dst.mountFrom = src.ref.repository;

  const progress = opts.onProgress ?? (() => undefined);
  progress({ phase: 'manifest' });
  const { manifestBlob, manifest, configBytes, config } = await resolveImage(src, opts.platform);
  const anyEncrypted = manifest.layers.some((l) => layerType(l.mediaType).encrypted);
  if (encrypt && anyEncrypted)
    throw imageError(
      'IMAGE_ALREADY_ENCRYPTED',
      'the source image already has encrypted layers',
      {},
    );
  if (anyEncrypted && unwrap === undefined && !dst.supportsEncryption)
    throw imageError('IMAGE_UNSUPPORTED', `${dst.description} cannot hold encrypted layers`, {});

  let staging: string | undefined;
  const stagingRoot = async (): Promise<string> =>
    (staging ??= await mkdtemp(join(opts.stagingDir ?? tmpdir(), 'cloister-layers-')));
  const toOci = encrypt && manifest.mediaType === MEDIA_TYPES.dockerManifest;
  const newLayers: Descriptor[] = [];
  let changed = toOci;
  try {
    const copyLayer = async (i: number, layer: Descriptor): Promise<Descriptor> => {
      const lt = layerType(layer.mediaType);
      const report = (bytes: number): void =>
        progress({
          phase: 'layer',
          layer: i,
          layers: manifest.layers.length,
          bytes,
          total: layer.size,
        });
      const diffId = config.diffIds[i] as Digest;
      if (encrypt) {
        const priv = newPrivateOptions(layer.digest);
        const privBytes = serializePrivateOptions(priv);
        const annotations: Record<string, string> = { ...(layer.annotations ?? {}) };
        if ((opts.recipients?.length ?? 0) > 0)
          annotations[JWE_KEYS_ANNOTATION] = Buffer.from(
            await wrapJwe(privBytes, opts.recipients ?? []),
          ).toString('base64');
        if (opts.coordinatorKey !== undefined)
          annotations[PROVIDER_KEYS_ANNOTATION] = Buffer.from(
            await wrapJwe(privBytes, [opts.coordinatorKey]),
          ).toString('base64');
        // Hash the plaintext's decompressed form on the way: we refuse to encrypt (and print
        // reference values for) a layer that does not match the config's diff_id.
        const checkDiffId = opts.verifyDiffIds !== false;
        let encrypted: {
          digest: Digest;
          size: number;
          hmac: Uint8Array;
          diffId?: Digest | undefined;
        };
        if (dst.adoptBlobFile !== undefined) {
          // Into a staging file the destination adopts: reused buffers, the helper thread
          // verifying the source and computing the diff_id (see encryptLayerToFile).
          // Ciphertext is not secret: staged next to the destination when it offers a place.
          const path =
            dst.blobStagingPath !== undefined
              ? await dst.blobStagingPath()
              : join(await stagingRoot(), `layer-${i}`);
          try {
            const r = await encryptLayerToFile({
              plaintext: await layerInput(src, layer),
              descriptor: layer,
              options: priv,
              outPath: path,
              diffId: checkDiffId,
              onBytes: throttled(report),
            });
            encrypted = r;
            if (!checkDiffId || r.diffId === diffId)
              await dst.adoptBlobFile(path, {
                mediaType: layer.mediaType,
                digest: r.digest,
                size: r.size,
              });
          } finally {
            await rm(path, { force: true });
          }
          report(layer.size);
        } else {
          const enc = new LayerEncryptStream(priv);
          const body = await src.getBlob(layer);
          const out = new ProgressTap(report);
          const put = dst.putBlob(out);
          put.catch((e: unknown) => out.destroy(e as Error));
          if (checkDiffId) {
            const diff = new DiffIdStream(lt.compression);
            const [, stored] = await Promise.all([pipeline(body, diff, enc, out), put]);
            encrypted = { ...stored, hmac: enc.result.hmac, diffId: diff.digest };
          } else {
            const [, stored] = await Promise.all([pipeline(body, enc, out), put]);
            encrypted = { ...stored, hmac: enc.result.hmac };
          }
        }
        if (checkDiffId && encrypted.diffId !== diffId)
          throw imageError(
            'IMAGE_DIFF_ID_MISMATCH',
            `source layer ${i} does not match its diff_id`,
            {
              details: { layer: i, expected: diffId, actual: encrypted.diffId },
            },
          );
        annotations[PUBOPTS_ANNOTATION] = serializePublicOptions(encrypted.hmac);
        changed = true;
        return {
          mediaType: `${ociLayerMediaType(layer.mediaType)}+encrypted`.replace(
            /\+encrypted\+encrypted$/,
            '+encrypted',
          ),
          digest: encrypted.digest,
          size: encrypted.size,
          annotations,
        };
      } else if (lt.encrypted && unwrap !== undefined) {
        const priv = await unwrap({
          layerDigest: layer.digest,
          annotations: layer.annotations ?? {},
        });
        const path = join(await stagingRoot(), `layer-${i}`);
        const dec = await decryptLayerToFile({
          ciphertext: await layerInput(src, layer),
          descriptor: layer,
          options: priv,
          stagingPath: path,
          diffId: opts.verifyDiffIds === false ? 'unchecked' : diffId,
          onBytes: throttled(report),
        });
        const plain = decryptedDescriptor(layer, { digest: dec.plaintextDigest, size: dec.size });
        if (dst.adoptBlobFile !== undefined) await dst.adoptBlobFile(path, plain);
        else await dst.putBlob(createReadStream(path, { highWaterMark: STREAM_CHUNK }), plain);
        await rm(path, { force: true });
        changed = true;
        return plain;
      } else {
        await copyBlobThrough(src, dst, layer);
        report(layer.size);
        return toOci ? { ...layer, mediaType: ociLayerMediaType(layer.mediaType) } : layer;
      }
    };
    // Layers are independent: two at a time keep both cores busy (while one layer waits on
    // I/O or the hash thread, the other ciphers). Order in the manifest is kept by index.
    newLayers.push(...(await mapLimit(manifest.layers, LAYER_CONCURRENCY, copyLayer)));
    progress({ phase: 'config' });
    const configDesc: Descriptor = toOci
      ? { ...manifest.config, mediaType: MEDIA_TYPES.ociConfig }
      : manifest.config;
    if (!(await dst.hasBlob(configDesc)))
      await dst.putBlob(Readable.from([Buffer.from(configBytes)]), configDesc);

    let out: ManifestBlob = manifestBlob;
    if (changed) {
      const raw: Record<string, unknown> = {
        ...manifest.raw,
        ...(toOci ? { mediaType: MEDIA_TYPES.ociManifest } : {}),
        config: descriptorJson(configDesc),
        layers: newLayers.map(descriptorJson),
      };
      const bytes = utf8(JSON.stringify(raw));
      out = {
        bytes,
        mediaType: toOci ? MEDIA_TYPES.ociManifest : manifest.mediaType,
        digest: sha256Digest(bytes),
      };
    }
    await dst.putManifest(out.bytes, out.mediaType);
    await dst.commit(out);
    progress({ phase: 'done' });
    const final = parseManifestOrIndex(out.bytes, out.mediaType) as ImageManifest;
    return referenceValues(out, final, config);
  } catch (e) {
    await dst.abort().catch(() => undefined);
    throw e;
  } finally {
    if (staging !== undefined) await rm(staging, { recursive: true, force: true });
  }
}
