/**
 * OCI image layout (OCI image-spec v1.1 `image-layout.md`): `oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>`. Tags are the `org.opencontainers.image.ref.name` annotation of a
 * descriptor in `index.json` (the convention skopeo's `oci:DIR:TAG` follows).
 */
import { copyFile, lstat, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { digestHex, sha256Digest, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { MAX_METADATA_BYTES, parseStrictJson, str, utf8 } from './json.js';
import {
  MEDIA_TYPES,
  descriptorJson,
  parseManifestOrIndex,
  type Descriptor,
  type ImageIndex,
} from './manifest.js';
import {
  readFileCapped,
  readVerifiedManifest,
  stagingSuffix,
  verifiedFileStream,
  writeStreamAtomically,
  type ImageDestination,
  type ImageSource,
  type ManifestBlob,
  type PutBlobResult,
} from './transport.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

function blobPath(dir: string, d: Digest): string {
  return join(dir, 'blobs', 'sha256', digestHex(d));
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Reads and validates `index.json` and `oci-layout` of a layout directory. */
export async function readLayoutIndex(
  dir: string,
  maxBytes = MAX_METADATA_BYTES,
): Promise<ImageIndex> {
  let layoutBytes: Uint8Array;
  try {
    layoutBytes = await readFileCapped(join(dir, 'oci-layout'), 4096, 'oci-layout');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw imageError('IMAGE_NOT_FOUND', `${dir} is not an OCI image layout (no oci-layout)`, {
        details: { dir },
      });
    throw e;
  }
  const layout = parseStrictJson(layoutBytes, 'oci-layout', 4096);
  if (str(layout, 'imageLayoutVersion', 'oci-layout') !== '1.0.0')
    throw imageError('IMAGE_UNSUPPORTED', 'unsupported imageLayoutVersion', {
      details: { version: layout.imageLayoutVersion },
    });
  let bytes: Uint8Array;
  try {
    bytes = await readFileCapped(join(dir, 'index.json'), maxBytes, 'index.json');
  } catch (e) {
    // A layout without an index holds no image yet (one a failed copy into an existing empty
    // directory left behind): typed, so a destination can still commit the first one.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw imageError('IMAGE_NOT_FOUND', `${dir} has no index.json (no image)`, {
        details: { dir },
      });
    throw e;
  }
  const parsed = parseManifestOrIndex(bytes, MEDIA_TYPES.ociIndex, maxBytes);
  if (parsed.kind !== 'index')
    throw imageError('IMAGE_MALFORMED', 'index.json is not an image index', {});
  return parsed;
}

/** Finds the descriptor tagged `tag` (or the only one when no tag is given). */
export function findTagged(index: ImageIndex, tag: string | undefined, dir: string): Descriptor {
  if (tag === undefined) {
    if (index.manifests.length === 1 && index.manifests[0] !== undefined) return index.manifests[0];
    throw imageError(
      'IMAGE_NOT_FOUND',
      `${dir} holds ${index.manifests.length} images: name a tag`,
      {
        details: {
          tags: index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter(Boolean),
        },
      },
    );
  }
  const found = index.manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
  if (found.length !== 1 || found[0] === undefined)
    throw imageError(
      'IMAGE_NOT_FOUND',
      found.length === 0 ? `no image tagged ${tag} in ${dir}` : `tag ${tag} is ambiguous in ${dir}`,
      { details: { tag } },
    );
  return found[0];
}

/** An OCI layout as an image source. */
export class OciLayoutSource implements ImageSource {
  readonly description: string;
  readonly #dir: string;
  readonly #tag: string | undefined;
  readonly #max: number;

  constructor(dir: string, tag?: string, opts: { maxManifestBytes?: number } = {}) {
    this.#dir = dir;
    this.#tag = tag;
    this.#max = opts.maxManifestBytes ?? MAX_METADATA_BYTES;
    this.description = `oci:${dir}${tag === undefined ? '' : `:${tag}`}`;
  }

  async getManifest(): Promise<ManifestBlob> {
    const index = await readLayoutIndex(this.#dir, this.#max);
    return this.getManifestByDescriptor(findTagged(index, this.#tag, this.#dir));
  }

  async getManifestByDescriptor(d: Descriptor): Promise<ManifestBlob> {
    try {
      return await readVerifiedManifest(blobPath(this.#dir, d.digest), d, this.#max);
    } catch (e) {
      throw notFound(e, d);
    }
  }

  async getBlob(d: Descriptor): Promise<Readable> {
    const p = blobPath(this.#dir, d.digest);
    try {
      const s = await stat(p);
      if (!s.isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOENT' });
    } catch (e) {
      throw notFound(e, d);
    }
    return verifiedFileStream(p, d);
  }

  async blobFile(d: Descriptor): Promise<string | undefined> {
    const p = blobPath(this.#dir, d.digest);
    try {
      return (await stat(p)).isFile() ? p : undefined;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {}
}

function notFound(e: unknown, d: Descriptor): unknown {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT')
    return imageError('IMAGE_NOT_FOUND', `blob ${d.digest} is missing`, {
      details: { digest: d.digest },
    });
  return e;
}

/**
 * An OCI layout as a destination. Blobs are content-addressed and written through staging
 * files, so a failed copy leaves no partial blob; `index.json` changes only in `commit`
 * (write + rename). A directory that is neither empty nor a layout is refused.
 */
export class OciLayoutDestination implements ImageDestination {
  readonly description: string;
  readonly supportsEncryption = true;
  readonly #dir: string;
  readonly #tag: string | undefined;
  #created = false;
  #ready: Promise<void> | undefined;

  constructor(dir: string, tag?: string) {
    this.#dir = dir;
    this.#tag = tag;
    this.description = `oci:${dir}${tag === undefined ? '' : `:${tag}`}`;
  }

  #prepare(): Promise<void> {
    this.#ready ??= (async () => {
      const isLayout = await exists(join(this.#dir, 'oci-layout'));
      if (!isLayout) {
        if (await exists(this.#dir)) {
          const entries = await readdir(this.#dir);
          if (entries.length > 0)
            throw imageError(
              'IMAGE_DESTINATION_EXISTS',
              `${this.#dir} exists and is not an OCI layout`,
              { details: { dir: this.#dir } },
            );
        } else this.#created = true;
        await mkdir(join(this.#dir, 'blobs', 'sha256'), { recursive: true });
        await writeFile(join(this.#dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      } else {
        await readLayoutIndex(this.#dir).catch((e: unknown) => {
          if ((e as { code?: string }).code === 'IMAGE_NOT_FOUND') return;
          throw e;
        });
        await mkdir(join(this.#dir, 'blobs', 'sha256'), { recursive: true });
      }
    })();
    return this.#ready;
  }

  async hasBlob(d: Descriptor): Promise<boolean> {
    await this.#prepare();
    try {
      const s = await stat(blobPath(this.#dir, d.digest));
      return s.isFile() && s.size === d.size;
    } catch {
      return false;
    }
  }

  async putBlob(stream: Readable, known?: Descriptor): Promise<PutBlobResult> {
    await this.#prepare();
    const tmpName = join(this.#dir, 'blobs', 'sha256', `.incoming-${stagingSuffix()}`);
    const r = await writeStreamAtomically(
      stream,
      tmpName,
      known === undefined ? undefined : { digest: known.digest, size: known.size },
    );
    await rename(tmpName, blobPath(this.#dir, r.digest));
    return r;
  }

  async blobStagingPath(): Promise<string> {
    await this.#prepare();
    return join(this.#dir, 'blobs', 'sha256', `.incoming-${stagingSuffix()}`);
  }

  async adoptBlobFile(path: string, d: Descriptor): Promise<void> {
    await this.#prepare();
    const tmp = join(this.#dir, 'blobs', 'sha256', `.incoming-${stagingSuffix()}`);
    try {
      await rename(path, tmp);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
      await copyFile(path, tmp);
    }
    await rename(tmp, blobPath(this.#dir, d.digest));
  }

  async putManifest(bytes: Uint8Array, _mediaType: string): Promise<Digest> {
    await this.#prepare();
    const d = sha256Digest(bytes);
    const p = blobPath(this.#dir, d);
    const tmp = `${p}.staging-${stagingSuffix()}`;
    await writeFile(tmp, bytes, { flag: 'wx' });
    await rename(tmp, p);
    return d;
  }

  async commit(top: ManifestBlob): Promise<void> {
    await this.#prepare();
    let manifests: Record<string, unknown>[] = [];
    let raw: Record<string, unknown> = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex };
    if (await exists(join(this.#dir, 'index.json'))) {
      const idx = await readLayoutIndex(this.#dir);
      raw = idx.raw;
      // The other entries are kept as written, not re-serialised from what this reader models:
      // fields such as `artifactType`, `urls` or `platform.os.version` belong to other images.
      const written = raw.manifests as Record<string, unknown>[];
      manifests = written.filter((_, i) => {
        const m = idx.manifests[i];
        return this.#tag === undefined
          ? m?.digest !== top.digest
          : m?.annotations?.[REF_NAME_ANNOTATION] !== this.#tag;
      });
    }
    const entry: Descriptor = {
      mediaType: top.mediaType,
      digest: top.digest,
      size: top.bytes.length,
      ...(this.#tag === undefined ? {} : { annotations: { [REF_NAME_ANNOTATION]: this.#tag } }),
    };
    const index = { ...raw, schemaVersion: 2, manifests: [...manifests, descriptorJson(entry)] };
    const tmp = join(this.#dir, `.index.json.${stagingSuffix()}`);
    await writeFile(tmp, utf8(JSON.stringify(index)), { flag: 'wx' });
    await rename(tmp, join(this.#dir, 'index.json'));
  }

  async abort(): Promise<void> {
    if (this.#created) await rm(this.#dir, { recursive: true, force: true });
  }
}
