/**
 * Materialises the bundle's files in an in-memory directory.
 *
 * Mapping: a manifest path `/etc/app/db.conf` is written to `<root>/etc/app/db.conf`, where
 * `<root>` is a fresh directory under `/dev/shm` (tmpfs, so secrets never reach a disk), or the
 * directory given with `--files-dir` / `--init` (used as is; `--files-dir /` maps paths to
 * themselves, for containers whose secret paths are in-memory mounts). The program finds the
 * root in `CLOISTER_FILES`, and the agent replaces the token `${CLOISTER_FILES}` in the
 * manifest's args and env values by it.
 *
 * Every path is checked before anything is written, so a bundle with one bad path writes
 * nothing. Files are written to a temporary name and renamed into place (atomic for a reader,
 * and rename never follows a symlink planted at the destination).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, realpath, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix, resolve, sep } from 'node:path';
import { agentError } from './error-codes.js';

/** The environment variable that tells the program where its files are. */
export const FILES_ENV = 'CLOISTER_FILES';
/** The token the agent expands to the files root in args and env values. */
export const FILES_TOKEN = '${CLOISTER_FILES}';
export const DEFAULT_SHM = '/dev/shm';

/**
 * Creates the default files root: a fresh `cloister-XXXXXX` directory (mode 0700) under
 * `/dev/shm`. Fails closed when there is no `/dev/shm` rather than falling back to a disk.
 */
export async function createFilesRoot(base: string = DEFAULT_SHM): Promise<string> {
  if (!existsSync(base)) {
    throw agentError(
      'AGENT_FILES_WRITE_FAILED',
      `${base} does not exist; give --files-dir on an in-memory file system`,
      { details: { base } },
    );
  }
  try {
    const dir = await mkdtemp(join(base, 'cloister-'));
    await chmod(dir, 0o700);
    return dir;
  } catch (e) {
    throw agentError('AGENT_FILES_WRITE_FAILED', `cannot create a directory under ${base}`, {
      cause: e,
      details: { base },
    });
  }
}

/** Ensures an existing or new directory given by the user is usable as a files root. */
export async function useFilesRoot(dir: string): Promise<string> {
  const abs = resolve(dir);
  try {
    await mkdir(abs, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw agentError('AGENT_FILES_WRITE_FAILED', `cannot create ${abs}`, {
      cause: e,
      details: { dir: abs },
    });
  }
  return abs;
}

/**
 * Maps a manifest path (absolute, POSIX) to its place under `root`. Stops path traversal: a
 * bundle naming `/../../etc/passwd`, `a/relative`, or a path with NUL would otherwise write
 * outside the files root (for example over the agent's own binary).
 */
export function mapPath(root: string, manifestPath: string): string {
  const bad = (rule: string): never => {
    throw agentError('AGENT_PATH_ESCAPE', `file path ${JSON.stringify(manifestPath)}: ${rule}`, {
      details: { path: manifestPath, rule },
    });
  };
  if (typeof manifestPath !== 'string' || manifestPath.length === 0) bad('empty');
  if (manifestPath.includes('\0')) bad('contains NUL');
  if (manifestPath.includes('\\')) bad('contains a backslash');
  if (!posix.isAbsolute(manifestPath)) bad('not absolute');
  const segments = manifestPath.split('/').filter((s) => s.length > 0);
  if (segments.length === 0) bad('names the root itself');
  if (segments.some((s) => s === '..' || s === '.')) bad('contains "." or ".."');
  const out = join(root, ...segments);
  const rootAbs = resolve(root);
  if (
    !isAbsolute(out) ||
    !(rootAbs === sep ? out.startsWith(sep) : out.startsWith(rootAbs + sep))
  ) {
    bad('leaves the files root');
  }
  return out;
}

/**
 * Maps every manifest path under `root` (see `mapPath`) and refuses a path that is also a
 * directory of another one (`/etc/app` and `/etc/app/db.conf`): one of the two writes would
 * fail halfway through the bundle, after the files before it were written.
 */
export function planPaths(root: string, manifestPaths: readonly string[]): string[] {
  const mapped = manifestPaths.map((p) => mapPath(root, p));
  const planned = new Map(mapped.map((out, i) => [out, manifestPaths[i] as string]));
  const rootAbs = resolve(root);
  for (const [i, out] of mapped.entries()) {
    for (let d = dirname(out); d !== rootAbs && d !== dirname(d); d = dirname(d)) {
      const file = planned.get(d);
      if (file === undefined) continue;
      const path = manifestPaths[i] as string;
      throw agentError(
        'AGENT_PATH_ESCAPE',
        `file path ${JSON.stringify(path)}: is under the file ${JSON.stringify(file)}`,
        {
          details: { path, rule: 'under another file', file },
        },
      );
    }
  }
  return mapped;
}

function isInside(rootReal: string, p: string): boolean {
  return p === rootReal || p.startsWith(rootReal === sep ? sep : rootReal + sep);
}

/**
 * Checks that the directories already on disk on the way to each of `paths` (mapped, under
 * `root`) resolve inside the root. `mapPath` only looks at the names: a symlinked directory
 * someone left in a shared `--files-dir` (`etc -> /somewhere/on/disk`) would otherwise carry
 * the secrets written below it out of the files root.
 */
export async function checkExistingDirs(root: string, paths: readonly string[]): Promise<void> {
  const rootReal = await realpath(root);
  for (const path of paths) {
    let dir = dirname(path);
    for (;;) {
      let real: string;
      try {
        real = await realpath(dir);
      } catch (e) {
        // Not there yet (mkdir will create a real directory): look at its parent.
        if ((e as { code?: unknown }).code === 'ENOENT' && dir !== dirname(dir)) {
          dir = dirname(dir);
          continue;
        }
        throw agentError('AGENT_FILES_WRITE_FAILED', `cannot look up ${dir}`, {
          cause: e,
          details: { path },
        });
      }
      if (!isInside(rootReal, real)) {
        throw agentError('AGENT_PATH_ESCAPE', `${dir} leads outside the files root`, {
          details: { path, rule: 'a directory on the way leaves the files root' },
        });
      }
      break;
    }
  }
}

/** Writes one file atomically with mode 0600 (temp name in the same directory, then rename). */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // A short name of its own, not `<name>.tmp`: a name near the 255-byte limit must still fit.
  const tmp = join(dirname(path), `.cloister-${randomBytes(6).toString('hex')}.tmp`);
  // O_EXCL: never write through a file or symlink someone placed at the temporary name.
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync().catch(() => undefined);
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Writes every file of `files` (manifest path -> content) under `root`. All paths are checked
 * first: one escaping path means nothing at all is written.
 */
export async function writeFiles(
  root: string,
  files: Readonly<Record<string, Uint8Array | string>>,
): Promise<string[]> {
  const entries = Object.entries(files);
  const paths = planPaths(
    root,
    entries.map(([p]) => p),
  );
  const planned = entries.map(([, data], i) => [paths[i] as string, data] as const);
  await checkExistingDirs(root, paths);
  const written: string[] = [];
  for (const [path, data] of planned) {
    try {
      await writeFileAtomic(path, data);
    } catch (e) {
      throw agentError('AGENT_FILES_WRITE_FAILED', `cannot write ${path}`, {
        cause: e,
        details: { path },
      });
    }
    written.push(path);
  }
  return written;
}

/** Replaces the `${CLOISTER_FILES}` token by the files root. */
export function expandFilesToken(value: string, root: string): string {
  return value.split(FILES_TOKEN).join(root);
}
