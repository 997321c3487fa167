// Instance retention: instances whose certificate expired more than the retention ago are
// purged (at start-up, on a timer, in bounded batches), and only those.
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { after, before, describe, it, mock } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROUTES, checkBody, decryptBundle } from '@cloister/protocol';
import type { FastifyBaseLogger } from 'fastify';
import { pino } from 'pino';
import { createCoordinator, instancePurgeIntervalMs } from '../src/coordinator.js';
import type { CoordinatorOptions } from '../src/coordinator.js';
import { CoordinatorService, INSTANCE_PURGE_BATCH } from '../src/service.js';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { Store } from '../src/store/store.js';
import {
  baseManifest,
  installManifest,
  ownerKey,
  silent,
  simActivation,
  startFixture,
  tempDir,
} from './helpers.js';
import type { Fixture } from './helpers.js';

const LEAF_MS = 60_000;
const RETENTION_MS = 3_600_000;
/** Longer than any test: the timer never fires unless a test asks for a short interval. */
const NEVER_MS = 2 ** 31 - 1;

/** A logger whose JSON lines are kept in `lines`. */
function capturingLogger(): { logger: FastifyBaseLogger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) },
  ) as unknown as FastifyBaseLogger;
  return { logger, lines };
}

/**
 * A coordinator on a settable clock with 60 s leaves, 1 h retention, no purge timer and a
 * manifest: `frontend` (at most 3 instances, a per-instance secret) and `backend`.
 */
async function start(
  opts: Partial<CoordinatorOptions> = {},
): Promise<{ f: Fixture; clock: { t: number } }> {
  const clock = { t: Date.now() };
  const f = await startFixture({
    now: () => new Date(clock.t),
    leafValidityMs: LEAF_MS,
    instanceRetentionMs: RETENTION_MS,
    instancePurgeIntervalMs: NEVER_MS,
    ...opts,
  });
  try {
    await installManifest(
      f,
      baseManifest(
        {
          workloads: {
            frontend: {
              package: 'dev',
              maxInstances: 3,
              env: { INSTANCE_KEY: '{{ hex .secrets.instanceKey }}' },
            },
            backend: { package: 'dev' },
          },
        },
        { alice: f.alice },
      ),
    );
  } catch (e) {
    await f.cleanup();
    throw e;
  }
  return { f, clock };
}

interface Activated {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly instanceId: string;
  readonly expiresAt: number;
  /** The per-instance secret of the bundle (hex), for frontend instances. */
  readonly instanceKey: string | undefined;
  /** The mesh key of this activation (what a renewal is signed with). */
  readonly key: CryptoKey;
}

/**
 * Activates (or with `instanceId` renews, signed with `instanceKey`) one instance at the
 * fixture's current clock.
 */
async function activate(
  f: Fixture,
  o: { workload?: string; instanceId?: string; instanceKey?: CryptoKey } = {},
): Promise<Activated> {
  const { r, agent } = await simActivation(f, o);
  const body = r.json<Record<string, unknown>>();
  const key = agent.keys.privateKey;
  if (r.statusCode !== 200) {
    return {
      status: r.statusCode,
      body,
      instanceId: '',
      expiresAt: NaN,
      instanceKey: undefined,
      key,
    };
  }
  const out = checkBody(ROUTES.activate.response, body);
  const bundle = await decryptBundle(out.bundle, agent.bundlePrivate);
  return {
    status: 200,
    body,
    instanceId: out.instanceId,
    expiresAt: Date.parse(out.expiresAt),
    instanceKey: bundle.env['INSTANCE_KEY'],
    key,
  };
}

async function purgedMetric(f: Fixture): Promise<number> {
  const text = (await f.coord.server.inject({ method: 'GET', url: '/metrics' })).body;
  const m = /^cloister_instances_purged_total (\d+)$/m.exec(text);
  assert.ok(m, 'the purge counter is exported');
  return Number(m[1]);
}

function assertNotFound(a: Activated, detail: RegExp): void {
  assert.equal(a.status, 404, JSON.stringify(a.body));
  assert.equal(a.body['code'], 'COORDINATOR_NOT_FOUND');
  assert.match(String(a.body['detail']), detail);
  assert.equal((a.body['details'] as Record<string, unknown>)['rule'], 'instanceId');
}

describe('instance retention', () => {
  // One coordinator, three instances on its clock (leaves of 60 s, retention 1 h):
  // `old` expires at 60 s, `recent` at 1 h 60 s, `live` at 1 h 121 s; the purge runs at 1 h 100 s.
  let f: Fixture;
  let clock: { t: number };
  let lines: Record<string, unknown>[];
  let old: Activated;
  let recent: Activated;
  let live: Activated;
  let purged: number;
  before(async () => {
    const captured = capturingLogger();
    lines = captured.lines;
    ({ f, clock } = await start({ logger: captured.logger }));
    const t0 = clock.t;
    old = await activate(f);
    clock.t = t0 + RETENTION_MS;
    recent = await activate(f);
    clock.t = t0 + RETENTION_MS + 61_000;
    live = await activate(f);
    for (const a of [old, recent, live]) assert.equal(a.status, 200, JSON.stringify(a.body));
    clock.t = t0 + RETENTION_MS + 100_000;
    purged = await f.coord.service.purgeExpiredInstances();
  });
  after(async () => f.cleanup());

  it('deletes an instance expired past retention: its renewal is NOT_FOUND', async () => {
    assert.equal(purged, 1);
    assert.equal(await purgedMetric(f), 1);
    const log = lines.find((l) => l['msg'] === 'instances expired past retention purged');
    assert.equal(log?.['purged'], 1);
    assertNotFound(await activate(f, { instanceId: old.instanceId }), /expired past retention/);
  });

  it('keeps an instance expired within retention: it renews with its secrets', async () => {
    assert.ok(recent.expiresAt < clock.t, 'recent has expired');
    const renewed = await activate(f, { instanceId: recent.instanceId, instanceKey: recent.key });
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    assert.equal(renewed.instanceId, recent.instanceId);
    assert.ok(recent.instanceKey !== undefined && recent.instanceKey.length > 0);
    assert.equal(renewed.instanceKey, recent.instanceKey);
    assert.notEqual(live.instanceKey, recent.instanceKey);
  });

  it('never deletes a live instance', async () => {
    assert.ok(live.expiresAt > clock.t, 'live has not expired');
    // Purge again, even a moment before its expiry: nothing goes, and it renews.
    clock.t = live.expiresAt - 1;
    assert.equal(await f.coord.service.purgeExpiredInstances(), 0);
    const st = checkBody(
      ROUTES.status.response,
      (await f.coord.server.inject({ method: 'GET', url: '/v1/status' })).json(),
    );
    assert.equal(st.instances?.['frontend'], 2);
    const renewed = await activate(f, { instanceId: live.instanceId, instanceKey: live.key });
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    assert.equal(renewed.instanceKey, live.instanceKey);
  });
});

describe('instance retention: batches, races, timer', () => {
  it('the retention boundary: kept 1 ms before expiry + retention, deleted at it', async () => {
    const { f, clock } = await start();
    try {
      const a = await activate(f, { workload: 'backend' });
      assert.equal(a.status, 200, JSON.stringify(a.body));
      clock.t = a.expiresAt + RETENTION_MS - 1;
      assert.equal(await f.coord.service.purgeExpiredInstances(), 0);
      clock.t = a.expiresAt + RETENTION_MS;
      assert.equal(await f.coord.service.purgeExpiredInstances(), 1);
      assertNotFound(await activate(f, { workload: 'backend', instanceId: a.instanceId }), /./);
    } finally {
      await f.cleanup();
    }
  });

  it('purges more instances than one batch in several batches, all of them', async () => {
    const { f, clock } = await start();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const a = await activate(f, { workload: 'backend' });
        assert.equal(a.status, 200, JSON.stringify(a.body));
        ids.push(a.instanceId);
      }
      clock.t += LEAF_MS + RETENTION_MS;
      const spy = mock.method(Store.prototype, 'purgeExpired');
      let purged: number;
      try {
        purged = await f.coord.service.purgeExpiredInstances({ batchSize: 2 });
      } finally {
        spy.mock.restore();
      }
      assert.equal(purged, 5);
      // One bounded delete per commit, until a batch comes back short.
      assert.deepEqual(
        spy.mock.calls.map((c) => c.result),
        [2, 2, 1],
      );
      assert.equal(await purgedMetric(f), 5);
      for (const id of ids) {
        assertNotFound(await activate(f, { workload: 'backend', instanceId: id }), /./);
      }
    } finally {
      await f.cleanup();
    }
  });

  it('a renewal whose instance is purged while it is verified is NOT_FOUND', async () => {
    const { f, clock } = await start();
    try {
      const a = await activate(f);
      assert.equal(a.status, 200, JSON.stringify(a.body));
      clock.t = a.expiresAt + RETENTION_MS + 1;
      // The purge commits right after the renewal has read the instance, before its commit.
      // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its store
      const get = Store.prototype.get;
      let purging: Promise<number> | undefined;
      const spy = mock.method(
        Store.prototype,
        'get',
        function (this: Store, ...args: Parameters<Store['get']>): unknown {
          const v = get.apply(this, args);
          if (args[0] === 'instances' && args[1] === a.instanceId && purging === undefined) {
            purging = f.coord.service.purgeExpiredInstances();
          }
          return v;
        },
      );
      let renewal: Activated;
      try {
        renewal = await activate(f, { instanceId: a.instanceId, instanceKey: a.key });
      } finally {
        spy.mock.restore();
      }
      assert.equal(await purging, 1);
      assertNotFound(renewal, /^the instance was released or expired past retention$/);
    } finally {
      await f.cleanup();
    }
  });

  it('purges at start-up', async () => {
    const first = await start();
    const a = await activate(first.f, { workload: 'backend' });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    await first.f.coord.close();
    // The same state, started again later: the instance is gone before anything is served.
    const captured = capturingLogger();
    const again = await createCoordinator({
      dataDir: first.f.dataDir,
      listen: '127.0.0.1:0',
      ownerKeyPem: first.f.install.pem,
      simulation: { rootDir: first.f.simDir },
      logger: captured.logger,
      now: () => new Date(a.expiresAt + RETENTION_MS),
      leafValidityMs: LEAF_MS,
      instanceRetentionMs: RETENTION_MS,
      instancePurgeIntervalMs: NEVER_MS,
    });
    try {
      const log = captured.lines.find(
        (l) => l['msg'] === 'instances expired past retention purged',
      );
      assert.equal(log?.['purged'], 1);
      const f2 = { ...first.f, coord: again };
      assert.equal(await purgedMetric(f2), 1);
      assertNotFound(await activate(f2, { workload: 'backend', instanceId: a.instanceId }), /./);
    } finally {
      await again.close();
      await first.f.cleanup();
    }
  });

  it('the timer purges periodically; after close no purge runs', async () => {
    const captured = capturingLogger();
    const purges = mock.method(CoordinatorService.prototype, 'purgeExpiredInstances');
    try {
      const { f, clock } = await start({ logger: captured.logger, instancePurgeIntervalMs: 10 });
      try {
        const a = await activate(f, { workload: 'backend' });
        assert.equal(a.status, 200, JSON.stringify(a.body));
        clock.t = a.expiresAt + RETENTION_MS;
        const deadline = Date.now() + 10_000;
        while ((await purgedMetric(f)) === 0) {
          assert.ok(Date.now() < deadline, 'the timer purged within 10 s');
          await sleep(10);
        }
      } finally {
        await f.cleanup();
      }
      // A timer left running would start a purge every 10 ms.
      const calls = purges.mock.callCount();
      await sleep(100);
      assert.equal(purges.mock.callCount(), calls);
    } finally {
      purges.mock.restore();
    }
    assert.deepEqual(
      captured.lines.filter((l) => (l['level'] as number) >= 50),
      [],
      'nothing failed',
    );
  });

  it('close during a purge lets its batch finish and starts no other', async () => {
    const captured = capturingLogger();
    const { f, clock } = await start({ logger: captured.logger, instancePurgeIntervalMs: 10 });
    let closing: Promise<void> | undefined;
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its store
    const purgeExpired = Store.prototype.purgeExpired;
    const batches = mock.method(
      Store.prototype,
      'purgeExpired',
      function (this: Store, ...args: Parameters<Store['purgeExpired']>): number {
        const n = purgeExpired.apply(this, args);
        if (n === 0 || closing !== undefined) return n;
        // The first batch that deleted something closes the coordinator and claims to be full,
        // so that the purge would go on with another batch.
        closing = f.coord.close();
        return args[2] ?? n;
      },
    );
    try {
      const a = await activate(f, { workload: 'backend' });
      assert.equal(a.status, 200, JSON.stringify(a.body));
      const before = batches.mock.callCount();
      clock.t = a.expiresAt + RETENTION_MS;
      const deadline = Date.now() + 10_000;
      while (closing === undefined) {
        assert.ok(Date.now() < deadline, 'the timer purged within 10 s');
        await sleep(10);
      }
      await closing;
      const after = batches.mock.calls.slice(before).map((c) => c.result);
      assert.equal(after.at(-1), INSTANCE_PURGE_BATCH, 'no batch after close');
    } finally {
      batches.mock.restore();
      await f.cleanup();
    }
    assert.deepEqual(
      captured.lines.filter((l) => (l['level'] as number) >= 50),
      [],
      'nothing failed',
    );
  });

  it('refuses a retention or purge interval that is not a positive duration', async () => {
    const owner = await ownerKey('install');
    const { dir, cleanup } = tempDir();
    try {
      for (const bad of [
        { instanceRetentionMs: 0 },
        { instanceRetentionMs: -1 },
        { instanceRetentionMs: Number.NaN },
        { instanceRetentionMs: Number.POSITIVE_INFINITY },
        { instancePurgeIntervalMs: 0 },
        { instancePurgeIntervalMs: 2 ** 31 },
      ]) {
        await assert.rejects(
          createCoordinator({
            dataDir: dir,
            listen: '127.0.0.1:0',
            ownerKeyPem: owner.pem,
            simulation: { rootDir: dir },
            logger: silent,
            ...bad,
          }),
          { code: 'COORDINATOR_BAD_CONFIG' },
          JSON.stringify(bad),
        );
      }
    } finally {
      cleanup();
    }
  });

  it('derives the purge interval: a quarter of the retention, 1 s to 1 h', () => {
    assert.equal(instancePurgeIntervalMs(7 * 86_400_000), 3_600_000);
    assert.equal(instancePurgeIntervalMs(3_600_000), 900_000);
    assert.equal(instancePurgeIntervalMs(2_000), 1_000);
    assert.equal(instancePurgeIntervalMs(1), 1_000);
  });
});

describe('store: bounded purge', () => {
  it('deletes at most `limit` expired rows per call, and only expired ones', async () => {
    const { dir, cleanup } = tempDir();
    const st = await Store.open(
      dir,
      new DerivedKeySealer('sim', new Uint8Array(32).fill(7), new Uint8Array(48).fill(1)),
    );
    try {
      const rows = 2 * INSTANCE_PURGE_BATCH + 1;
      st.transaction(() => {
        for (let i = 0; i < rows; i++) st.put('instances', `e${i}`, { i }, { grp: 'w', exp: i });
        st.put('instances', 'live', { live: true }, { grp: 'w', exp: 1e15 });
        st.put('instances', 'no-expiry', { none: true });
      });
      const batches: number[] = [];
      for (let n = -1; n !== 0;) {
        n = st.transaction(() => st.purgeExpired('instances', rows, INSTANCE_PURGE_BATCH));
        batches.push(n);
      }
      assert.deepEqual(batches, [INSTANCE_PURGE_BATCH, INSTANCE_PURGE_BATCH, 1, 0]);
      assert.deepEqual(
        st.list('instances').map(([k]) => k),
        ['live', 'no-expiry'],
      );
      // Without a limit: every expired row at once (the nonces at start-up).
      st.transaction(() => {
        for (let i = 0; i < 3; i++) st.put('nonces', `n${i}`, {}, { exp: i });
      });
      assert.equal(st.purgeExpired('nonces', Number.MAX_SAFE_INTEGER), 3);
    } finally {
      st.close();
      cleanup();
    }
  });
});
