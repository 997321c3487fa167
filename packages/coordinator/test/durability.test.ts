/**
 * Durability: a coordinator in a child process is killed with SIGKILL while 200 activations
 * and a secret upload are in flight, then restarted on the same data directory. Every
 * acknowledged activation and upload must be there, the history must verify, every row must
 * decrypt (nothing half-written), and no file of the data directory may contain a secret.
 */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { Agent, request } from 'undici';
import {
  ROUTES,
  checkBody,
  decryptBundle,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  verifyHistory,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { coordinatorSimMeasurement } from '../src/measurement.js';
import { DerivedKeySealer } from '../src/store/sealer.js';
import { Store } from '../src/store/store.js';
import type { InstanceRecord } from '../src/service.js';
import {
  agentKey,
  MEASUREMENT,
  ownerKey,
  renewalSignature,
  signTransition,
  simEvidence,
  simHardware,
  tempDir,
} from './helpers.js';

const child = new URL('./fixtures/child-coordinator.ts', import.meta.url).pathname;

interface Running {
  proc: ChildProcess;
  url: string;
  rootCaPem: string;
  dispatcher: Agent;
}

async function start(dataDir: string, simDir: string, ownerFile: string): Promise<Running> {
  const proc = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', child, dataDir, simDir, ownerFile],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    rl.once('line', (l) => {
      rl.close();
      resolve(l);
    });
    proc.once('exit', (code) => reject(new Error(`child exited ${String(code)}`)));
  });
  const { url, rootCaPem } = JSON.parse(line) as { url: string; rootCaPem: string };
  return {
    proc,
    url,
    rootCaPem,
    dispatcher: new Agent({ connect: { ca: rootCaPem, servername: 'localhost' }, connections: 64 }),
  };
}

async function call(
  r: Running,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await request(`${r.url}${path}`, {
    method: method as 'GET',
    dispatcher: r.dispatcher,
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  return {
    status: res.statusCode,
    json: JSON.parse(await res.body.text()) as Record<string, unknown>,
  };
}

const { dir, cleanup } = tempDir('cloister-durable-');
after(cleanup);

describe('durability under SIGKILL', () => {
  it('keeps every acknowledged activation and secret, writes nothing half and no plaintext', async () => {
    const simDir = join(dir, 'sim');
    const dataDir = join(dir, 'data');
    const hw = await simHardware(simDir);
    const install = await ownerKey('install');
    const alice = await ownerKey('alice');
    const ownerFile = join(dir, 'owner.pem');
    writeFileSync(ownerFile, install.pem);
    const dbPassword = `db-password-${toBase64Url(crypto.getRandomValues(new Uint8Array(12)))}`;
    const token = `upload-token-${toBase64Url(crypto.getRandomValues(new Uint8Array(12)))}`;

    let r = await start(dataDir, simDir, ownerFile);
    const m = {
      version: 1,
      trustDomain: 'durable.example',
      packages: { dev: { tee: 'sim', measurement: MEASUREMENT } },
      workloads: {
        fleet: {
          package: 'dev',
          maxInstances: 1000,
          env: { DB: '{{ string .secrets.dbPassword }}', KEY: '{{ hex .secrets.apiKey }}' },
        },
      },
      secrets: {
        apiKey: { type: 'symmetric', bits: 256 },
        dbPassword: { type: 'plain', userDefined: true },
        token: { type: 'plain', userDefined: true },
      },
      owners: {
        alice: { publicKey: alice.pem, roles: ['update', 'secrets:dbPassword', 'secrets:token'] },
      },
      updates: { threshold: 1 },
      policy: { allowSimulation: true },
    } as Manifest;
    const sig = await signTransition(m, 0, ZERO_HASH, 'set', install);
    assert.equal(
      (await call(r, 'PUT', '/v1/manifest', { manifest: m, signatures: [sig] })).status,
      200,
    );
    const rootDer = new Uint8Array(new x509.X509Certificate(r.rootCaPem).rawData);
    const upload = async (name: string, value: string) => {
      const v = new TextEncoder().encode(value);
      const signature = await signAsOwner(
        ownerSignedBytes(
          'secret',
          await secretDigest({ rootCaDer: rootDer, name, version: 0, value: v }),
        ),
        'alice',
        alice.keys.privateKey,
      );
      return call(r, 'PUT', `/v1/secrets/${name}`, {
        value: toBase64Url(v),
        version: 0,
        signature,
      });
    };
    assert.equal((await upload('dbPassword', dbPassword)).status, 200);

    // Prepare 200 activations (nonce, key, evidence) so they can all be in flight at once.
    const prepared = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const agent = await agentKey();
        const { nonce } = checkBody(
          ROUTES.activateChallenge.response,
          (await call(r, 'POST', '/v1/activate/challenge')).json,
        );
        return {
          agent,
          body: {
            workload: 'fleet',
            nonce,
            evidence: await simEvidence(hw, nonce, agent),
            csr: agent.csr,
            bundleKey: agent.bundleKey,
          },
        };
      }),
    );

    const acked: {
      instanceId: string;
      certificate: string;
      bundle: string;
      keys: CryptoKeyPair;
      bundlePrivate: CryptoKey;
    }[] = [];
    let tokenAcked = false;
    let killed = false;
    const kill = () => {
      if (!killed) {
        killed = true;
        r.proc.kill('SIGKILL');
      }
    };
    const inflight = [
      ...prepared.map(async (p, i) => {
        try {
          const res = await call(r, 'POST', '/v1/activate', p.body);
          if (res.status === 200) {
            const out = checkBody(ROUTES.activate.response, res.json);
            acked.push({
              instanceId: out.instanceId,
              certificate: out.certificate,
              bundle: out.bundle,
              keys: p.agent.keys,
              bundlePrivate: p.agent.bundlePrivate,
            });
            if (acked.length === 60) kill();
          } else {
            assert.fail(`activation ${i}: ${res.status} ${JSON.stringify(res.json)}`);
          }
        } catch (e) {
          if (!killed) throw e;
        }
      }),
      (async () => {
        try {
          const res = await upload('token', token);
          if (res.status === 200) tokenAcked = true;
        } catch (e) {
          if (!killed) throw e;
        }
      })(),
    ];
    await Promise.all(inflight);
    kill();
    await new Promise((res) =>
      r.proc.exitCode !== null || r.proc.signalCode !== null ? res(null) : r.proc.once('exit', res),
    );
    await r.dispatcher.close();
    assert.ok(acked.length >= 60, `only ${acked.length} acknowledged before the kill`);
    assert.ok(acked.length < 200, 'the kill landed after every activation finished');

    // Restart on the same data directory: the history verifies, state is served.
    r = await start(dataDir, simDir, ownerFile);
    const h = checkBody(
      ROUTES.history.response,
      (await call(r, 'GET', '/v1/manifest/history')).json,
    );
    assert.equal((await verifyHistory(h.entries, { manifests: h.manifests ?? {} })).length, 1);
    assert.equal((await call(r, 'GET', '/readyz')).status, 200);
    // An acknowledged activation renews (its instance exists) after the restart.
    const first = acked[0];
    assert.ok(first !== undefined);
    const agent = await agentKey();
    const { nonce } = checkBody(
      ROUTES.activateChallenge.response,
      (await call(r, 'POST', '/v1/activate/challenge')).json,
    );
    const renew = await call(r, 'POST', '/v1/activate', {
      workload: 'fleet',
      nonce,
      evidence: await simEvidence(hw, nonce, agent),
      csr: agent.csr,
      bundleKey: agent.bundleKey,
      instanceId: first.instanceId,
      instanceSignature: await renewalSignature(
        first.keys.privateKey,
        first.instanceId,
        nonce,
        agent,
      ),
    });
    assert.equal(renew.status, 200, JSON.stringify(renew.json));
    const b = await decryptBundle(first.bundle, first.bundlePrivate);
    assert.equal(b.env.DB, dbPassword);
    const apiKeyHex = b.env.KEY ?? '';
    r.proc.kill('SIGTERM');
    await new Promise((res) => r.proc.once('exit', res));
    await r.dispatcher.close();

    // Open the store directly (same sim platform, same code measurement): every row decrypts,
    // every acknowledged instance is recorded with the serial it was answered with.
    const jwk = JSON.parse(readFileSync(join(simDir, 'platform.key.jwk'), 'utf8')) as { d: string };
    const store = await Store.open(
      dataDir,
      new DerivedKeySealer(
        'sim',
        new Uint8Array(Buffer.from(jwk.d, 'base64url')),
        await coordinatorSimMeasurement(),
      ),
    );
    try {
      const instances = new Map(store.list<InstanceRecord>('instances'));
      for (const a of acked) {
        const rec = instances.get(a.instanceId);
        assert.ok(rec !== undefined, `acknowledged instance ${a.instanceId} lost`);
        const leaf = new x509.X509Certificate(
          a.certificate.split(/(?<=-----END CERTIFICATE-----)/)[0] ?? '',
        );
        if (a !== first) assert.equal(BigInt(`0x${rec.serial}`), BigInt(`0x${leaf.serialNumber}`));
      }
      for (const name of [
        'meta',
        'manifests',
        'history',
        'secrets',
        'instances',
        'nonces',
        'intermediates',
      ] as const)
        store.list(name);
      const secrets = new Map(
        store.list<{ value: { type: string; value: string } | null; version: number }>('secrets'),
      );
      assert.equal(
        Buffer.from(secrets.get('dbPassword')?.value?.value ?? '', 'base64url').toString(),
        dbPassword,
      );
      if (tokenAcked)
        assert.equal(
          Buffer.from(secrets.get('token')?.value?.value ?? '', 'base64url').toString(),
          token,
        );
    } finally {
      store.close();
    }

    // No file of the data directory holds a secret in the clear.
    const needles = [
      dbPassword,
      token,
      apiKeyHex,
      Buffer.from(apiKeyHex, 'hex').toString('latin1'),
    ].filter((s) => s.length > 0);
    assert.ok(apiKeyHex.length === 64);
    for (const f of readdirSync(dataDir)) {
      const content = readFileSync(join(dataDir, f)).toString('latin1');
      for (const n of needles)
        assert.ok(!content.includes(n), `${f} contains a secret in the clear`);
    }
  });
});
