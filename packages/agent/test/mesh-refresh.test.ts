/**
 * The manifest refresher on its own: what a manifest change applies live and what needs a
 * restart, and that refreshes racing each other never leave an older manifest in force.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Manifest, ManifestResponse } from '@cloister/protocol';
import { meshRefresher, planMeshUpdate } from '../src/mesh/refresh.js';
import { meshRoutes } from '../src/mesh/routes.js';
import type { IngressAccess } from '../src/mesh/proxy.js';
import type { AgentLog } from '../src/run.js';

/** `api` listens on 8443 (to 8080); each of `callers` has an egress to it. */
function manifest(callers: readonly string[], api: Partial<{ external: boolean }> = {}): Manifest {
  const workloads: Manifest['workloads'] = {
    api: { package: 'p', mesh: { ingress: [{ port: 8443, to: 8080, ...api }] } },
  };
  for (const c of callers) {
    workloads[c] = {
      package: 'p',
      mesh: { egress: [{ listen: '127.0.0.1:9000', workload: 'api', port: 8443 }] },
    };
  }
  return {
    version: 1,
    trustDomain: 'shop.test',
    packages: { p: { tee: 'sim', measurement: '00'.repeat(48) } },
    workloads,
  };
}

const answer = (seq: number, m: Manifest): ManifestResponse => ({
  manifest: m,
  manifestHash: seq.toString(16).padStart(64, '0'),
  seq,
});

function recorder() {
  const warnings: { msg: string; fields?: Record<string, unknown> }[] = [];
  const log: AgentLog = {
    info: () => undefined,
    warn: (msg, fields) => warnings.push(fields === undefined ? { msg } : { msg, fields }),
  };
  const applied: IngressAccess[][] = [];
  const proxy = {
    updateRoutes: (a: readonly IngressAccess[]) => {
      applied.push([...a]);
      return 0;
    },
  };
  return { warnings, log, applied, proxy };
}

function refresherFor(fetch: (signal: AbortSignal) => Promise<ManifestResponse>) {
  const r = recorder();
  const start = manifest(['web', 'batch']);
  const refresher = meshRefresher({
    fetch,
    workload: 'api',
    started: { manifestHash: answer(1, start).manifestHash, seq: 1 },
    routes: meshRoutes(start, 'api'),
    proxy: r.proxy,
    log: r.log,
  });
  return { ...r, refresher };
}

const allowOf = (a: IngressAccess[] | undefined) => a?.map((x) => x.allow);
/** Lets queued refreshes start (they begin in a microtask). */
const tick = () => new Promise((r) => setImmediate(r));

test('a revoked egress empties the allow-list; a new port or egress needs a restart', () => {
  const started = meshRoutes(manifest(['web', 'batch']), 'api');
  const revoked = planMeshUpdate(started, meshRoutes(manifest(['web']), 'api'));
  assert.deepEqual(revoked, {
    access: [{ port: 8443, allow: ['web'], external: false }],
    restart: [],
  });
  // A port added, the target changed, external granted: reported, the allow-list still applies.
  const m = manifest(['web', 'batch'], { external: true });
  const api = m.workloads['api'] as Manifest['workloads'][string];
  m.workloads['api'] = {
    ...api,
    mesh: {
      ingress: [
        { port: 8443, to: 8081, external: true },
        { port: 9443, to: 9090 },
      ],
      egress: [{ listen: '127.0.0.1:7000', workload: 'web', port: 8443 }],
    },
  };
  const changed = planMeshUpdate(started, meshRoutes(m, 'api'));
  assert.deepEqual(changed.access, [{ port: 8443, allow: ['batch', 'web'], external: false }]);
  assert.deepEqual(changed.restart, [
    'ingress 8443 now forwards to port 8081',
    'ingress 8443 now admits clients without a certificate',
    'ingress 9443 added',
    'egress 127.0.0.1:7000 to web at web:8443 added',
  ]);
  // A removed ingress admits nobody until the restart closes it.
  const gone = manifest([]);
  gone.workloads['api'] = { package: 'p' };
  assert.deepEqual(planMeshUpdate(started, meshRoutes(gone, 'api')), {
    access: [{ port: 8443, allow: [], external: false }],
    restart: ['ingress 8443 removed (it admits nobody meanwhile)'],
  });
  // Revoking external applies live on a listener started with it.
  const ext = meshRoutes(manifest(['web'], { external: true }), 'api');
  assert.deepEqual(planMeshUpdate(ext, meshRoutes(manifest(['web']), 'api')), {
    access: [{ port: 8443, allow: ['web'], external: false }],
    restart: [],
  });
});

test('racing refreshes run one at a time and apply the newer manifest last', async () => {
  let inFlight = 0;
  let most = 0;
  let calls = 0;
  // The first read is slow and sees seq 2; the second starts after it and sees seq 3.
  const { refresher, applied } = refresherFor(async () => {
    const n = ++calls;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, n === 1 ? 100 : 1));
    inFlight--;
    return n === 1 ? answer(2, manifest(['web'])) : answer(3, manifest([]));
  });
  const first = refresher.refresh();
  await tick();
  assert.equal(calls, 1);
  // Asked for while the first reads (a renewal and the timer at once): waits its turn.
  const second = refresher.refresh();
  // Asked for while the second waits: joins it, since it will read after this call anyway.
  const third = refresher.refresh();
  assert.equal(third, second);
  await Promise.all([first, second]);
  assert.equal(calls, 2);
  assert.equal(most, 1, 'never two reads at once');
  assert.deepEqual(applied.map(allowOf), [[['web']], [[]]]);
  await refresher.stop();
});

test('an answer older than the manifest in force is ignored', async () => {
  const answers = [answer(3, manifest(['web'])), answer(2, manifest(['web', 'batch']))];
  const { refresher, applied, warnings } = refresherFor(() =>
    Promise.resolve(answers.shift() as ManifestResponse),
  );
  await refresher.refresh();
  await refresher.refresh();
  assert.deepEqual(applied.map(allowOf), [[['web']]]);
  assert.match(warnings[0]?.msg ?? '', /older manifest/);
  await refresher.stop();
});

test('a failed read, or a manifest without the workload, changes nothing', async () => {
  const noApi = manifest([]);
  delete noApi.workloads['api'];
  const results: (() => Promise<ManifestResponse>)[] = [
    () => Promise.reject(Object.assign(new Error('down'), { code: 'X' })),
    () => Promise.resolve(answer(2, noApi)),
    // The same manifest again: not reported twice.
    () => Promise.resolve(answer(2, noApi)),
    () => Promise.resolve(answer(3, manifest(['web', 'batch']))),
  ];
  const { refresher, applied, warnings } = refresherFor(() =>
    (results.shift() as () => Promise<ManifestResponse>)(),
  );
  for (let i = 0; i < 4; i++) await refresher.refresh();
  assert.deepEqual(applied, [], 'same allow-list as at start: nothing to swap');
  assert.deepEqual(
    warnings.map((w) => w.msg.slice(0, 28)),
    ['manifest refresh failed; the', 'the manifest no longer names'],
  );
});

test('stop aborts the read in flight and applies nothing after it', async () => {
  let aborted = false;
  const { refresher, applied } = refresherFor(
    (signal) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(new Error('aborted'));
        });
      }),
  );
  const pending = refresher.refresh();
  await tick();
  await refresher.stop();
  await pending;
  assert.equal(aborted, true);
  await refresher.refresh();
  assert.deepEqual(applied, []);
});
