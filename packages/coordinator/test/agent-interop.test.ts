/**
 * Interoperability with the real agent client: `activate` from @cloister/agent, with its sim
 * provider, against a coordinator over TLS, in first-contact mode, then renewing the instance.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import {
  activate,
  CoordinatorClient,
  releaseInstance,
  simProvider,
  simProgramMeasurement,
} from '@cloister/agent';
import { toHex } from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { installManifest, startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

/** Matches the agent's error for a coordinator refusal with `code`. */
function refusedWith(code: string): (e: unknown) => boolean {
  return (e) => {
    const err = e as { code?: string; details?: { problem?: { code?: string } } };
    assert.equal(err.code, 'AGENT_COORDINATOR_REFUSED', String(e));
    assert.equal(err.details?.problem?.code, code, JSON.stringify(err.details));
    return true;
  };
}

describe('agent interop', () => {
  let f: Fixture;
  const program = new TextEncoder().encode('#!/bin/sh\necho hello\n');
  const args = ['/app/run', '--port', '8080'];
  before(async () => {
    f = await startFixture();
    const m = {
      version: 1,
      trustDomain: 'interop.example',
      packages: {
        app: { tee: 'sim', measurement: toHex(await simProgramMeasurement(program, args)) },
      },
      workloads: {
        web: {
          package: 'app',
          maxInstances: 2,
          files: { '/run/secrets/key': '{{ hex .secrets.k }}' },
          env: { INSTANCE: '{{ string .instance.id }}' },
        },
        // The coordinator makes this workload's mesh key and ships it in the bundle.
        keyed: {
          package: 'app',
          files: {
            '/run/secrets/key': '{{ hex .secrets.k }}',
            '/run/tls/key.pem': '{{ pem .mesh.key }}',
          },
        },
      },
      secrets: { k: { type: 'symmetric', bits: 128, perInstance: true } },
      policy: { allowSimulation: true },
    } as Manifest;
    await installManifest(f, m);
  });
  after(async () => f.cleanup());

  it('activates and renews with the agent client', async () => {
    const client = new CoordinatorClient({ url: f.coord.url });
    const provider = simProvider({ dir: f.simDir, executable: program, args });
    const first = await activate({ client, workload: 'web', provider, keyForm: 'csr' });
    assert.equal(first.bundle.env.INSTANCE, first.instanceId);
    assert.equal(first.bundle.mesh.rootCa.trim(), f.coord.rootCaPem.trim());
    const renewed = await activate({ client, workload: 'web', provider, renew: first });
    assert.equal(renewed.instanceId, first.instanceId);
    assert.equal(renewed.bundle.files['/run/secrets/key'], first.bundle.files['/run/secrets/key']);
    assert.ok(renewed.renewAfter.getTime() > Date.now());
    // The key of the activation the instance has since renewed no longer renews it.
    await assert.rejects(
      activate({ client, workload: 'web', provider, renew: first }),
      refusedWith('COORDINATOR_SIGNATURE_INVALID'),
    );
    // Another program on the same sim platform is refused.
    const other = simProvider({ dir: f.simDir, executable: program, args: [...args, '--debug'] });
    await assert.rejects(activate({ client, workload: 'web', provider: other }), (e: unknown) => {
      const problem = (
        e as { details?: { problem?: { code?: string; details?: { rule?: string } } } }
      ).details?.problem;
      assert.equal(problem?.code, 'COORDINATOR_APPRAISAL_FAILED', JSON.stringify(e));
      assert.equal(problem.details?.rule, 'measurement');
      return true;
    });
  });

  it('renews and releases with the mesh key the coordinator made (.mesh.key)', async () => {
    const client = new CoordinatorClient({ url: f.coord.url });
    const provider = simProvider({ dir: f.simDir, executable: program, args });
    const first = await activate({ client, workload: 'keyed', provider });
    assert.ok(first.bundle.mesh.key !== undefined);
    assert.equal(first.mesh.keyPem, first.bundle.mesh.key);
    // Each renewal is signed with the key of the one before (a new key every time).
    const second = await activate({ client, workload: 'keyed', provider, renew: first });
    const third = await activate({ client, workload: 'keyed', provider, renew: second });
    assert.equal(third.instanceId, first.instanceId);
    assert.notEqual(third.mesh.keyPem, second.mesh.keyPem);
    const secret = first.bundle.files['/run/secrets/key'];
    assert.equal(third.bundle.files['/run/secrets/key'], secret);
    // The agent's own activation key is not the instance's key here.
    await assert.rejects(
      activate({
        client,
        workload: 'keyed',
        provider,
        renew: { instanceId: third.instanceId, mesh: { ...third.mesh, keyPem: third.key.keyPem } },
      }),
      refusedWith('COORDINATOR_SIGNATURE_INVALID'),
    );
    await releaseInstance(client, third);
  });

  it('the instance limit is a refusal, not a retry; a released slot can be reused', async () => {
    const client = new CoordinatorClient({ url: f.coord.url });
    const provider = simProvider({ dir: f.simDir, executable: program, args });
    const refusedCode = (e: unknown): string | undefined => (e as { code?: string }).code;
    // One instance is live from the first test; a second (public-key form) fills the limit.
    const second = await activate({ client, workload: 'web', provider, keyForm: 'public-key' });
    let err: unknown;
    try {
      await activate({ client, workload: 'web', provider });
    } catch (e) {
      err = e;
    }
    assert.equal(refusedCode(err), 'AGENT_COORDINATOR_REFUSED');
    assert.equal(
      (err as { details?: { problem?: { code?: string } } }).details?.problem?.code,
      'COORDINATOR_TOO_MANY_INSTANCES',
    );
    await releaseInstance(client, second);
    // Released once only.
    await assert.rejects(releaseInstance(client, second), { code: 'AGENT_COORDINATOR_REFUSED' });
    const third = await activate({ client, workload: 'web', provider, keyForm: 'public-key' });
    assert.notEqual(third.instanceId, second.instanceId);
  });
});
