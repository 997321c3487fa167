/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   These tests mutate untyped manifest JSON on purpose, to feed validation invalid input. */
// Adversarial edge cases of the manifest, its canonical form and its templates.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  canonicalJson,
  listManifestProblems,
  MANIFEST_SCHEMA,
  renderTemplate,
  renderTemplateText,
  renderWorkload,
  validateManifest,
} from '@cloister/protocol';
import type { TemplateContext } from '@cloister/protocol';
import { sampleManifest } from './fixtures.js';

const pathsOf = (m: unknown): string[] => listManifestProblems(m).map((p) => p.path);
const code = (c: string) => (e: unknown) => isCloisterError(e) && e.code === c;

test('file and volume paths with "." or ".." segments are refused when the manifest is set', () => {
  for (const path of ['/run/../etc/cron.d/x', '/run/./x', '/..', '/a/.']) {
    const m = sampleManifest();
    m['workloads'].frontend.files[path] = 'x';
    const want = `/workloads/frontend/files/${path.replace(/\//g, '~1')}`;
    assert.ok(pathsOf(m).includes(want), `missing ${want} in ${JSON.stringify(pathsOf(m))}`);
  }
  const m = sampleManifest();
  m['workloads'].frontend.volumes['/data/../..'] = { secret: 'dataKey' };
  assert.ok(pathsOf(m).includes('/workloads/frontend/volumes/~1data~1..~1..'));
  // Names that merely contain dots are ordinary file names.
  const ok = sampleManifest();
  Object.assign(ok['workloads'].frontend.files as object, {
    '/etc/.hidden': 'x',
    '/etc/..data': 'x',
    '/etc/...': 'x',
    '/etc/a..b/c.': 'x',
  });
  assert.deepEqual(listManifestProblems(ok), []);
  // The published schema says the same (any JSON Schema engine, `u` flag or not).
  const pattern = JSON.stringify(MANIFEST_SCHEMA).includes('\\\\.\\\\.[^/\\\\u0000]+');
  assert.ok(pattern, 'the published file path pattern refuses dot segments');
});

test('literal base64url file content is decoded when the manifest is set, not at activation', () => {
  for (const data of ['a', 'AB', 'AA==', 'A+/B', 'AA AA']) {
    const m = sampleManifest();
    m['workloads'].frontend.files['/bin.dat'] = { data, encoding: 'base64url' };
    assert.ok(
      pathsOf(m).includes('/workloads/frontend/files/~1bin.dat/data'),
      `${JSON.stringify(data)}: ${JSON.stringify(pathsOf(m))}`,
    );
  }
  const m = sampleManifest();
  m['workloads'].frontend.files['/bin.dat'] = { data: 'AAEC_w', encoding: 'base64url' };
  assert.deepEqual(listManifestProblems(m), []);
});

test('cert-ecdsa ipAddresses must be IP addresses (the certificate is made at set time)', () => {
  const bad = [
    '1.2.3',
    '999.1.1.1',
    '01.2.3.4',
    '1.2.3.4.5',
    '::::',
    'ffff',
    'a:b',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    // The mixed form: the certificate library would encode "192.0.2.1" as the group 0x0192.
    '::ffff:192.0.2.1',
  ];
  const m = sampleManifest();
  m['secrets'].apiCert.ipAddresses = bad;
  const p = pathsOf(m);
  bad.forEach((_, i) => {
    const want = `/secrets/apiCert/ipAddresses/${i}`;
    assert.ok(p.includes(want), `missing ${want} (${bad[i]}) in ${JSON.stringify(p)}`);
  });
  const good = sampleManifest();
  good['secrets'].apiCert.ipAddresses = [
    '10.0.0.1',
    '255.255.255.255',
    '::',
    '::1',
    'fe80::1',
    '2001:db8:0:0:0:0:0:1',
    '1:2:3:4:5:6:7::',
    '::ffff:c000:201',
  ];
  assert.deepEqual(listManifestProblems(good), []);
});

test('canonicalJson refuses sparse arrays instead of dropping their holes', () => {
  // eslint-disable-next-line no-sparse-arrays
  const holes: unknown[][] = [[1, , 2], [, 1], new Array(2)];
  for (const v of holes) {
    assert.throws(() => canonicalJson({ a: v }), code('MANIFEST_INVALID'), String(v.length));
  }
  assert.equal(canonicalJson([1, null, 2]), '[1,null,2]');
});

const big: TemplateContext = {
  secrets: { blob: { type: 'bytes', value: new Uint8Array(1_048_576) } },
  mesh: {},
  workload: { name: 'w' },
  instance: { id: 'i' },
};

test('rendered output is bounded: a template cannot multiply a secret into gigabytes', () => {
  // 1000 actions of hex over a 1 MiB value would be 2 GB.
  const t = '{{ hex .secrets.blob }}'.repeat(1000);
  assert.throws(() => renderTemplate(t, big, 'file'), code('TEMPLATE_INVALID_VALUE'));
  // An environment variable or argument longer than one exec string can never be passed on.
  assert.throws(
    () => renderTemplateText('{{ hex .secrets.blob }}', big, 'env'),
    code('TEMPLATE_INVALID_VALUE'),
  );
  assert.throws(
    () => renderTemplateText('{{ base64 .secrets.blob }}', big, 'arg'),
    code('TEMPLATE_INVALID_VALUE'),
  );
  assert.equal(renderTemplate('{{ hex .secrets.blob }}', big, 'file').length, 2_097_152);
});

test('rendered output is bounded per workload, across many templates', () => {
  const m = sampleManifest();
  m['secrets'] = { blob: { type: 'plain', userDefined: true } };
  m['owners'].alice.roles = ['update'];
  const files: Record<string, string> = {};
  for (let i = 0; i < 40; i++) files[`/f${i}`] = '{{ hex .secrets.blob }}';
  m['workloads'] = { w: { package: 'web', files } };
  const manifest = validateManifest(m);
  assert.throws(
    () => renderWorkload(manifest, 'w', big),
    (e: unknown) =>
      isCloisterError(e) &&
      e.code === 'TEMPLATE_INVALID_VALUE' &&
      typeof e.details?.['field'] === 'string',
  );
});
