import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { Store } from '../src/store/store.js';
import { NonceStore } from '../src/nonces.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'cloister-store-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const platform = new Uint8Array(32).fill(7);
const code = new Uint8Array(48).fill(1);
const sealer = () => new DerivedKeySealer('sim', platform, code);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('sealer', () => {
  it('round-trips and refuses other platforms, other code and tampering', async () => {
    const s = sealer();
    const blob = await s.seal(new Uint8Array([1, 2, 3]));
    assert.deepEqual(await s.unseal(blob), new Uint8Array([1, 2, 3]));
    const other = new DerivedKeySealer('sim', new Uint8Array(32).fill(8), code);
    await assert.rejects(other.unseal(blob), { code: 'COORDINATOR_UNSEAL_FAILED' });
    const otherCode = new DerivedKeySealer('sim', platform, new Uint8Array(48).fill(2));
    await assert.rejects(otherCode.unseal(blob), { code: 'COORDINATOR_UNSEAL_FAILED' });
    for (let i = 0; i < blob.length; i++) {
      const m = new Uint8Array(blob);
      m[i] = (m[i] ?? 0) ^ 1;
      await assert.rejects(s.unseal(m), { code: 'COORDINATOR_UNSEAL_FAILED' });
    }
    await assert.rejects(s.unseal(new Uint8Array(3)), { code: 'COORDINATOR_UNSEAL_FAILED' });
  });
});

describe('store', () => {
  it('indexes rows by expiry, replacing the index of an earlier version', async () => {
    const dir = tmp();
    (await Store.open(dir, sealer())).close();
    const file = readdirSync(dir).find((f) => f.endsWith('.db')) as string;
    const indexes = (): string[] => {
      const db = new Database(join(dir, file));
      try {
        return db
          .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'rows_%'")
          .all()
          .map((r) => (r as { name: string }).name);
      } finally {
        db.close();
      }
    };
    assert.deepEqual(indexes(), ['rows_exp']);
    const old = new Database(join(dir, file));
    old.exec('DROP INDEX rows_exp; CREATE INDEX rows_grp ON rows (tbl, grp, exp);');
    old.close();
    (await Store.open(dir, sealer())).close();
    assert.deepEqual(indexes(), ['rows_exp']);
  });

  it('persists encrypted values across reopen and never writes plaintext', async () => {
    const dir = tmp();
    const st = await Store.open(dir, sealer());
    st.transaction(() => {
      st.put('secrets', 'db', { value: 'PLAINTEXT-MARKER-4711' });
      st.put('instances', 'i1', { w: 1 }, { grp: 'web', exp: Date.now() + 60_000 });
      st.put('instances', 'i2', { w: 2 }, { grp: 'web', exp: Date.now() - 1 });
    });
    st.close();
    const st2 = await Store.open(dir, sealer());
    assert.deepEqual(st2.get('secrets', 'db'), { value: 'PLAINTEXT-MARKER-4711' });
    assert.deepEqual(
      st2.liveRows('instances', Date.now()).map((r) => [r.k, r.grp]),
      [['i1', 'web']],
    );
    assert.equal(st2.list('instances').length, 2);
    st2.close();
    for (const f of readdirSync(dir)) {
      assert.ok(!readFileSync(join(dir, f)).includes('PLAINTEXT-MARKER-4711'), f);
    }
  });

  it('refuses to open with another sealer', async () => {
    const dir = tmp();
    (await Store.open(dir, sealer())).close();
    await assert.rejects(
      Store.open(dir, new DerivedKeySealer('sim', new Uint8Array(32).fill(9), code)),
      { code: 'COORDINATOR_UNSEAL_FAILED' },
    );
  });

  it('refuses a state file without its key file', async () => {
    const dir = tmp();
    (await Store.open(dir, sealer())).close();
    rmSync(join(dir, 'data-key.sealed'));
    await assert.rejects(Store.open(dir, sealer()), { code: 'COORDINATOR_UNSEAL_FAILED' });
  });

  it('refuses a garbled key file', async () => {
    const dir = tmp();
    (await Store.open(dir, sealer())).close();
    writeFileSync(join(dir, 'data-key.sealed'), '{"format":1}');
    await assert.rejects(Store.open(dir, sealer()), { code: 'COORDINATOR_UNSEAL_FAILED' });
  });

  it('detects a value moved to another row (AAD binds table and key)', async () => {
    const dir = tmp();
    const st = await Store.open(dir, sealer());
    st.put('secrets', 'a', 'value-a');
    st.put('secrets', 'b', 'value-b');
    st.close();
    const db = new Database(join(dir, 'state.db'));
    const a = db.prepare("SELECT v FROM rows WHERE tbl='secrets' AND k='a'").get() as { v: Buffer };
    db.prepare("UPDATE rows SET v = ? WHERE tbl='secrets' AND k='b'").run(a.v);
    db.close();
    const st2 = await Store.open(dir, sealer());
    assert.equal(st2.get('secrets', 'a'), 'value-a');
    assert.equal(
      codeOf(() => st2.get('secrets', 'b')),
      'COORDINATOR_STATE_CORRUPT',
    );
    st2.close();
  });

  for (const durability of ['process', 'full'] as const) {
    it(`group commit (${durability}): each queued change is isolated, all share one commit`, async () => {
      const dir = tmp();
      const st = await Store.open(dir, sealer(), { durability });
      const outcomes = await Promise.allSettled([
        st.commit(() => {
          st.put('meta', 'a', 1);
          return 'a';
        }),
        st.commit(() => {
          st.put('meta', 'b', 2);
          throw new Error('refused');
        }),
        st.commit(() => {
          // Sees the write queued before it in the same batch.
          st.put('meta', 'c', (st.get<number>('meta', 'a') ?? 0) + 10);
          return 'c';
        }),
      ]);
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['fulfilled', 'rejected', 'fulfilled'],
      );
      st.close();
      const st2 = await Store.open(dir, sealer());
      assert.equal(st2.get('meta', 'a'), 1);
      assert.equal(st2.get('meta', 'b'), undefined);
      assert.equal(st2.get('meta', 'c'), 11);
      st2.close();
    });
  }

  it('group commit waits for the end of the turn only when each commit costs an fsync', async () => {
    // With `process` durability an acknowledgement must not wait for the other requests of the
    // turn (they would all be answered together); with `full`, the turn shares one fsync.
    for (const [durability, waitsForTurn] of [
      ['process', false],
      ['full', true],
    ] as const) {
      const st = await Store.open(tmp(), sealer(), { durability });
      let turnEnded = false;
      setImmediate(() => {
        turnEnded = true;
      });
      await st.commit(() => st.put('meta', 'k', durability));
      assert.equal(turnEnded, waitsForTurn, durability);
      st.close();
    }
  });

  it('rolls back a failed transaction completely', async () => {
    const st = await Store.open(tmp(), sealer());
    st.put('meta', 'x', 1);
    assert.throws(() =>
      st.transaction(() => {
        st.put('meta', 'x', 2);
        st.put('meta', 'y', 3);
        throw new Error('boom');
      }),
    );
    assert.equal(st.get('meta', 'x'), 1);
    assert.equal(st.get('meta', 'y'), undefined);
    st.close();
  });

  it('serves cached reads that never show a rolled-back write and cannot be changed', async () => {
    const st = await Store.open(tmp(), sealer());
    st.put('secrets', 'a', { value: 'one' });
    st.put('secrets', 'b', { value: 'two' });
    // Cached now (reads outside any transaction).
    assert.deepEqual(st.get('secrets', 'a'), { value: 'one' });
    assert.deepEqual(st.list('secrets').length, 2);
    assert.equal(st.get('secrets', 'missing'), undefined);

    // A write that rolls back: read inside before it (the cached, committed value), and after
    // it (sees it), then after the rollback (does not).
    await assert.rejects(
      st.commit(() => {
        assert.deepEqual(st.get('secrets', 'a'), { value: 'one' });
        assert.equal(st.list('secrets').length, 2);
        st.put('secrets', 'a', { value: 'rolled back' });
        st.put('secrets', 'missing', { value: 'rolled back' });
        assert.deepEqual(st.get('secrets', 'a'), { value: 'rolled back' });
        assert.equal(st.list('secrets').length, 3);
        throw new Error('refused');
      }),
    );
    assert.deepEqual(st.get('secrets', 'a'), { value: 'one' });
    assert.equal(st.get('secrets', 'missing'), undefined);
    assert.deepEqual(
      st.list('secrets').map(([k]) => k),
      ['a', 'b'],
    );

    // A value read inside a transaction is never cached: after a rolled-back write and a read
    // of it in the same transaction, the next read outside is the committed value.
    await assert.rejects(
      st.commit(() => {
        st.put('secrets', 'b', { value: 'uncommitted' });
        assert.deepEqual(st.get('secrets', 'b'), { value: 'uncommitted' });
        assert.deepEqual(st.list('secrets')[1], ['b', { value: 'uncommitted' }]);
        throw new Error('refused');
      }),
    );
    assert.deepEqual(st.get('secrets', 'b'), { value: 'two' });
    assert.deepEqual(st.list('secrets')[1], ['b', { value: 'two' }]);

    // Committed writes and deletes are seen at once.
    await st.commit(() => st.put('secrets', 'missing', { value: 'three' }));
    assert.deepEqual(st.get('secrets', 'missing'), { value: 'three' });
    st.delete('secrets', 'b');
    assert.deepEqual(
      st.list('secrets').map(([k]) => k),
      ['a', 'missing'],
    );

    // A cached value is shared, so it is frozen all the way down.
    st.put('meta', 'state', { head: { seq: 1 } });
    const state = st.get<{ head: { seq: number } }>('meta', 'state');
    assert.throws(() => {
      (state as { head: { seq: number } }).head.seq = 2;
    }, TypeError);
    assert.deepEqual(st.get('meta', 'state'), { head: { seq: 1 } });
    st.close();
  });
});

describe('nonces', () => {
  it('are single use and expire', () => {
    const ns = new NonceStore(1000);
    const t0 = new Date('2026-01-01T00:00:00Z');
    const a = ns.issue(t0);
    const b = ns.issue(t0);
    assert.match(a.nonce, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a.nonce, b.nonce);
    ns.consume(a.nonce, t0);
    assert.equal(
      codeOf(() => ns.consume(a.nonce, t0)),
      'COORDINATOR_NONCE_INVALID',
    );
    // Expired at exactly its TTL, and gone afterwards (one try only).
    assert.equal(
      codeOf(() => ns.consume(b.nonce, new Date(t0.getTime() + 1000))),
      'COORDINATOR_NONCE_INVALID',
    );
    assert.equal(
      codeOf(() => ns.consume(b.nonce, t0)),
      'COORDINATOR_NONCE_INVALID',
    );
    assert.equal(
      codeOf(() => ns.consume('x'.repeat(43), t0)),
      'COORDINATOR_NONCE_INVALID',
    );
  });

  it('a restarted coordinator accepts no nonce issued before the restart', () => {
    const t0 = new Date('2026-01-01T00:00:00Z');
    const before = new NonceStore(60_000).issue(t0);
    const after = new NonceStore(60_000);
    assert.equal(
      codeOf(() => after.consume(before.nonce, t0)),
      'COORDINATOR_NONCE_INVALID',
    );
  });

  it('purges expired nonces and bounds the outstanding ones', () => {
    const ns = new NonceStore(1000, 3);
    const t0 = new Date('2026-01-01T00:00:00Z');
    ns.issue(t0);
    ns.issue(t0);
    const c = ns.issue(new Date(t0.getTime() + 500));
    assert.equal(
      codeOf(() => ns.issue(t0)),
      'COORDINATOR_BUSY',
    );
    // At t0 + 1000 the first two have expired and are purged; the third is still valid.
    ns.issue(new Date(t0.getTime() + 1000));
    assert.equal(ns.size, 2);
    ns.consume(c.nonce, new Date(t0.getTime() + 1000));
    assert.equal(ns.size, 1);
  });
});
