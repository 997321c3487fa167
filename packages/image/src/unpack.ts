/**
 * Safe layer unpacking into a rootfs (OCI image-spec v1.1 `layer.md`: changesets, whiteouts
 * `.wh.<name>` and opaque `.wh..wh..opq`), built for hostile layers:
 * - names with `..` are refused and absolute names are taken relative to the root;
 * - every parent directory is resolved inside the root, following symlinks the way the
 *   container will see them (absolute targets restart at the root, `..` stops at the root),
 *   so a symlink planted by one entry cannot redirect a later write outside (the classic
 *   "symlink then write through it" escape, CVE-2018-15664 / CVE-2019-14271 family);
 * - files are created with O_NOFOLLOW|O_EXCL after removing whatever was there;
 * - hard links must name an existing non-directory inside the root; links carrying data are
 *   refused (other unpackers would read that data as entries);
 * - device nodes and FIFOs are refused;
 * - total bytes, entry count (the parent directories entries imply included), path length and
 *   depth are capped;
 * - an opaque whiteout removes only real children of the directory, never through a symlink;
 * - everything happens in a staging directory renamed into place only when every layer
 *   unpacked and matched its diff_id.
 */
import { constants as FS } from 'node:fs';
import {
  chmod,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
} from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { HashingStream, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { stagingSuffix } from './transport.js';

export interface UnpackLimits {
  /** Bytes of file content across all layers (default 32 GiB). */
  readonly maxBytes: number;
  /** Entries across all layers (default 1,000,000). */
  readonly maxEntries: number;
  /** Bytes of one entry name or link target (default 4096). */
  readonly maxPathLength: number;
  /** Components of one path (default 256). */
  readonly maxDepth: number;
}

export const DEFAULT_UNPACK_LIMITS: UnpackLimits = {
  maxBytes: 32 * 1024 ** 3,
  maxEntries: 1_000_000,
  maxPathLength: 4096,
  maxDepth: 256,
};

const MAX_SYMLINK_HOPS = 40;

/** Splits an entry name into clean components; refuses `..` and NUL (path traversal). */
export function cleanEntryPath(
  name: string,
  limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
): string[] {
  if (name.includes('\0'))
    throw imageError('IMAGE_UNPACK_PATH_TRAVERSAL', 'entry name contains NUL', {
      details: { name },
    });
  if (Buffer.byteLength(name) > limits.maxPathLength)
    throw imageError('IMAGE_UNPACK_LIMIT', 'entry name is too long', {
      details: { limit: limits.maxPathLength },
    });
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..'))
    throw imageError('IMAGE_UNPACK_PATH_TRAVERSAL', `entry ${JSON.stringify(name)} contains ..`, {
      details: { name },
    });
  if (parts.length > limits.maxDepth)
    throw imageError('IMAGE_UNPACK_LIMIT', 'entry path is too deep', {
      details: { limit: limits.maxDepth },
    });
  return parts;
}

async function lstatOrUndefined(p: string): Promise<Awaited<ReturnType<typeof lstat>> | undefined> {
  try {
    return await lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Resolves path components inside `root` the way a process chrooted to `root` would: symlinks
 * are followed with absolute targets re-rooted and `..` clamped at the root. Missing
 * directories are created when `create` is set, each announced to `onCreate` first (which may
 * throw to refuse it). The result is always inside `root`.
 */
export async function resolveInRoot(
  root: string,
  components: string[],
  create: boolean,
  onCreate?: () => void,
): Promise<string> {
  const stack: string[] = [];
  const queue = [...components];
  let hops = 0;
  while (queue.length > 0) {
    const c = queue.shift() as string;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      stack.pop();
      continue;
    }
    const p = join(root, ...stack, c);
    const st = await lstatOrUndefined(p);
    if (st === undefined) {
      if (create) {
        onCreate?.();
        await mkdir(p, { mode: 0o755 });
      }
      stack.push(c);
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS)
        throw imageError('IMAGE_UNPACK_LINK_ESCAPE', 'too many levels of symbolic links', {
          details: { path: [...stack, c].join('/') },
        });
      const target = await readlink(p);
      if (target.startsWith('/')) stack.length = 0;
      else {
        // A relative target that climbs above the root can only be an escape attempt (no
        // legitimate image needs it); absolute targets are re-rooted, as the container sees them.
        let depth = stack.length;
        for (const t of target.split('/')) {
          if (t === '..') depth--;
          else if (t !== '' && t !== '.') depth++;
          if (depth < 0)
            throw imageError(
              'IMAGE_UNPACK_LINK_ESCAPE',
              `symlink ${[...stack, c].join('/')} points above the root`,
              {
                details: { path: [...stack, c].join('/') },
              },
            );
        }
      }
      queue.unshift(...target.split('/'));
      continue;
    }
    if (!st.isDirectory() && queue.length > 0)
      throw imageError('IMAGE_UNPACK_MALFORMED', `${[...stack, c].join('/')} is not a directory`, {
        details: { path: [...stack, c].join('/') },
      });
    stack.push(c);
  }
  return join(root, ...stack);
}

/** Options of `unpackRootfs`. */
export interface UnpackOptions {
  readonly limits?: Partial<UnpackLimits>;
  /** Apply tar uid/gid (default: only when running as root). */
  readonly chown?: boolean;
}

/** One layer to apply: a tar stream (compressed as stated) and the diff_id it must match. */
export interface LayerToUnpack {
  open(): Readable | Promise<Readable>;
  readonly compression: 'none' | 'gzip' | 'zstd';
  readonly diffId?: Digest;
}

interface State {
  entries: number;
  bytes: number;
  readonly limits: UnpackLimits;
  readonly chown: boolean;
}

async function removeChildrenExcept(dir: string, rel: string, keep: Set<string>): Promise<void> {
  for (const name of await readdir(dir)) {
    const childRel = rel === '' ? name : `${rel}/${name}`;
    const child = join(dir, name);
    // Only a real directory is entered: a symlink (re-rooted in the container, but a host path
    // here) would take the removal outside the root.
    const st = await lstat(child);
    // A directory this layer declared or wrote into may still hold lower entries: hidden too.
    if (
      st.isDirectory() &&
      (keep.has(childRel) || [...keep].some((k) => k.startsWith(`${childRel}/`)))
    ) {
      await removeChildrenExcept(child, childRel, keep);
      continue;
    }
    if (keep.has(childRel)) continue;
    await rm(child, { recursive: true, force: true });
  }
}

/**
 * Counts one more inode against the entry limit: tar entries and the parent directories they
 * imply alike, or one entry with a deep name (or one through a long symlink) would create
 * hundreds of directories for one counted entry.
 */
function countEntry(state: State): void {
  if (++state.entries > state.limits.maxEntries)
    throw imageError('IMAGE_UNPACK_LIMIT', 'layers have too many entries', {
      details: { limit: state.limits.maxEntries },
    });
}

/**
 * The owner id of an entry: a PAX `uid`/`gid` record wins over the header field, which cannot
 * hold ids of 2^21 and above (Go's archive/tar writes 0 there, so ignoring the record would hand
 * such files to root).
 */
function entryId(h: Header, key: 'uid' | 'gid', rel: string): number | undefined {
  const rec = (h.pax as Record<string, string> | null | undefined)?.[key];
  if (rec === undefined) return h[key];
  // (uid_t)-1 means "unchanged" to chown(2): never a real owner.
  if (!/^\d{1,10}$/.test(rec) || Number(rec) > 0xfffffffe)
    throw imageError('IMAGE_UNPACK_MALFORMED', `invalid PAX ${key} at ${rel}`, {
      details: { path: rel, [key]: rec },
    });
  return Number(rec);
}

/** Applies one decompressed tar layer to `root`. */
async function applyLayer(root: string, tarStream: Readable, state: State): Promise<void> {
  // What this layer wrote, as resolved paths relative to `root` (where the entries really are,
  // whatever symlinks their names went through), for opaque whiteouts to keep.
  const created = new Set<string>();
  const ex = tar.extract();
  // The entry being applied: on a stream error we wait for it, so nothing is still writing
  // into the staging directory while the caller removes it.
  let inFlight: Promise<void> = Promise.resolve();
  ex.on('entry', (h, stream, next) => {
    // A truncated archive destroys the entry stream with an error; the extractor reports the
    // same error through the pipeline, so it must not also crash the process unhandled.
    stream.on('error', () => undefined);
    inFlight = applyEntry(root, h, stream as unknown as EntryStream, state, created).then(
      () => next(),
      (e: unknown) => {
        stream.resume();
        next(e as Error);
      },
    );
  });
  try {
    await pipeline(tarStream, ex);
  } catch (e) {
    await inFlight.catch(() => undefined);
    if ((e as { code?: string }).code?.startsWith('IMAGE_')) throw e;
    throw imageError('IMAGE_UNPACK_MALFORMED', `layer is not a valid tar stream: ${String(e)}`, {
      cause: e,
    });
  }
}

/** A tar entry's content stream (a streamx Readable; consumed by async iteration only). */
type EntryStream = AsyncIterable<Buffer> & { resume(): unknown };

async function drainEntry(stream: EntryStream): Promise<void> {
  for await (const _ of stream) {
    /* discard */
  }
}

async function applyEntry(
  root: string,
  h: Header,
  stream: EntryStream,
  state: State,
  created: Set<string>,
): Promise<void> {
  countEntry(state);
  const parts = cleanEntryPath(h.name, state.limits);
  if (parts.length === 0) return drainEntry(stream); // "./" itself
  const base = parts[parts.length - 1] as string;
  const parentParts = parts.slice(0, -1);
  const rel = parts.join('/');

  if (h.type === 'character-device' || h.type === 'block-device' || h.type === 'fifo')
    throw imageError('IMAGE_UNPACK_SPECIAL_FILE', `layer creates a ${h.type} at ${rel}`, {
      details: { path: rel, type: h.type },
    });

  // Link entries are header-only to Go's archive/tar (Docker, containerd): bytes after one are
  // the next header there, but drained as data here, so the same layer (and diff_id) would
  // unpack to different files in each. Refused: no writer puts data after a link.
  if ((h.type === 'symlink' || h.type === 'link') && (h.size ?? 0) > 0)
    throw imageError('IMAGE_UNPACK_MALFORMED', `${h.type} ${rel} carries data`, {
      details: { path: rel, type: h.type },
    });

  const parent = await resolveInRoot(root, parentParts, true, () => countEntry(state));
  const parentSt = await lstat(parent);
  if (!parentSt.isDirectory())
    throw imageError('IMAGE_UNPACK_MALFORMED', `parent of ${rel} is not a directory`, {
      details: { path: rel },
    });

  if (base.startsWith('.wh.')) {
    await drainEntry(stream);
    if (base === '.wh..wh..opq') {
      const dirRel = relative(root, parent);
      const keep = new Set([...created].filter((c) => dirRel === '' || c.startsWith(`${dirRel}/`)));
      await removeChildrenExcept(parent, dirRel, keep);
    } else {
      const victim = base.slice('.wh.'.length);
      if (victim === '' || victim === '.' || victim === '..')
        throw imageError('IMAGE_UNPACK_PATH_TRAVERSAL', `invalid whiteout ${rel}`, {
          details: { path: rel },
        });
      await rm(join(parent, victim), { recursive: true, force: true });
    }
    return;
  }

  const target = join(parent, base);
  const key = relative(root, target);
  const existing = await lstatOrUndefined(target);
  const mode = (h.mode ?? 0o644) & 0o7777;

  switch (h.type) {
    case 'directory': {
      if (existing !== undefined && !existing.isDirectory()) await rm(target, { force: true });
      if (existing === undefined || !existing.isDirectory()) await mkdir(target, { mode: 0o755 });
      await drainEntry(stream);
      break;
    }
    case 'file':
    case 'contiguous-file': {
      if (existing !== undefined) await rm(target, { recursive: true, force: true });
      // O_NOFOLLOW|O_EXCL: never write through a link, never reuse an inode we did not create.
      const fh = await open(target, FS.O_WRONLY | FS.O_CREAT | FS.O_EXCL | FS.O_NOFOLLOW, 0o600);
      try {
        for await (const chunk of stream) {
          state.bytes += chunk.length;
          if (state.bytes > state.limits.maxBytes)
            throw imageError('IMAGE_UNPACK_LIMIT', 'layers exceed the unpacked size limit', {
              details: { limit: state.limits.maxBytes },
            });
          await fh.write(chunk);
        }
      } finally {
        await fh.close();
      }
      break;
    }
    case 'symlink': {
      const to = h.linkname ?? '';
      if (to === '' || to.includes('\0') || Buffer.byteLength(to) > state.limits.maxPathLength)
        throw imageError('IMAGE_UNPACK_MALFORMED', `invalid symlink target at ${rel}`, {
          details: { path: rel },
        });
      if (existing !== undefined) await rm(target, { recursive: true, force: true });
      // The target is stored verbatim: it is only ever resolved inside the root (above, and by
      // the kernel inside the container's mount namespace).
      await symlink(to, target);
      await drainEntry(stream);
      break;
    }
    case 'link': {
      const linkParts = cleanEntryPath(h.linkname ?? '', state.limits);
      if (linkParts.length === 0)
        throw imageError('IMAGE_UNPACK_LINK_ESCAPE', `hard link ${rel} has no target`, {
          details: { path: rel },
        });
      const linkParent = await resolveInRoot(root, linkParts.slice(0, -1), false);
      const source = join(linkParent, linkParts[linkParts.length - 1] as string);
      const st = await lstatOrUndefined(source);
      // A hard link to a file outside the root (via a symlinked parent) would resolve to a
      // missing path here; a directory hard link would alias a subtree.
      if (st === undefined || st.isDirectory())
        throw imageError(
          'IMAGE_UNPACK_LINK_ESCAPE',
          `hard link ${rel} does not name a file in the root`,
          {
            details: { path: rel, target: linkParts.join('/') },
          },
        );
      if (source === target) {
        await drainEntry(stream);
        break;
      }
      if (existing !== undefined) await rm(target, { recursive: true, force: true });
      await link(source, target);
      await drainEntry(stream);
      created.add(key);
      return;
    }
    default:
      throw imageError(
        'IMAGE_UNPACK_MALFORMED',
        `unsupported tar entry type ${String(h.type)} at ${rel}`,
        {
          details: { path: rel, type: String(h.type) },
        },
      );
  }
  created.add(key);
  // chown before chmod: the kernel clears setuid/setgid on chown, even by root.
  if (state.chown) {
    const uid = entryId(h, 'uid', rel);
    const gid = entryId(h, 'gid', rel);
    if (uid !== undefined && gid !== undefined) await lchown(target, uid, gid);
  }
  if (h.type !== 'symlink') await chmod(target, mode);
  if (h.mtime instanceof Date && !Number.isNaN(h.mtime.getTime()))
    await lutimes(target, h.mtime, h.mtime).catch(() => undefined);
}

/** Result of unpacking. */
export interface UnpackResult {
  readonly entries: number;
  readonly bytes: number;
  readonly diffIds: readonly Digest[];
}

/**
 * Unpacks layers in order into a fresh directory `dest` (which must not exist): everything goes
 * into a sibling staging directory, each layer's decompressed bytes are hashed and compared
 * with its diff_id, and the staging directory is renamed to `dest` only when all layers
 * succeeded. On failure the staging directory is removed and `dest` never appears.
 */
export async function unpackRootfs(
  dest: string,
  layers: readonly LayerToUnpack[],
  opts: UnpackOptions = {},
): Promise<UnpackResult> {
  if ((await lstatOrUndefined(dest)) !== undefined)
    throw imageError('IMAGE_DESTINATION_EXISTS', `${dest} already exists`, { details: { dest } });
  const limits = { ...DEFAULT_UNPACK_LIMITS, ...(opts.limits ?? {}) };
  const state: State = {
    entries: 0,
    bytes: 0,
    limits,
    chown: opts.chown ?? process.getuid?.() === 0,
  };
  const staging = `${dest}.staging-${stagingSuffix()}`;
  await mkdir(dirname(dest), { recursive: true });
  await mkdir(staging, { mode: 0o755 });
  const diffIds: Digest[] = [];
  try {
    for (const [i, layer] of layers.entries()) {
      if (layer.compression === 'zstd')
        throw imageError('IMAGE_UNSUPPORTED', 'zstd-compressed layers are not supported yet', {
          details: { layer: i },
        });
      const src = await layer.open();
      const hasher = new HashingStream();
      const tarStream =
        layer.compression === 'gzip'
          ? pipelineStreams(src, createGunzip({ chunkSize: 256 * 1024 }), hasher)
          : pipelineStreams(src, hasher);
      await applyLayer(staging, tarStream, state);
      // The extractor may stop before the end of data (after the end-of-archive blocks):
      // drain the rest so the whole layer is hashed.
      tarStream.resume();
      await new Promise<void>((resolve, reject) => {
        if (hasher.readableEnded) return resolve();
        hasher.on('end', () => resolve());
        hasher.on('error', reject);
      });
      diffIds.push(hasher.digest);
      if (layer.diffId !== undefined && hasher.digest !== layer.diffId)
        throw imageError('IMAGE_DIFF_ID_MISMATCH', `layer ${i} does not match its diff_id`, {
          details: { layer: i, expected: layer.diffId, actual: hasher.digest },
        });
    }
    await rename(staging, dest);
    return { entries: state.entries, bytes: state.bytes, diffIds };
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    if ((e as { code?: string }).code === 'Z_DATA_ERROR' || (e as { errno?: number }).errno === -3)
      throw imageError('IMAGE_UNPACK_MALFORMED', 'layer is not valid gzip', { cause: e });
    throw e;
  }
}

/** Chains streams, forwarding errors to the last one (which the caller consumes). */
function pipelineStreams(first: Readable, ...rest: NodeJS.ReadWriteStream[]): Readable {
  let cur: NodeJS.ReadableStream = first;
  for (const s of rest) {
    const prev = cur as Readable;
    prev.on('error', (e) => (s as unknown as Readable).destroy(wrapZlib(e)));
    cur = prev.pipe(s);
  }
  return cur as Readable;
}

function wrapZlib(e: Error): Error {
  if ((e as { code?: string }).code?.startsWith('IMAGE_')) return e;
  if ((e as { code?: string }).code?.startsWith('Z_'))
    return imageError('IMAGE_UNPACK_MALFORMED', 'layer is not valid gzip', { cause: e });
  return e;
}
