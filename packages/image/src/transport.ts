/**
 * What every image transport (OCI layout, docker-archive, registry) offers the copy pipeline.
 * Sources hand out only verified content (a blob stream fails unless its bytes match the
 * descriptor); destinations make nothing visible until `commit`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { HashingStream, VerifyingStream, type Digest, verifyBytes } from './digest.js';
import { imageError } from './error-codes.js';
import { MAX_METADATA_BYTES } from './json.js';
import type { Descriptor } from './manifest.js';

/** A manifest or index as stored: exact bytes, media type, digest of the bytes. */
export interface ManifestBlob {
  readonly bytes: Uint8Array;
  readonly mediaType: string;
  readonly digest: Digest;
}

export interface ImageSource {
  /** Human name for messages (`oci:dir:tag`). */
  readonly description: string;
  /** The manifest or index the reference names (digest-checked when the reference pins one). */
  getManifest(): Promise<ManifestBlob>;
  /** A manifest named by a descriptor (child of an index), digest- and size-checked. */
  getManifestByDescriptor(d: Descriptor): Promise<ManifestBlob>;
  /** A blob stream that errors unless the bytes hash to `d.digest` and count `d.size`. */
  getBlob(d: Descriptor): Promise<Readable>;
  /**
   * The path of a local regular file holding the blob, when the source has one (layouts,
   * extracted archives), so a layer can be read in place with reused buffers. Its bytes are
   * NOT verified: whoever reads it must check them against `d` (the layer functions in
   * `ocicrypt.ts` do). Optional; undefined when the blob is missing or not a regular file.
   */
  blobFile?(d: Descriptor): Promise<string | undefined>;
  close(): Promise<void>;
}

export interface PutBlobResult {
  readonly digest: Digest;
  readonly size: number;
}

export interface ImageDestination {
  readonly description: string;
  /** False for formats that cannot carry encrypted layers (docker-archive: Docker v2s2). */
  readonly supportsEncryption: boolean;
  /** True when the blob is already stored, so the copy can skip it. */
  hasBlob(d: Descriptor): Promise<boolean>;
  /**
   * Stores a blob. With `known`, the stored bytes must match it (monolithic upload); without,
   * the digest is computed while streaming (chunked upload) and returned.
   */
  putBlob(stream: Readable, known?: Descriptor): Promise<PutBlobResult>;
  /**
   * Takes over a local file whose digest and size this process computed itself (a verified,
   * decrypted layer), avoiding a second copy; optional.
   */
  adoptBlobFile?(path: string, d: Descriptor): Promise<void>;
  /**
   * A fresh path on the destination's own filesystem for a file `adoptBlobFile` will take
   * (so adopting is a rename, not a copy); optional. Only for content that is not secret.
   */
  blobStagingPath?(): Promise<string>;
  /** Cross-repository mount when the source is another repository of the same registry. */
  tryMount?(d: Descriptor): Promise<boolean>;
  /** Stores a manifest or index (not yet tagged). */
  putManifest(bytes: Uint8Array, mediaType: string): Promise<Digest>;
  /** Makes the image visible under the destination's tag. */
  commit(top: ManifestBlob): Promise<void>;
  /** Discards whatever `commit` would have published. */
  abort(): Promise<void>;
}

/** A random, unguessable suffix for staging names. */
export function stagingSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Streams into `finalPath` through a staging file in the same directory, renamed only when the
 * whole stream arrived (and matched `expected` when given).
 */
export async function writeStreamAtomically(
  stream: Readable,
  finalPath: string,
  expected?: { digest: Digest; size: number },
): Promise<PutBlobResult> {
  const tmp = join(dirname(finalPath), `.staging-${stagingSuffix()}`);
  const hasher = new HashingStream();
  try {
    await pipeline(
      stream,
      hasher,
      createWriteStream(tmp, { flags: 'wx', mode: 0o644, highWaterMark: 4 * 1024 * 1024 }),
    );
    if (
      expected !== undefined &&
      (hasher.digest !== expected.digest || hasher.bytes !== expected.size)
    )
      throw imageError(
        'IMAGE_DIGEST_MISMATCH',
        `stored content does not match ${expected.digest}`,
        {
          details: { expected: expected.digest, actual: hasher.digest },
        },
      );
    await rename(tmp, finalPath);
    return { digest: hasher.digest, size: hasher.bytes };
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Reads a whole file up to `max` bytes (IMAGE_TOO_LARGE beyond), without trusting stat. */
export async function readFileCapped(
  path: string,
  max: number = MAX_METADATA_BYTES,
  what = 'file',
): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > max)
        throw imageError('IMAGE_TOO_LARGE', `${what} is larger than ${max} bytes`, {
          details: { what, limit: max },
        });
      chunks.push(buf.subarray(0, bytesRead));
    }
    return new Uint8Array(Buffer.concat(chunks));
  } finally {
    await fh.close();
  }
}

/** A verified stream over a local file holding a blob. */
export function verifiedFileStream(path: string, d: Descriptor): Readable {
  const v = new VerifyingStream(d.digest, d.size);
  const src = createReadStream(path, { highWaterMark: 1024 * 1024 });
  src.on('error', (e) => v.destroy(e));
  return src.pipe(v);
}

/** Reads a manifest file capped and checked against its descriptor. */
export async function readVerifiedManifest(
  path: string,
  d: Descriptor,
  max: number = MAX_METADATA_BYTES,
): Promise<ManifestBlob> {
  if (d.size > max)
    throw imageError('IMAGE_TOO_LARGE', `manifest ${d.digest} is larger than ${max} bytes`, {
      details: { digest: d.digest, size: d.size, limit: max },
    });
  const bytes = await readFileCapped(path, max, 'manifest');
  verifyBytes(bytes, d.digest, d.size);
  return { bytes, mediaType: d.mediaType, digest: d.digest };
}
