// `cloister verify`, `manifest`, `secret`, `status` end to end over real sockets against an
// in-process coordinator on the simulation TEE.
import { strict as assert } from 'node:assert';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { importSimHardware, simReportFrom } from '@cloister/evidence';
import { DerivedKeySealer } from '@cloister/coordinator';
import { generateOwnerKey } from '../src/client/local.js';
import { cli, makeSim, simManifest, startDeployment, tempDir } from './helpers.js';
import type { CliRun, Deployment } from './helpers.js';

describe('cloister verify and the owner commands', () => {
  let d: Deployment;
  let manifestFile: string;
  before(async () => {
    d = await startDeployment();
    manifestFile = join(d.dir, 'manifest.json');
    await writeFile(manifestFile, JSON.stringify(simManifest(d.ownerPub), null, 2));
  });
  after(async () => d.close());

  const base = (): string[] => ['verify', '--coordinator', d.coord.url, '--sim-root', d.sim];

  it('refuses a simulation coordinator without --allow-simulation (exit 10)', async () => {
    const r = await cli([...base(), '--json']);
    assert.equal(r.code, 10);
    const j = r.json();
    assert.equal(j['verdict'], 'rejected');
    assert.equal((j['reason'] as { code: string }).code, 'VERIFY_SIMULATION_REFUSED');
    assert.equal((j['reason'] as { layer: string }).layer, 'POLICY');
  });

  it('refuses simulation evidence when no sim root is pinned', async () => {
    const r = await cli(['verify', '--coordinator', d.coord.url, '--allow-simulation', '--json']);
    assert.equal(r.code, 10);
    assert.equal((r.json()['reason'] as { code: string }).code, 'VERIFY_SIMULATION_REFUSED');
  });

  it('verifies a fresh coordinator and saves its root CA', async () => {
    const root = join(d.dir, 'root.pem');
    const r = await cli([...base(), '--allow-simulation', '--save-root', root, '--json']);
    assert.equal(r.code, 0, r.err + r.out);
    const j = r.json();
    assert.equal(j['verdict'], 'verified');
    assert.equal(j['historyLength'], 0);
    assert.equal(j['manifestHash'], null);
    assert.equal(
      await readFile(root, 'utf8'),
      d.coord.rootCaPem.endsWith('\n') ? d.coord.rootCaPem : `${d.coord.rootCaPem}\n`,
    );
  });

  it('refuses --manifest before any manifest is set', async () => {
    const r = await cli([...base(), '--allow-simulation', '--manifest', manifestFile, '--json']);
    assert.equal(r.code, 10);
    assert.equal((r.json()['reason'] as { code: string }).code, 'VERIFY_NO_MANIFEST');
  });

  it('manifest set needs a pinned root CA', async () => {
    const r = await cli([
      'manifest',
      'set',
      manifestFile,
      '--key',
      d.ownerKey,
      '--coordinator',
      d.coord.url,
      '--json',
    ]);
    assert.equal(r.code, 2);
    assert.equal((r.json()['error'] as { code: string }).code, 'CLI_USAGE');
  });

  it('sets the manifest, uploads a secret, and shows status and history', async () => {
    const ep = ['--coordinator', d.coord.url, '--root-ca', join(d.dir, 'root.pem'), '--json'];
    const set = await cli(['manifest', 'set', manifestFile, '--key', d.ownerKey, ...ep]);
    assert.equal(set.code, 0, set.err + set.out);
    assert.equal(set.json()['kind'], 'set');
    const sec = await cli([
      'secret',
      'set',
      'greeting',
      '--value',
      'hello',
      '--key',
      d.ownerKey,
      ...ep,
    ]);
    assert.equal(sec.code, 0, sec.err + sec.out);
    assert.equal(sec.json()['name'], 'greeting');
    assert.equal(sec.out.includes('hello'), false);
    const again = await cli([
      'secret',
      'set',
      'greeting',
      '--value',
      'hello again',
      '--key',
      d.ownerKey,
      ...ep,
    ]);
    assert.equal(again.code, 0, again.err + again.out);
    assert.equal(again.json()['version'], (sec.json()['version'] as number) + 1);
    const st = await cli(['status', ...ep]);
    assert.equal(st.code, 0, st.err);
    assert.equal(st.json()['manifestHash'], set.json()['manifestHash']);
    const h = await cli(['manifest', 'history', '--verify', ...ep]);
    assert.equal(h.code, 0, h.err);
    assert.equal((h.json()['verified'] as { length: number }).length, 1);
    const g = await cli(['manifest', 'get', ...ep]);
    assert.equal(g.code, 0, g.err);
    assert.equal(g.json()['manifestHash'], set.json()['manifestHash']);
  });

  it('an unknown secret is refused with the coordinator code', async () => {
    const ep = ['--coordinator', d.coord.url, '--root-ca', join(d.dir, 'root.pem'), '--json'];
    const r = await cli(['secret', 'set', 'nope', '--value', 'x', '--key', d.ownerKey, ...ep]);
    assert.notEqual(r.code, 0);
    assert.match((r.json()['error'] as { code: string }).code, /^COORDINATOR_/);
  });

  it('verifies the manifest by canonical hash (whitespace and key order do not matter)', async () => {
    const m = simManifest(d.ownerPub);
    const reordered = Object.fromEntries(Object.entries(m).reverse());
    const f = join(d.dir, 'reordered.json');
    await writeFile(f, JSON.stringify(reordered));
    const r = await cli([...base(), '--allow-simulation', '--manifest', f, '--json']);
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(r.json()['historyLength'], 1);
  });

  it('rejects a different manifest (exit 10, structured reason)', async () => {
    const other = simManifest(d.ownerPub, 'cd'.repeat(48));
    const f = join(d.dir, 'other.json');
    await writeFile(f, JSON.stringify(other));
    const r = await cli([...base(), '--allow-simulation', '--manifest', f, '--json']);
    assert.equal(r.code, 10);
    const reason = r.json()['reason'] as {
      code: string;
      details: { rule: string; expected: string; actual: string };
    };
    assert.equal(reason.code, 'VERIFY_MANIFEST_MISMATCH');
    assert.equal(reason.details.rule, 'manifestHash');
    assert.notEqual(reason.details.expected, reason.details.actual);
  });

  it('a signed update extends the history; verify follows the new manifest', async () => {
    const ep = ['--coordinator', d.coord.url, '--root-ca', join(d.dir, 'root.pem'), '--json'];
    const next = simManifest(d.ownerPub, 'ef'.repeat(48));
    const f = join(d.dir, 'next.json');
    await writeFile(f, JSON.stringify(next));
    const u = await cli(['manifest', 'set', f, '--key', d.ownerKey, ...ep]);
    assert.equal(u.code, 0, u.err + u.out);
    assert.equal(u.json()['kind'], 'update');
    assert.equal(u.json()['owner'], 'alice');
    const h = await cli(['manifest', 'history', '--verify', ...ep]);
    assert.equal((h.json()['verified'] as { length: number }).length, 2);
    const ok = await cli([...base(), '--allow-simulation', '--manifest', f, '--json']);
    assert.equal(ok.code, 0, ok.out);
    assert.equal(ok.json()['historyLength'], 2);
    const old = await cli([...base(), '--allow-simulation', '--manifest', manifestFile, '--json']);
    assert.equal(old.code, 10);
    assert.equal((old.json()['reason'] as { code: string }).code, 'VERIFY_MANIFEST_MISMATCH');
  });

  it('--history-file records the history and refuses a rolled-back or forked one', async () => {
    const file = join(d.dir, 'history.json');
    const verify = (): Promise<CliRun> =>
      cli([...base(), '--allow-simulation', '--history-file', file, '--json']);
    // First use: nothing recorded yet, the attested history is recorded.
    const first = await verify();
    assert.equal(first.code, 0, first.out);
    const seen = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    assert.equal(seen['historyLength'], first.json()['historyLength']);
    assert.equal(seen['historyHead'], first.json()['historyHead']);
    assert.equal((await verify()).code, 0);
    // A client that saw a longer history: the coordinator's state was rolled back.
    const longer = JSON.stringify({
      historyLength: (seen['historyLength'] as number) + 1,
      historyHead: 'ab'.repeat(32),
    });
    await writeFile(file, longer);
    const rolledBack = await verify();
    assert.equal(rolledBack.code, 10, rolledBack.out);
    const reason = rolledBack.json()['reason'] as { code: string; details: { rule: string } };
    assert.equal(reason.code, 'VERIFY_HISTORY_ROLLBACK');
    assert.equal(reason.details.rule, 'history.rollback');
    assert.equal(await readFile(file, 'utf8'), longer, 'a refused verification records nothing');
    // The same length with another head: a forked (replaced) history.
    await writeFile(file, JSON.stringify({ ...seen, historyHead: 'cd'.repeat(32) }));
    const forked = await verify();
    assert.equal(forked.code, 10);
    assert.equal(
      (forked.json()['reason'] as { details: { rule: string } }).details.rule,
      'history.fork',
    );
    // A prefix of the real history (the first transition) is extended, and the file moves on.
    const h = await cli([
      'manifest',
      'history',
      '--coordinator',
      d.coord.url,
      '--root-ca',
      join(d.dir, 'root.pem'),
      '--json',
    ]);
    const entries = h.json()['entries'] as { prevHash: string }[];
    assert.ok(entries.length >= 2);
    await writeFile(
      file,
      JSON.stringify({
        historyLength: 1,
        historyHead: (entries[1] as { prevHash: string }).prevHash,
      }),
    );
    assert.equal((await verify()).code, 0);
    assert.equal(
      (JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>)['historyLength'],
      entries.length,
    );
    // A file that is not a history record is a usage problem, not a verdict.
    await writeFile(file, '{"historyLength":-1}');
    assert.equal((await verify()).code, 30);
  });

  it('--owner-key: the attested history must start with a manifest that key signed', async () => {
    const ours = join(d.dir, 'install-owner.pub.pem');
    await writeFile(ours, d.ownerPub);
    const ok = await cli([...base(), '--allow-simulation', '--owner-key', ours, '--json']);
    assert.equal(ok.code, 0, ok.out);
    assert.equal(ok.json()['ownerKeyChecked'], true);
    // Another key (a coordinator someone else installed would have been set by theirs).
    await generateOwnerKey('installer', d.dir);
    const r = await cli([
      ...base(),
      '--allow-simulation',
      '--owner-key',
      join(d.dir, 'installer.pub.pem'),
      '--json',
    ]);
    assert.equal(r.code, 10, r.out);
    const reason = r.json()['reason'] as { code: string; details: { rule: string } };
    assert.equal(reason.code, 'VERIFY_OWNER_MISMATCH');
    assert.equal(reason.details.rule, 'history.owner');
    // A file that is not an owner key is bad input, not a verdict.
    const notKey = join(d.dir, 'not-a-key.pem');
    await writeFile(notKey, 'hello');
    const bad = await cli([...base(), '--allow-simulation', '--owner-key', notKey, '--json']);
    assert.notEqual(bad.code, 0);
    assert.notEqual(bad.code, 10);
  });

  it('an update signed by a key that is not an owner is refused', async () => {
    const ep = ['--coordinator', d.coord.url, '--root-ca', join(d.dir, 'root.pem'), '--json'];
    const mallory = await generateOwnerKey('mallory', d.dir);
    const f = join(d.dir, 'evil.json');
    await writeFile(f, JSON.stringify(simManifest(mallory.publicKeyPem, '99'.repeat(48))));
    const r = await cli(['manifest', 'set', f, '--key', mallory.privateKeyPath, ...ep]);
    assert.equal(r.code, 10, r.out);
    assert.equal((r.json()['error'] as { code: string }).code, 'COORDINATOR_SIGNATURE_INVALID');
  });

  it('a pinned command refuses a coordinator that is not under the saved root', async () => {
    const other = await startDeployment();
    try {
      const r = await cli([
        'status',
        '--coordinator',
        other.coord.url,
        '--root-ca',
        join(d.dir, 'root.pem'),
        '--json',
      ]);
      assert.equal(r.code, 10);
      assert.equal((r.json()['error'] as { code: string }).code, 'CLIENT_COORDINATOR_UNTRUSTED');
    } finally {
      await other.close();
    }
  });
});

describe('cloister verify against a coordinator with another measurement', () => {
  it('rejects it with VERIFY_MEASUREMENT_MISMATCH (exit 10)', async () => {
    // Same sim hardware, but the coordinator reports a measurement that is not this release's.
    const t = await tempDir();
    const sim = await makeSim(t.dir);
    const read = (f: string) => readFile(join(sim, f), 'utf8');
    const hw = await importSimHardware({
      'root.crt.pem': await read('root.crt.pem'),
      'platform.crt.pem': await read('platform.crt.pem'),
      'platform.key.jwk': await read('platform.key.jwk'),
    });
    const d = await startDeployment({
      simulation: { rootDir: sim },
      tee: {
        sealer: new DerivedKeySealer('sim', new Uint8Array(32).fill(7), new Uint8Array(48)),
        attester: {
          type: 'sim',
          evidence: async (reportData: Uint8Array) => ({
            type: 'sim',
            data: await simReportFrom(hw, {
              measurement: new Uint8Array(48).fill(0x42),
              reportData,
            }),
          }),
        },
      },
    });
    try {
      const r = await cli([
        'verify',
        '--coordinator',
        d.coord.url,
        '--allow-simulation',
        '--sim-root',
        sim,
        '--json',
      ]);
      assert.equal(r.code, 10, r.err + r.out);
      const reason = r.json()['reason'] as {
        code: string;
        layer: string;
        details: { rule: string; actual: string };
      };
      assert.equal(reason.code, 'VERIFY_MEASUREMENT_MISMATCH');
      assert.equal(reason.layer, 'POLICY');
      assert.equal(reason.details.rule, 'measurement');
      assert.equal(reason.details.actual, '42'.repeat(48));
    } finally {
      await d.close();
      await t.cleanup();
    }
  });
});
