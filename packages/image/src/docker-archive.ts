/**
 * docker-archive tarballs (`docker save` format, moby `image/tarexport`: `manifest.json` =
 * `[{"Config","RepoTags","Layers"}]`, config and layer files named inside the tar). Read by
 * extracting into a private staging directory (bounded entry count and metadata size, no path
 * escapes), then served as an OCI image; written as a tar renamed into place when complete.
 * Docker v2s2 cannot carry encrypted layers, so this destination refuses them.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { digestHex, fileDigest, sha256Digest, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { MAX_METADATA_BYTES, arr, obj, refuseGoFieldTwins, str, utf8 } from './json.js';
import {
  MEDIA_TYPES,
  descriptorJson,
  parseConfig,
  parseManifestOrIndex,
  type Descriptor,
} from './manifest.js';
import {
  readFileCapped,
  stagingSuffix,
  verifiedFileStream,
  writeStreamAtomically,
  type ImageDestination,
  type ImageSource,
  type ManifestBlob,
  type PutBlobResult,
} from './transport.js';

const MAX_ARCHIVE_ENTRIES = 100_000;

/** Cleans an archive member name; refuses anything that could leave the staging directory. */
function memberPath(name: string): string {
  const cleaned = posix.normalize(name.replace(/^\.\//, ''));
  if (
    cleaned.startsWith('/') ||
    cleaned === '..' ||
    cleaned.startsWith('../') ||
    cleaned.includes('\0') ||
    cleaned === '.'
  )
    throw imageError(
      'IMAGE_MALFORMED',
      `archive member ${JSON.stringify(name)} escapes the archive`,
      {
        details: { name },
      },
    );
  return cleaned.replace(/\/$/, '');
}

/** Extracts the regular files of a docker-archive into `dir` (symlinks resolved in-archive). */
async function extractArchive(file: string, dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const links = new Map<string, string>();
  let n = 0;
  const ex = tar.extract();
  ex.on('entry', (h, stream, next) => {
    stream.on('error', () => undefined); // reported through the pipeline
    void (async () => {
      if (++n > MAX_ARCHIVE_ENTRIES)
        throw imageError('IMAGE_TOO_LARGE', 'archive has too many entries', {
          details: { limit: MAX_ARCHIVE_ENTRIES },
        });
      // `tar -C dir -cf FILE .` starts with the archive root itself, `./`: nothing to keep.
      const isRoot = h.type === 'directory' && posix.normalize(h.name.replace(/^\.\//, '')) === '.';
      const name = isRoot ? '.' : memberPath(h.name);
      // A later member of the same name replaces the earlier one, whatever their types, as
      // when docker load extracts the archive: otherwise a file and a later symlink (or the
      // reverse) would make this reader and Docker see two different images in one archive.
      files.delete(name);
      links.delete(name);
      if (h.type === 'file' || h.type === 'contiguous-file') {
        const local = join(dir, `m${n}`);
        const fh = await open(local, 'wx');
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) await fh.write(chunk);
        } finally {
          await fh.close();
        }
        files.set(name, local);
      } else {
        if (h.type === 'link') {
          // A hard link is the file its target is now: a later member replacing the target
          // does not change it (an inode, not a name).
          const target = memberPath((h.linkname ?? '').replace(/^\/+/, ''));
          const local = files.get(target);
          const symlink = links.get(target);
          if (local !== undefined) files.set(name, local);
          else if (symlink !== undefined) links.set(name, symlink);
        } else if (h.type === 'symlink') {
          // An absolute symlink target is taken from the archive root, as docker load
          // resolves it (in scope), not appended to the link's own directory.
          const linkname = h.linkname ?? '';
          const target = linkname.startsWith('/')
            ? linkname.replace(/^\/+/, '')
            : posix.join(posix.dirname(name), linkname);
          links.set(name, memberPath(target));
        }
        for await (const _ of stream as AsyncIterable<Buffer>) {
          /* skip */
        }
      }
    })().then(
      () => next(),
      (e: unknown) => next(e as Error),
    );
  });
  try {
    await pipeline(createReadStream(file), ex);
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith('IMAGE_')) throw e;
    throw imageError('IMAGE_MALFORMED', `${file} is not a valid tar archive`, { cause: e });
  }
  for (const [name] of links) {
    let target: string | undefined = name;
    for (let i = 0; i < 16 && target !== undefined && !files.has(target); i++)
      target = links.get(target);
    const local = target === undefined ? undefined : files.get(target);
    if (local !== undefined) files.set(name, local);
  }
  return files;
}

async function sniffGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(2);
    await fh.read(b, 0, 2, 0);
    return b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/**
 * A docker-archive as a source. `ref` selects an entry by `RepoTags` (default: the only one).
 * The OCI manifest served for it is synthesised from the archive's manifest.json.
 */
export class DockerArchiveSource implements ImageSource {
  readonly description: string;
  readonly #file: string;
  readonly #ref: string | undefined;
  #dir: string | undefined;
  #blobs = new Map<string, string>();
  #manifest: ManifestBlob | undefined;

  constructor(file: string, ref?: string) {
    this.#file = file;
    this.#ref = ref;
    this.description = `docker-archive:${file}${ref === undefined ? '' : `:${ref}`}`;
  }

  async getManifest(): Promise<ManifestBlob> {
    if (this.#manifest !== undefined) return this.#manifest;
    try {
      await lstat(this.#file);
    } catch {
      throw imageError('IMAGE_NOT_FOUND', `${this.#file} does not exist`, {
        details: { file: this.#file },
      });
    }
    const dir = await mkdtemp(join(tmpdir(), 'cloister-archive-'));
    try {
      this.#manifest = await this.#load(dir);
      this.#dir = dir;
      return this.#manifest;
    } catch (e) {
      // A refused archive leaves nothing behind, whether or not the caller closes the source.
      this.#blobs.clear();
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  async #load(dir: string): Promise<ManifestBlob> {
    const files = await extractArchive(this.#file, dir);
    const mf = files.get('manifest.json');
    if (mf === undefined)
      throw imageError(
        'IMAGE_MALFORMED',
        'archive has no manifest.json (not a docker-archive)',
        {},
      );
    const text = await readFileCapped(mf, MAX_METADATA_BYTES, 'manifest.json');
    let entries: unknown[];
    try {
      entries = arr(JSON.parse(Buffer.from(text).toString('utf8')), 'manifest.json');
    } catch (cause) {
      if ((cause as { code?: string }).code?.startsWith('IMAGE_')) throw cause;
      throw imageError('IMAGE_MALFORMED', 'manifest.json is not JSON', { cause });
    }
    const parsed = entries.map((e, i) => {
      const o = obj(e, `manifest.json[${i}]`);
      refuseGoFieldTwins(o, ['Config', 'RepoTags', 'Layers'], `manifest.json[${i}]`);
      return o;
    });
    const chosen =
      this.#ref === undefined
        ? parsed.length === 1
          ? parsed[0]
          : undefined
        : parsed.find(
            (e) => Array.isArray(e.RepoTags) && (e.RepoTags as unknown[]).includes(this.#ref),
          );
    if (chosen === undefined)
      throw imageError(
        'IMAGE_NOT_FOUND',
        `no single image${this.#ref ? ` tagged ${this.#ref}` : ''} in archive`,
        {
          details: { images: parsed.length },
        },
      );
    const configFile = files.get(memberPath(str(chosen, 'Config', 'manifest.json')));
    if (configFile === undefined)
      throw imageError('IMAGE_MALFORMED', 'archive config file is missing', {});
    const configBytes = await readFileCapped(configFile, MAX_METADATA_BYTES, 'config');
    const config = parseConfig(configBytes);
    const layerNames = arr(chosen.Layers, 'manifest.json.Layers').map((l, i) => {
      if (typeof l !== 'string')
        throw imageError('IMAGE_MALFORMED', `manifest.json Layers[${i}] must be a string`, {});
      return memberPath(l);
    });
    if (layerNames.length !== config.diffIds.length)
      throw imageError('IMAGE_MALFORMED', 'archive layer count differs from config diff_ids', {});
    const configDigest = sha256Digest(configBytes);
    this.#blobs.set(configDigest, configFile);
    const layers: Record<string, unknown>[] = [];
    for (const name of layerNames) {
      const local = files.get(name);
      if (local === undefined)
        throw imageError('IMAGE_MALFORMED', `archive layer ${name} is missing`, {
          details: { name },
        });
      const { digest, size } = await fileDigest(local);
      this.#blobs.set(digest, local);
      layers.push(
        descriptorJson({
          mediaType: (await sniffGzip(local)) ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayer,
          digest,
          size,
        }),
      );
    }
    const manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: descriptorJson({
        mediaType: MEDIA_TYPES.ociConfig,
        digest: configDigest,
        size: configBytes.length,
      }),
      layers,
    };
    const bytes = utf8(JSON.stringify(manifest));
    return { bytes, mediaType: MEDIA_TYPES.ociManifest, digest: sha256Digest(bytes) };
  }

  async getManifestByDescriptor(d: Descriptor): Promise<ManifestBlob> {
    const m = await this.getManifest();
    if (m.digest !== d.digest)
      throw imageError('IMAGE_NOT_FOUND', `manifest ${d.digest} is not in the archive`, {});
    return m;
  }

  async getBlob(d: Descriptor): Promise<Readable> {
    await this.getManifest();
    const local = this.#blobs.get(d.digest);
    if (local === undefined)
      throw imageError('IMAGE_NOT_FOUND', `blob ${d.digest} is not in the archive`, {
        details: { digest: d.digest },
      });
    return verifiedFileStream(local, d);
  }

  /** The extracted member (our private staging copy), read in place by the layer functions. */
  async blobFile(d: Descriptor): Promise<string | undefined> {
    await this.getManifest();
    return this.#blobs.get(d.digest);
  }

  async close(): Promise<void> {
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }
}

/**
 * A docker-archive as a destination: blobs staged in a private directory, the tar written to
 * `FILE.staging-*` and renamed to FILE in `commit`. An existing FILE is never overwritten.
 */
export class DockerArchiveDestination implements ImageDestination {
  readonly description: string;
  readonly supportsEncryption = false;
  readonly #file: string;
  readonly #tag: string | undefined;
  #dir: string | undefined;

  constructor(file: string, tag?: string) {
    this.#file = file;
    this.#tag = tag;
    this.description = `docker-archive:${file}`;
  }

  #stagingDir: Promise<string> | undefined;

  // Memoised as a promise: layers are written concurrently, and they must share one directory.
  #staging(): Promise<string> {
    this.#stagingDir ??= (async () => {
      try {
        await lstat(this.#file);
        throw imageError('IMAGE_DESTINATION_EXISTS', `${this.#file} already exists`, {
          details: { file: this.#file },
        });
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
      }
      await mkdir(dirname(this.#file), { recursive: true });
      this.#dir = await mkdtemp(join(tmpdir(), 'cloister-archive-out-'));
      return this.#dir;
    })();
    return this.#stagingDir;
  }

  hasBlob(): Promise<boolean> {
    return Promise.resolve(false);
  }

  async putBlob(stream: Readable, known?: Descriptor): Promise<PutBlobResult> {
    const dir = await this.#staging();
    const tmp = join(dir, `incoming-${stagingSuffix()}`);
    const r = await writeStreamAtomically(
      stream,
      tmp,
      known === undefined ? undefined : { digest: known.digest, size: known.size },
    );
    await rename(tmp, join(dir, digestHex(r.digest)));
    return r;
  }

  async putManifest(bytes: Uint8Array): Promise<Digest> {
    const dir = await this.#staging();
    const d = sha256Digest(bytes);
    await writeFile(join(dir, digestHex(d)), bytes);
    return d;
  }

  async commit(top: ManifestBlob): Promise<void> {
    const dir = await this.#staging();
    const m = parseManifestOrIndex(top.bytes, top.mediaType);
    if (m.kind !== 'manifest')
      throw imageError('IMAGE_UNSUPPORTED', 'docker-archive holds one image, not an index', {});
    for (const l of m.layers)
      if (l.mediaType.endsWith('+encrypted'))
        throw imageError('IMAGE_UNSUPPORTED', 'docker-archive cannot hold encrypted layers', {});
    const layerNames = m.layers.map((l) => `${digestHex(l.digest)}.tar`);
    const manifestJson = [
      {
        Config: `${digestHex(m.config.digest)}.json`,
        RepoTags: this.#tag === undefined ? [] : [this.#tag],
        Layers: layerNames,
      },
    ];
    const tmpOut = `${this.#file}.staging-${stagingSuffix()}`;
    const pack = tar.pack();
    const out = pipeline(pack, createWriteStream(tmpOut, { flags: 'wx' }));
    const addFile = async (name: string, local: string): Promise<void> => {
      const { size } = await lstat(local);
      await new Promise<void>((resolve, reject) => {
        const entry = pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }, (err) =>
          err ? reject(err) : resolve(),
        );
        createReadStream(local).on('error', reject).pipe(entry);
      });
    };
    try {
      await addFile(`${digestHex(m.config.digest)}.json`, join(dir, digestHex(m.config.digest)));
      const seen = new Set<string>();
      for (const [i, l] of m.layers.entries()) {
        const name = layerNames[i] ?? '';
        if (seen.has(name)) continue;
        seen.add(name);
        await addFile(name, join(dir, digestHex(l.digest)));
      }
      pack.entry(
        { name: 'manifest.json', mtime: new Date(0) },
        Buffer.from(JSON.stringify(manifestJson)),
      );
      pack.finalize();
      await out;
      await rename(tmpOut, this.#file);
    } catch (e) {
      pack.destroy();
      await rm(tmpOut, { force: true });
      throw e;
    } finally {
      await rm(dir, { recursive: true, force: true });
      this.#dir = undefined;
      this.#stagingDir = undefined;
    }
  }

  async abort(): Promise<void> {
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }
}
