// Inputs of the client side: the run-file of `cloister up`, problem+json answers from a (possibly
// hostile) coordinator, owner keys. Malformed input gets a typed error, never a crash.
import { strict as assert } from 'node:assert';
import { generateKeyPairSync } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CloisterError, VerificationError, isCloisterError } from '@cloister/errors';
import { simMeasurement, toHex } from '@cloister/evidence';
import type { Manifest } from '@cloister/protocol';
import { errorFromProblem } from '../src/client/http.js';
import { loadOwnerKey } from '../src/client/local.js';
import { parseRunFile } from '../src/up/runfile.js';
import { cli, tempDir } from './helpers.js';

const manifest = {
  version: 1,
  trustDomain: 'x.test',
  packages: { p: { tee: 'sim', measurement: 'ab'.repeat(48) } },
  workloads: { web: { package: 'p', maxInstances: 2 }, job: { package: 'p' } },
} as unknown as Manifest;

describe('workloads.json', () => {
  it('accepts a valid run-file with defaults', () => {
    const r = parseRunFile(
      JSON.stringify({
        workloads: {
          web: { command: ['python3', '-m', 'http.server'] },
          job: { command: ['true'], oneShot: true, instances: 3 },
        },
      }),
      manifest,
    );
    assert.deepEqual(r.workloads['web'], {
      command: ['python3', '-m', 'http.server'],
      instances: 1,
      oneShot: false,
    });
    assert.equal(r.workloads['job']?.instances, 3);
  });

  const bad: [string, unknown, string][] = [
    ['not an object', [], ''],
    ['unknown top-level key', { workloads: { web: { command: ['x'] } }, extra: 1 }, '/extra'],
    ['no workloads', { workloads: {} }, '/workloads'],
    ['unknown workload', { workloads: { nope: { command: ['x'] } } }, '/workloads/nope'],
    ['empty command', { workloads: { web: { command: [] } } }, '/workloads/web/command'],
    [
      'non-string argument',
      { workloads: { web: { command: ['x', 1] } } },
      '/workloads/web/command',
    ],
    [
      'zero instances',
      { workloads: { web: { command: ['x'], instances: 0 } } },
      '/workloads/web/instances',
    ],
    [
      'more than maxInstances',
      { workloads: { web: { command: ['x'], instances: 3 } } },
      '/workloads/web/instances',
    ],
    [
      'oneShot not boolean',
      { workloads: { web: { command: ['x'], oneShot: 'yes' } } },
      '/workloads/web/oneShot',
    ],
    [
      'unknown workload key',
      { workloads: { web: { command: ['x'], cwd: '/' } } },
      '/workloads/web/cwd',
    ],
  ];
  for (const [name, value, path] of bad) {
    it(`refuses ${name} with the JSON path`, () => {
      assert.throws(
        () => parseRunFile(JSON.stringify(value), manifest),
        (e: unknown) => {
          assert.ok(isCloisterError(e));
          assert.equal(e.code, 'UP_RUNFILE_INVALID');
          assert.equal((e.details as { problems: { path: string }[] }).problems[0]?.path, path);
          return true;
        },
      );
    });
  }

  it('refuses duplicate keys and non-JSON', () => {
    for (const text of [
      '{"workloads":{"web":{"command":["a"]},"web":{"command":["b"]}}}',
      '{',
      '',
    ]) {
      assert.throws(
        () => parseRunFile(text, manifest),
        (e: unknown) => isCloisterError(e) && e.code === 'UP_RUNFILE_INVALID',
      );
    }
  });

  it('property: any input parses or throws UP_RUNFILE_INVALID', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ workloads: { web: v } })),
        ),
        (text) => {
          try {
            parseRunFile(text, manifest);
          } catch (e) {
            assert.ok(isCloisterError(e) && e.code === 'UP_RUNFILE_INVALID', String(e));
          }
        },
      ),
      { numRuns: 500, seed: 42 },
    );
  });
});

describe('problem+json answers', () => {
  it('keep the server code, kind from the status, and a valid layer', () => {
    const e = errorFromProblem(
      403,
      {
        code: 'COORDINATOR_APPRAISAL_FAILED',
        detail: 'no',
        layer: 'POLICY',
        details: { rule: 'measurement' },
      },
      'POST /v1/activate',
    );
    assert.ok(e instanceof VerificationError);
    assert.equal(e.code, 'COORDINATOR_APPRAISAL_FAILED');
    assert.equal(e.kind, 'rejected');
    assert.equal(e.layer, 'POLICY');
    assert.equal((e.details as { rule: string; status: number }).rule, 'measurement');
    const n = errorFromProblem(404, { code: 'COORDINATOR_NOT_FOUND' }, 'GET /x');
    assert.equal(n.kind, 'not-found');
    assert.equal(n instanceof VerificationError, false);
  });

  it('without a usable code become CLIENT_REMOTE_ERROR; a bogus layer is dropped', () => {
    assert.equal(errorFromProblem(500, 'oops', 'GET /').code, 'CLIENT_REMOTE_ERROR');
    assert.equal(
      errorFromProblem(400, { code: 'lower case' }, 'GET /').code,
      'CLIENT_REMOTE_ERROR',
    );
    const e = errorFromProblem(403, { code: 'X_Y', layer: 'MADE_UP' }, 'GET /');
    assert.equal(e instanceof VerificationError, false);
  });

  it('property: any body and status map to a CloisterError', () => {
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 599 }), fc.jsonValue(), (status, body) => {
        assert.ok(errorFromProblem(status, body, 'GET /') instanceof CloisterError);
      }),
      { numRuns: 500, seed: 7 },
    );
  });
});

describe('owner keys', () => {
  it('keygen writes a 0600 private key and refuses to overwrite it', async () => {
    const t = await tempDir();
    try {
      const r = await cli(['keygen', 'alice', '--out', t.dir, '--json']);
      assert.equal(r.code, 0, r.err);
      assert.equal((await stat(join(t.dir, 'alice.pem'))).mode & 0o777, 0o600);
      const k = await loadOwnerKey(join(t.dir, 'alice.pem'));
      assert.match(k.publicKeyPem, /BEGIN PUBLIC KEY/);
      const again = await cli(['keygen', 'alice', '--out', t.dir, '--json']);
      assert.equal(again.code, 2);
      const bad = await cli(['keygen', '../evil', '--out', t.dir, '--json']);
      assert.equal((bad.json()['error'] as { code: string }).code, 'CLI_USAGE');
    } finally {
      await t.cleanup();
    }
  });

  it('refuses RSA keys and non-keys as owner keys', async () => {
    const t = await tempDir();
    try {
      const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
      await writeFile(join(t.dir, 'rsa.pem'), rsa);
      await writeFile(join(t.dir, 'junk.pem'), 'not a key');
      for (const f of ['rsa.pem', 'junk.pem']) {
        await assert.rejects(
          loadOwnerKey(join(t.dir, f)),
          (e: unknown) => isCloisterError(e) && e.code === 'CLI_BAD_INPUT',
        );
      }
      await assert.rejects(
        loadOwnerKey(join(t.dir, 'missing.pem')),
        (e: unknown) => isCloisterError(e) && e.code === 'CLI_FILE_NOT_FOUND',
      );
    } finally {
      await t.cleanup();
    }
  });
});

describe('sim measure', () => {
  it('prints the measurement of the resolved executable and its arguments', async () => {
    const r = await cli(['sim', 'measure', '--json', '--', 'sh', '-c', 'exit 0']);
    assert.equal(r.code, 0, r.err);
    const j = r.json() as { measurement: string; executable: string; args: string[] };
    assert.deepEqual(j.args, ['-c', 'exit 0']);
    const bytes = new Uint8Array(await readFile(j.executable));
    assert.equal(j.measurement, toHex(await simMeasurement(bytes, ['-c', 'exit 0'])));
  });

  it('refuses a program that is not there', async () => {
    const r = await cli(['sim', 'measure', '--json', '--', '/nonexistent/app']);
    assert.notEqual(r.code, 0);
    assert.equal((r.json().error as { code: string }).code, 'CLI_FILE_NOT_FOUND');
  });
});
