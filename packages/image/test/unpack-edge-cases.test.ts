/**
 * Layer applier edge cases: opaque whiteouts next to symlinks and re-declared directories,
 * setuid bits under chown, the entry limit and implied parents, PAX owner ids, and link entries
 * that carry data.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import tar from 'tar-stream';
import { unpackRootfs } from '@cloister/image';
import { makeTar, type Entry } from './fixtures.js';
import { tempDir } from './helpers.js';

type PackHeader = Parameters<ReturnType<typeof tar.pack>['entry']>[0];

/** A tar from raw tar-stream headers (uid, gid, mtime and pax records that `makeTar` leaves out). */
async function rawTar(entries: { header: PackHeader; content?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) pack.entry(e.header, e.content ?? '');
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

function layersOf(tars: Buffer[]) {
  return tars.map((b) => ({ open: () => Readable.from([b]), compression: 'none' as const }));
}

test('an opaque whiteout never follows a lower symlink out of the root', async (t) => {
  const dir = tempDir(t);
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'keep-me'), 'host data');
  const rootfs = join(dir, 'out', 'rootfs');
  const lower = await makeTar([
    { name: 'd/' },
    // Absolute: re-rooted inside the container, but a host path for the unpacker.
    { name: 'd/l', type: 'symlink', linkname: outside },
  ]);
  const upper = await makeTar([
    { name: 'd/l/x', content: 'x' },
    { name: 'd/.wh..wh..opq', content: '' },
  ]);
  await unpackRootfs(rootfs, layersOf([lower, upper]));
  assert.equal(readFileSync(join(outside, 'keep-me'), 'utf8'), 'host data');
  assert.deepEqual(readdirSync(outside), ['keep-me']);
  // The write went where the container sees it; the lower symlink is hidden like any child.
  assert.equal(readFileSync(join(rootfs, outside, 'x'), 'utf8'), 'x');
  assert.deepEqual(readdirSync(join(rootfs, 'd')), []);
});

test('an opaque whiteout hides lower children of a directory the layer declares again', async (t) => {
  const dir = tempDir(t);
  const rootfs = join(dir, 'rootfs');
  const lower = await makeTar([
    { name: 'app/' },
    { name: 'app/conf/' },
    { name: 'app/conf/old-secret', content: 'lower' },
  ]);
  // Layer order inside a tar is not fixed by the spec: the directory may precede the marker.
  const upper = await makeTar([
    { name: 'app/' },
    { name: 'app/conf/' },
    { name: 'app/conf/new', content: 'upper' },
    { name: 'app/.wh..wh..opq', content: '' },
  ]);
  await unpackRootfs(rootfs, layersOf([lower, upper]));
  assert.equal(readFileSync(join(rootfs, 'app/conf/new'), 'utf8'), 'upper');
  assert.equal(existsSync(join(rootfs, 'app/conf/old-secret')), false);
});

test('an opaque whiteout keeps what the same layer wrote through a symlinked path', async (t) => {
  const dir = tempDir(t);
  const rootfs = join(dir, 'rootfs');
  const lower = await makeTar([
    { name: 'usr/lib/' },
    { name: 'usr/lib/old', content: 'lower' },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
  ]);
  const upper = await makeTar([
    { name: 'lib/new', content: 'upper' },
    { name: 'usr/lib/.wh..wh..opq', content: '' },
  ]);
  await unpackRootfs(rootfs, layersOf([lower, upper]));
  assert.equal(readFileSync(join(rootfs, 'usr/lib/new'), 'utf8'), 'upper');
  assert.equal(existsSync(join(rootfs, 'usr/lib/old')), false);
});

test('setuid and setgid bits survive chown', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('SKIPPED: chown needs root');
    return;
  }
  const dir = tempDir(t);
  const rootfs = join(dir, 'rootfs');
  const layer = await rawTar([
    { header: { name: 'bin/', type: 'directory', mode: 0o755 } },
    {
      header: { name: 'bin/su', type: 'file', mode: 0o4755, uid: 0, gid: 0, mtime: new Date(0) },
      content: 'elf',
    },
    {
      header: { name: 'bin/wall', type: 'file', mode: 0o2755, uid: 0, gid: 5, mtime: new Date(0) },
      content: 'elf',
    },
  ]);
  await unpackRootfs(rootfs, layersOf([layer]), { chown: true });
  assert.equal(statSync(join(rootfs, 'bin/su')).mode & 0o7777, 0o4755);
  assert.equal(statSync(join(rootfs, 'bin/wall')).mode & 0o7777, 0o2755);
  assert.equal(statSync(join(rootfs, 'bin/wall')).gid, 5);
});

test('directories a layer implies count against the entry limit', async (t) => {
  const dir = tempDir(t);
  const deep: Entry[] = [{ name: `${'d/'.repeat(50)}f`, content: 'x' }];
  await assert.rejects(
    unpackRootfs(join(dir, 'r1'), layersOf([await makeTar(deep)]), {
      limits: { maxEntries: 10 },
    }),
    { code: 'IMAGE_UNPACK_LIMIT' },
  );
  // Through a symlink whose target names many components, past the per-entry depth limit.
  const viaLink: Entry[] = [
    { name: 's', type: 'symlink', linkname: 'd/'.repeat(200) },
    { name: 's/f', content: 'x' },
  ];
  await assert.rejects(
    unpackRootfs(join(dir, 'r2'), layersOf([await makeTar(viaLink)]), {
      limits: { maxEntries: 100 },
    }),
    { code: 'IMAGE_UNPACK_LIMIT' },
  );
  assert.deepEqual(readdirSync(dir), []);
  // Within the limit, the same layer unpacks.
  await unpackRootfs(join(dir, 'r3'), layersOf([await makeTar(deep)]), {
    limits: { maxEntries: 51 },
  });
});

test('PAX uid and gid records set the owner (ids too large for the octal fields)', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('SKIPPED: chown needs root');
    return;
  }
  const dir = tempDir(t);
  const rootfs = join(dir, 'rootfs');
  // What Go's archive/tar writes for such ids: 0 in the header, the real id in PAX records.
  const layer = await rawTar([
    {
      header: {
        name: 'data',
        type: 'file',
        mode: 0o640,
        uid: 0,
        gid: 0,
        pax: { uid: '1000680000', gid: '1000680001' },
      },
      content: 'owned',
    },
  ]);
  await unpackRootfs(rootfs, layersOf([layer]), { chown: true });
  const st = statSync(join(rootfs, 'data'));
  assert.equal(st.uid, 1000680000);
  assert.equal(st.gid, 1000680001);
  for (const bad of ['-1', '1e3', '4294967296', '']) {
    await assert.rejects(
      unpackRootfs(
        join(dir, `bad-${bad}`),
        layersOf([
          await rawTar([{ header: { name: 'f', type: 'file', pax: { uid: bad } }, content: '' }]),
        ]),
        { chown: true },
      ),
      { code: 'IMAGE_UNPACK_MALFORMED' },
    );
  }
});

/** Rewrites the header at `at` into a symlink (2) or hard link (1) to `linkname`, data kept. */
function asLinkWithData(b: Buffer, at: number, type: '1' | '2', linkname: string): Buffer {
  const out = Buffer.from(b);
  const h = out.subarray(at, at + 512);
  h.write(type, 156, 'latin1');
  h.write(linkname, 157, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of h) sum += x;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return out;
}

test('a symlink or hard link that carries data is refused (other unpackers read it as entries)', async (t) => {
  const dir = tempDir(t);
  // Go's archive/tar (Docker, containerd) skips no data after a link header: the 512 bytes
  // below are the next entry to it, and a hidden one to an unpacker that drains them.
  const hidden = (await makeTar([{ name: 'hidden', content: '' }])).subarray(0, 512);
  const plain = await makeTar([
    { name: 'target', content: '' },
    { name: 'l', content: hidden },
  ]);
  for (const type of ['1', '2'] as const) {
    const layer = asLinkWithData(plain, 512, type, 'target');
    await assert.rejects(unpackRootfs(join(dir, `r${type}`), layersOf([layer])), {
      code: 'IMAGE_UNPACK_MALFORMED',
    });
  }
  assert.deepEqual(readdirSync(dir), []);
  // The unpatched layer is fine: the same bytes as file content.
  await unpackRootfs(join(dir, 'ok'), layersOf([plain]));
});
