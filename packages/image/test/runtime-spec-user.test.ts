/**
 * The user of the runtime spec: supplementary groups from the image's /etc/group, as Docker
 * sets them for the same image (runc itself sets only the groups the spec lists).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildRuntimeSpec, resolveUser } from '@cloister/image';
import { tempDir } from './helpers.js';

test('the process user gets its supplementary groups and keeps its primary one', async (t) => {
  const rootfs = tempDir(t);
  mkdirSync(join(rootfs, 'etc'));
  writeFileSync(
    join(rootfs, 'etc/passwd'),
    [
      'root:x:0:0:root:/root:/bin/sh',
      'postgres:x:999:999::/var/lib/postgresql:/bin/sh',
      'alias:x:999:50::/:/bin/sh',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(rootfs, 'etc/group'),
    [
      'root:x:0:',
      'tty:x:5:alice,postgres',
      'ssl-cert:x:101:postgres',
      'postgres:x:999:',
      'staff:x:50:alias',
      '',
    ].join('\n'),
  );
  const config = {
    os: 'linux',
    architecture: 'amd64',
    diffIds: [],
    entrypoint: ['/app'],
    raw: {},
  };
  const spec = await buildRuntimeSpec({ config: { ...config, user: 'postgres' }, rootfs });
  assert.deepEqual(spec.process.user, { uid: 999, gid: 999, additionalGids: [999, 5, 101] });
  // By number: the same entry, the same groups.
  assert.deepEqual(await resolveUser(rootfs, '999'), spec.process.user);
  // A name sharing the uid is its own entry.
  assert.deepEqual(await resolveUser(rootfs, 'alias'), {
    uid: 999,
    gid: 50,
    additionalGids: [50],
  });
  // An explicit group replaces the membership lookup (as Docker does).
  assert.deepEqual(await resolveUser(rootfs, 'postgres:ssl-cert'), {
    uid: 999,
    gid: 101,
    additionalGids: [101],
  });
  // A uid the image does not know: its primary group only.
  assert.deepEqual(await resolveUser(rootfs, '1234'), { uid: 1234, gid: 0, additionalGids: [0] });
  assert.deepEqual((await buildRuntimeSpec({ config, rootfs })).process.user, {
    uid: 0,
    gid: 0,
    additionalGids: [0],
  });
});
