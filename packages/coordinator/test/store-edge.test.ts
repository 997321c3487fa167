/**
 * Adversarial tests of the store's files: the host owns the data directory and can replace,
 * truncate or corrupt any file in it between runs, and an operator can point two coordinators at
 * the same directory. Each case must end in a typed error, never in a half-working coordinator.
 */
import { strict as assert } from 'node:assert';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createCoordinator } from '../src/coordinator.js';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { Store } from '../src/store/store.js';
import { silent, startFixture, tempDir } from './helpers.js';

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});
function tmp(): string {
  const t = tempDir('cloister-store-edge-');
  cleanups.push(t.cleanup);
  return t.dir;
}

const sealer = (): DerivedKeySealer =>
  new DerivedKeySealer('sim', new Uint8Array(32).fill(7), new Uint8Array(48).fill(1));

/** A closed store with some rows, so that its file has several pages. */
async function filledStore(dir: string): Promise<void> {
  const st = await Store.open(dir, sealer());
  st.transaction(() => {
    for (let i = 0; i < 300; i++) {
      st.put(
        'instances',
        `i${String(i).padStart(4, '0')}`,
        { pad: 'x'.repeat(300) },
        {
          grp: 'web',
          exp: Date.now() + 60_000,
        },
      );
    }
  });
  st.close();
}

describe('store files under a hostile host', () => {
  it('a state file that is not a database is COORDINATOR_STATE_CORRUPT', async () => {
    const dir = tmp();
    await filledStore(dir);
    writeFileSync(join(dir, 'state.db'), Buffer.alloc(16_384, 0x41));
    await assert.rejects(Store.open(dir, sealer()), { code: 'COORDINATOR_STATE_CORRUPT' });
  });

  it('a truncated state file stops start-up with COORDINATOR_STATE_CORRUPT', async () => {
    const f = await startFixture();
    cleanups.push(() => f.cleanup());
    for (let i = 0; i < 5; i++) {
      const r = await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' });
      assert.equal(r.statusCode, 200);
    }
    await f.coord.close();
    const file = join(f.dataDir, 'state.db');
    const bytes = readFileSync(file);
    assert.ok(bytes.length >= 3 * 4096, `state.db has ${bytes.length} bytes`);
    writeFileSync(file, bytes.subarray(0, bytes.length - 4096));
    await assert.rejects(
      createCoordinator({
        dataDir: f.dataDir,
        listen: '127.0.0.1:0',
        ownerKeyPem: f.install.pem,
        simulation: { rootDir: f.simDir },
        logger: silent,
      }),
      { code: 'COORDINATOR_STATE_CORRUPT' },
    );
  });

  it('a second store on the same data directory is refused while the first is open', async () => {
    const dir = tmp();
    const first = await Store.open(dir, sealer());
    first.put('meta', 'k', 'first');
    await assert.rejects(Store.open(dir, sealer()), { code: 'COORDINATOR_BAD_CONFIG' });
    // The refused opener changed nothing and the first store still works.
    first.put('meta', 'k', 'still first');
    assert.equal(first.get('meta', 'k'), 'still first');
    first.close();
    const again = await Store.open(dir, sealer());
    assert.equal(again.get('meta', 'k'), 'still first');
    again.close();
  });

  it('writes its files owner-only, also into a data directory that already existed', async () => {
    const dir = join(tmp(), 'data');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const st = await Store.open(dir, sealer());
    st.put('meta', 'k', 'v');
    for (const name of ['data-key.sealed', 'state.db', 'state.db-wal']) {
      const mode = statSync(join(dir, name)).mode & 0o777;
      assert.equal(mode & 0o077, 0, `${name} has mode ${mode.toString(8)}`);
    }
    st.close();
  });
});
