/**
 * maxInstances under concurrency: many activations in flight at once for a workload with a
 * small limit. Exactly `maxInstances` succeed; the check-and-insert is atomic although no lock is
 * held while evidence is verified.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import type { Manifest } from '@cloister/protocol';
import { agentKey, installManifest, MEASUREMENT, simEvidence, startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

describe('concurrent activations', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
    const m = {
      version: 1,
      trustDomain: 'race.example',
      packages: { dev: { tee: 'sim', measurement: MEASUREMENT } },
      workloads: { limited: { package: 'dev', maxInstances: 5 } },
      policy: { allowSimulation: true },
    } as Manifest;
    await installManifest(f, m);
  });
  after(async () => f.cleanup());

  it('admits exactly maxInstances of 24 simultaneous activations', async () => {
    const bodies = await Promise.all(
      Array.from({ length: 24 }, async () => {
        const a = await agentKey();
        const { nonce } = (
          await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' })
        ).json<{ nonce: string }>();
        return {
          workload: 'limited',
          nonce,
          evidence: await simEvidence(f.hw, nonce, a),
          csr: a.csr,
          bundleKey: a.bundleKey,
        };
      }),
    );
    const results = await Promise.all(
      bodies.map((payload) =>
        f.coord.server.inject({ method: 'POST', url: '/v1/activate', payload }),
      ),
    );
    const ok = results.filter((r) => r.statusCode === 200);
    const refused = results.filter((r) => r.statusCode !== 200);
    assert.equal(ok.length, 5);
    for (const r of refused)
      assert.equal(r.json<{ code: string }>().code, 'COORDINATOR_TOO_MANY_INSTANCES', r.body);
    assert.equal(new Set(ok.map((r) => r.json<{ instanceId: string }>().instanceId)).size, 5);
    assert.deepEqual(f.coord.service.liveInstances(), { limited: 5 });
  });
});
