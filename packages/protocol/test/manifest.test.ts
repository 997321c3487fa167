/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call --
   These tests mutate untyped manifest JSON on purpose, to feed validation invalid input. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import {
  listManifestProblems,
  MANIFEST_SCHEMA,
  parseManifestText,
  parseStrictJson,
  validateManifest,
} from '@cloister/protocol';
import type { ManifestProblem } from '@cloister/protocol';
import { pemKey, sampleManifest } from './fixtures.js';

const problemsOf = (m: unknown): ManifestProblem[] => {
  try {
    validateManifest(m);
  } catch (e) {
    assert.ok(isCloisterError(e) && e.code === 'MANIFEST_INVALID', String(e));
    return (e.details?.['problems'] ?? []) as ManifestProblem[];
  }
  return [];
};
const paths = (m: unknown) => problemsOf(m).map((p) => p.path);

test('the full sample manifest is valid and typed', () => {
  const m = validateManifest(sampleManifest());
  assert.equal(m.packages['dev']?.tee, 'sim');
  assert.deepEqual(listManifestProblems(sampleManifest()), []);
  assert.equal(parseManifestText(JSON.stringify(sampleManifest())).trustDomain, 'shop.example');
});

test('MANIFEST_SCHEMA is a plain, closed JSON Schema', () => {
  assert.equal(MANIFEST_SCHEMA['additionalProperties'], false);
  assert.equal(JSON.parse(JSON.stringify(MANIFEST_SCHEMA))['type'], 'object');
  const props = MANIFEST_SCHEMA['properties'] as Record<string, unknown>;
  assert.deepEqual(Object.keys(props).sort(), [
    'owners',
    'packages',
    'policy',
    'recovery',
    'secrets',
    'trustDomain',
    'updates',
    'version',
    'workloads',
  ]);
});

test('schema errors carry JSON paths, and every problem is reported at once', () => {
  const m = sampleManifest();
  m['version'] = 2;
  m['packages'].web.measurement = 'AA'.repeat(48); // uppercase hex refused: canonical form
  m['packages'].api.minSvn = -1;
  m['packages'].td.tee = 'tdx2';
  m['workloads'].frontend.debug = true; // unknown field
  m['workloads'].frontend.env['1BAD'] = 'x';
  m['workloads'].frontend.files['relative/path'] = 'x';
  m['secrets'].apiKey.bits = 100;
  m['policy'].allowSimulation = 'yes';
  m['extra'] = 1;
  const p = paths(m);
  for (const want of [
    '/version',
    '/packages/web/measurement',
    '/packages/api/minSvn',
    '/packages/td/tee',
    '/workloads/frontend/debug',
    '/workloads/frontend/env/1BAD',
    '/workloads/frontend/files/relative~1path',
    '/secrets/apiKey/bits',
    '/policy/allowSimulation',
    '/extra',
  ]) {
    assert.ok(p.includes(want), `missing ${want} in ${JSON.stringify(p)}`);
  }
});

test('cross-references: unknown package, workload, secret, roles, ports', () => {
  const m = sampleManifest();
  m['workloads'].frontend.package = 'nope';
  m['workloads'].frontend.mesh.egress.push({
    listen: '127.0.0.1:9001',
    workload: 'ghost',
    port: 1,
  });
  m['workloads'].frontend.mesh.egress.push({
    listen: '127.0.0.1:9002',
    workload: 'backend',
    port: 9999,
  });
  m['workloads'].frontend.volumes['/data'].secret = 'apiCert';
  m['owners'].alice.roles.push('secrets:apiKey', 'secrets:ghost', 'package:ghost');
  const p = paths(m);
  for (const want of [
    '/workloads/frontend/package',
    '/workloads/frontend/mesh/egress/1/workload',
    '/workloads/frontend/mesh/egress/2/port',
    '/workloads/frontend/volumes/~1data/secret',
    '/owners/alice/roles/2',
    '/owners/alice/roles/3',
    '/owners/alice/roles/4',
  ]) {
    assert.ok(p.includes(want), `missing ${want} in ${JSON.stringify(p)}`);
  }
});

test('packages must pin code; sim needs allowSimulation; secrets and thresholds are coherent', () => {
  const m = sampleManifest();
  delete m['packages'].api.minSvn; // mrsigner alone would accept any enclave of that signer
  delete m['packages'].td.mrtd;
  delete m['packages'].web.measurement; // host data alone is chosen by the host
  m['policy'].allowSimulation = false;
  m['secrets'].dbPassword.userDefined = false;
  m['secrets'].apiKey.userDefined = true;
  m['secrets'].apiKey.perInstance = true;
  m['updates'].threshold = 3;
  m['recovery'].threshold = 3;
  const p = paths(m);
  for (const want of [
    '/packages/api/mrenclave',
    '/packages/td/mrtd',
    '/packages/web/measurement',
    '/packages/dev/tee',
    '/secrets/dbPassword/userDefined',
    '/secrets/apiKey/perInstance',
    '/updates/threshold',
    '/recovery/threshold',
  ]) {
    assert.ok(p.includes(want), `missing ${want} in ${JSON.stringify(p)}`);
  }
});

test('owner and recovery keys: supported types only, no key listed twice', () => {
  const m = sampleManifest();
  m['owners'].carol.publicKey = m['owners'].alice.publicKey; // one person, two votes
  m['owners'].dave = { publicKey: pemKey('RSA'), roles: [] };
  m['owners'].erin = { publicKey: pemKey('P-521'), roles: [] };
  m['owners'].frank = {
    publicKey: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----',
    roles: [],
  };
  m['recovery'].keys.carol = pemKey('Ed25519');
  const p = paths(m);
  for (const want of [
    '/owners/carol/publicKey',
    '/owners/dave/publicKey',
    '/owners/erin/publicKey',
    '/owners/frank/publicKey',
    '/recovery/keys/carol',
  ]) {
    assert.ok(p.includes(want), `missing ${want} in ${JSON.stringify(p)}`);
  }
});

test('templates are dry-run with the path of the field that holds them', () => {
  const m = sampleManifest();
  m['workloads'].frontend.files['/a'] = '{{ hex .secrets.ghost }}';
  m['workloads'].frontend.files['/b'] = '{{ pem .secrets.apiKey }}';
  m['workloads'].frontend.files['/c'] = '{{ hex .secrets.apiCert }}';
  m['workloads'].frontend.files['/d'] = '{{ upper .secrets.apiKey }}';
  m['workloads'].frontend.files['/e'] = '{{ if .secrets.apiKey }}';
  m['workloads'].frontend.env['RAW'] = '{{ raw .secrets.apiKey }}';
  m['workloads'].frontend.args.push('{{ string .secrets.apiCert.private }}');
  m['workloads'].backend.files['/f'] = 'unclosed {{ hex .secrets.apiKey';
  const probs = problemsOf(m);
  const byPath = new Map(probs.map((p) => [p.path, p.code]));
  assert.equal(byPath.get('/workloads/frontend/files/~1a'), 'TEMPLATE_INVALID_VALUE');
  assert.equal(byPath.get('/workloads/frontend/files/~1b'), 'TEMPLATE_INVALID_VALUE');
  assert.equal(byPath.get('/workloads/frontend/files/~1c'), 'TEMPLATE_INVALID_VALUE');
  assert.equal(byPath.get('/workloads/frontend/files/~1d'), 'TEMPLATE_SYNTAX');
  assert.equal(byPath.get('/workloads/frontend/files/~1e'), 'TEMPLATE_SYNTAX');
  assert.equal(byPath.get('/workloads/frontend/env/RAW'), 'TEMPLATE_INVALID_VALUE');
  assert.equal(byPath.get('/workloads/frontend/args/4'), 'TEMPLATE_INVALID_VALUE');
  assert.equal(byPath.get('/workloads/backend/files/~1f'), 'TEMPLATE_SYNTAX');
});

test('names that would reach the prototype are not packages', () => {
  const m = sampleManifest();
  m['workloads'].frontend.package = 'constructor';
  assert.ok(paths(m).includes('/workloads/frontend/package'));
  m['workloads'].frontend.package = 'toString';
  assert.ok(paths(m).includes('/workloads/frontend/package'));
});

test('strict JSON text: duplicate keys, forbidden names, depth, size, syntax', () => {
  const code = (f: () => unknown) =>
    assert.throws(f, (e: unknown) => isCloisterError(e) && e.code === 'MANIFEST_JSON_INVALID');
  code(() => parseStrictJson('{"a":1,"a":2}'));
  code(() => parseStrictJson('{"a":{"b":[{"c":1,"c":1}]}}'));
  code(() => parseStrictJson('{"\\u0061":1,"a":2}')); // same name after unescaping
  code(() => parseStrictJson('{"__proto__":{}}'));
  code(() => parseStrictJson('['.repeat(40) + ']'.repeat(40)));
  code(() => parseStrictJson('{"a":1', {}));
  code(() => parseStrictJson('x'.repeat(100), { maxLength: 10 }));
  code(() => parseManifestText('{"version":1,"version":1}'));
  try {
    parseStrictJson('{"a":[1,{"b":1,"b":2}]}');
  } catch (e) {
    assert.ok(isCloisterError(e));
    assert.equal(e.details?.['path'], '/a/1/b');
  }
  assert.deepEqual(parseStrictJson('{"a":"x\\"y","b":["\\\\",{"a":1}]}'), {
    a: 'x"y',
    b: ['\\', { a: 1 }],
  });
  assert.throws(
    () => parseManifestText('{"version":1}'),
    (e: unknown) => isCloisterError(e) && e.code === 'MANIFEST_INVALID',
  );
});

test('property: random JSON never crashes validation (only typed errors)', () => {
  const base = sampleManifest();
  fc.assert(
    fc.property(
      fc.oneof(
        fc.jsonValue({ maxDepth: 6 }),
        // Mutate one section of a valid manifest to reach the deeper checks.
        fc
          .tuple(
            fc.constantFrom(
              'packages',
              'workloads',
              'secrets',
              'owners',
              'recovery',
              'updates',
              'policy',
            ),
            fc.jsonValue({ maxDepth: 5 }),
          )
          .map(([k, v]) => ({ ...structuredClone(base), [k]: v })),
        fc
          .tuple(fc.constantFrom('frontend', 'backend'), fc.jsonValue({ maxDepth: 4 }))
          .map(([w, v]) => {
            const m = structuredClone(base);
            m['workloads'][w] = v;
            return m;
          }),
      ),
      (v) => {
        try {
          validateManifest(v);
          return true;
        } catch (e) {
          return isCloisterError(e) && e.code === 'MANIFEST_INVALID';
        }
      },
    ),
    { numRuns: 400, seed: 7 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (s) => {
      try {
        parseManifestText(s);
        return true;
      } catch (e) {
        return (
          isCloisterError(e) &&
          (e.code === 'MANIFEST_JSON_INVALID' || e.code === 'MANIFEST_INVALID')
        );
      }
    }),
    { numRuns: 300, seed: 8 },
  );
});
