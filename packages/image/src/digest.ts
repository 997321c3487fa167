/**
 * OCI content digests (OCI image-spec v1.1 `descriptor.md` §Digests) and streams that check
 * them while data flows, so no caller ever acts on bytes that do not match their name.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { imageError } from './error-codes.js';
import { OffloadedHash } from './offload.js';

/** A validated `sha256:<64 lowercase hex>` digest. */
export type Digest = string & { readonly __brand: 'Digest' };

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Validates a digest string. Only sha256 is accepted: a registry or layout naming content by an
 * algorithm we cannot check would otherwise be trusted blindly.
 */
export function parseDigest(value: unknown, field = 'digest'): Digest {
  if (typeof value === 'string' && SHA256_RE.test(value)) return value as Digest;
  if (typeof value === 'string' && ANY_DIGEST_RE.test(value) && !value.startsWith('sha256:'))
    throw imageError('IMAGE_UNSUPPORTED', `${field}: digest algorithm not supported`, {
      details: { field, algorithm: value.split(':')[0] },
    });
  throw imageError('IMAGE_MALFORMED', `${field}: not a sha256 digest`, { details: { field } });
}

/** The sha256 digest of some bytes. */
export function sha256Digest(bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
}

/** The lowercase hex part of a digest (its file name under `blobs/sha256/`). */
export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

/**
 * Hashes what passes through and exposes the digest and byte count once flushed. The hash runs
 * on the helper thread (`offload.ts`) unless `offload: false`, so the thread feeding it is free
 * for other work on the same bytes.
 */
export class HashingStream extends Transform {
  readonly #hash: OffloadedHash;
  #bytes = 0;
  #digest: Digest | undefined;

  constructor(opts: { offload?: boolean } = {}) {
    super();
    this.#hash = new OffloadedHash({ offload: opts.offload ?? true });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length;
    const queued = this.#hash.update(chunk);
    if (queued === undefined) return cb(null, chunk);
    queued.then(
      () => cb(null, chunk),
      (e: unknown) => cb(e as Error),
    );
  }

  override _flush(cb: TransformCallback): void {
    this.#hash.digest().then(
      (d) => {
        this.#digest = `sha256:${d.toString('hex')}` as Digest;
        cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.#hash.abandon();
    cb(err);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The digest of everything that passed; throws if the stream has not finished. */
  get digest(): Digest {
    if (this.#digest === undefined) throw new Error('HashingStream read before end');
    return this.#digest;
  }
}

/**
 * Passes bytes through and fails the stream (at the end, or as soon as the size is exceeded)
 * when they do not match the expected digest and size. Stops a registry, layout or archive from
 * substituting content: consumers write into staging and commit only after the stream ends
 * without error.
 */
export class VerifyingStream extends Transform {
  readonly #hash = new OffloadedHash();
  readonly #expected: Digest;
  readonly #size: number | undefined;
  #bytes = 0;

  constructor(expected: Digest, size?: number) {
    super();
    this.#expected = expected;
    this.#size = size;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#size !== undefined && this.#bytes > this.#size) {
      cb(
        imageError(
          'IMAGE_DIGEST_MISMATCH',
          `content of ${this.#expected} is larger than declared`,
          {
            details: { digest: this.#expected, expectedSize: this.#size },
          },
        ),
      );
      return;
    }
    const queued = this.#hash.update(chunk);
    if (queued === undefined) return cb(null, chunk);
    queued.then(
      () => cb(null, chunk),
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.#hash.abandon();
    cb(err);
  }

  override _flush(cb: TransformCallback): void {
    this.#hash.digest().then(
      (d) => this.#check(`sha256:${d.toString('hex')}`, cb),
      (e: unknown) => cb(e as Error),
    );
  }

  #check(actual: string, cb: TransformCallback): void {
    if (this.#size !== undefined && this.#bytes !== this.#size) {
      cb(
        imageError('IMAGE_DIGEST_MISMATCH', `content of ${this.#expected} has the wrong size`, {
          details: { digest: this.#expected, expectedSize: this.#size, actualSize: this.#bytes },
        }),
      );
      return;
    }
    if (actual !== this.#expected) {
      cb(
        imageError('IMAGE_DIGEST_MISMATCH', `content does not match ${this.#expected}`, {
          details: { expected: this.#expected, actual },
        }),
      );
      return;
    }
    cb();
  }
}

/** Checks fully buffered bytes against a digest (and size), throwing IMAGE_DIGEST_MISMATCH. */
export function verifyBytes(bytes: Uint8Array, expected: Digest, size?: number): void {
  if (size !== undefined && bytes.length !== size)
    throw imageError('IMAGE_DIGEST_MISMATCH', `content of ${expected} has the wrong size`, {
      details: { digest: expected, expectedSize: size, actualSize: bytes.length },
    });
  const actual = sha256Digest(bytes);
  if (actual !== expected)
    throw imageError('IMAGE_DIGEST_MISMATCH', `content does not match ${expected}`, {
      details: { expected, actual },
    });
}

/** The SHA-256 digest and size of a file, read as a stream (memory stays flat). */
export async function fileDigest(path: string): Promise<{ digest: Digest; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of createReadStream(path) as AsyncIterable<Buffer>) {
    h.update(c);
    size += c.length;
  }
  return { digest: `sha256:${h.digest('hex')}` as Digest, size };
}
