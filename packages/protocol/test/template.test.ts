import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  parseTemplate,
  renderTemplate,
  renderTemplateText,
  renderWorkload,
  validateManifest,
  workloadTemplatePaths,
} from '@cloister/protocol';
import type { TemplateContext } from '@cloister/protocol';
import { sampleManifest } from './fixtures.js';

const der = (s: string) => new TextEncoder().encode(s);
const ctx: TemplateContext = {
  secrets: {
    apiKey: { type: 'bytes', value: Uint8Array.of(0xde, 0xad, 0xbe, 0xef) },
    dataKey: { type: 'bytes', value: Uint8Array.of(0, 1, 2, 255) },
    dbPassword: { type: 'bytes', value: der('s3cret') },
    apiCert: {
      type: 'key-cert',
      certificate: der('CERT'),
      privateKey: der('PRIV'),
      publicKey: der('PUB'),
    },
  },
  mesh: { cert: der('LEAF'), key: der('KEY'), rootCa: der('ROOT'), intermediateCa: der('INT') },
  workload: { name: 'frontend' },
  instance: { id: 'i-1' },
};
const code = (c: string) => (e: unknown) => isCloisterError(e) && e.code === c;
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test('parse: text and actions, whitespace inside braces, offsets', () => {
  const t = parseTemplate('a={{hex .secrets.apiKey}} b={{  pem   .mesh.cert  }}}}');
  assert.deepEqual(
    t.parts.map((p) =>
      p.type === 'text' ? p.text : `${p.encoder}:${p.path.join('.')}@${p.offset}`,
    ),
    ['a=', 'hex:secrets.apiKey@2', ' b=', 'pem:mesh.cert@28', '}}'],
  );
  assert.deepEqual(parseTemplate('').parts, []);
});

test('parse: logic, pipes, calls, bad paths and unclosed actions are syntax errors', () => {
  for (const s of [
    '{{ hex .secrets.a',
    '{{ .secrets.a }}',
    '{{ hex }}',
    '{{ hex secrets.a }}',
    '{{ hex .secrets..a }}',
    '{{ hex .secrets.a | upper }}',
    '{{ if .secrets.a }}',
    '{{ printf "%s" .secrets.a }}',
    '{{ hex .secrets.a\n}}',
    '{{ hex $x }}',
    '{{}}',
  ]) {
    assert.throws(() => parseTemplate(s), code('TEMPLATE_SYNTAX'), s);
  }
});

test('render: every encoder over every value kind it applies to', () => {
  const r = (s: string) => text(renderTemplate(s, ctx));
  assert.equal(r('{{ hex .secrets.apiKey }}'), 'deadbeef');
  assert.equal(r('{{ base64 .secrets.apiKey }}'), '3q2+7w==');
  assert.deepEqual(renderTemplate('{{ raw .secrets.dataKey }}', ctx), Uint8Array.of(0, 1, 2, 255));
  assert.equal(r('pw={{ string .secrets.dbPassword }}'), 'pw=s3cret');
  assert.equal(
    r('{{ pem .secrets.apiCert.cert }}'),
    '-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n',
  );
  assert.equal(
    r('{{ pem .secrets.apiCert.private }}'),
    '-----BEGIN PRIVATE KEY-----\nUFJJVg==\n-----END PRIVATE KEY-----\n',
  );
  assert.equal(
    r('{{ pem .secrets.apiCert.public }}'),
    '-----BEGIN PUBLIC KEY-----\nUFVC\n-----END PUBLIC KEY-----\n',
  );
  assert.equal(r('{{ hex .secrets.apiCert.cert }}'), '43455254');
  assert.equal(
    r('{{ pem .mesh.chain }}'),
    '-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nSU5U\n-----END CERTIFICATE-----\n',
  );
  assert.equal(
    r('{{ pem .mesh.key }}'),
    '-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n',
  );
  assert.equal(r('{{ string .workload.name }}/{{ hex .instance.id }}'), 'frontend/692d31');
});

test('render: encoders that do not fit the value or the place are refused', () => {
  const bad = (s: string, c = 'TEMPLATE_INVALID_VALUE', target: 'file' | 'env' = 'file') =>
    assert.throws(() => renderTemplate(s, ctx, target), code(c), s);
  bad('{{ pem .secrets.apiKey }}');
  bad('{{ string .secrets.apiCert.cert }}');
  bad('{{ hex .secrets.apiCert }}');
  bad('{{ hex .secrets.apiKey.cert }}');
  bad('{{ hex .mesh.chain }}');
  bad('{{ raw .secrets.apiKey }}', 'TEMPLATE_INVALID_VALUE', 'env');
  bad('{{ hex .secrets.ghost }}');
  bad('{{ hex .secrets.constructor }}');
  bad('{{ hex .mesh.other }}');
  bad('{{ hex .workload.id }}');
  bad('{{ hex .other.thing }}');
  bad('{{ hex .secrets.apiKey.x.y }}');
});

test('render: string refuses NUL and invalid UTF-8; env/args refuse NUL in text', () => {
  const withNul: TemplateContext = {
    ...ctx,
    secrets: { p: { type: 'bytes', value: Uint8Array.of(0x61, 0, 0x62) } },
  };
  assert.throws(
    () => renderTemplate('{{ string .secrets.p }}', withNul),
    code('TEMPLATE_INVALID_VALUE'),
  );
  const notUtf8: TemplateContext = {
    ...ctx,
    secrets: { p: { type: 'bytes', value: Uint8Array.of(0xff) } },
  };
  assert.throws(
    () => renderTemplate('{{ string .secrets.p }}', notUtf8),
    code('TEMPLATE_INVALID_VALUE'),
  );
  assert.throws(() => renderTemplateText('a\u0000b', ctx, 'env'), code('TEMPLATE_INVALID_VALUE'));
  assert.equal(renderTemplateText('é{{ hex .secrets.apiKey }}', ctx, 'arg'), 'édeadbeef');
});

test('render: missing values are TEMPLATE_VALUE_MISSING, not invalid', () => {
  const pending: TemplateContext = {
    ...ctx,
    secrets: { ...ctx.secrets, dbPassword: null },
    mesh: {},
  };
  assert.throws(
    () => renderTemplate('{{ string .secrets.dbPassword }}', pending),
    code('TEMPLATE_VALUE_MISSING'),
  );
  assert.throws(
    () => renderTemplate('{{ pem .mesh.key }}', pending),
    code('TEMPLATE_VALUE_MISSING'),
  );
});

test('renderWorkload renders files, env and args, with the field path on errors', () => {
  const m = validateManifest(sampleManifest());
  const r = renderWorkload(m, 'frontend', ctx);
  assert.equal(text(r.files['/etc/app/db.conf'] as Uint8Array), 'password=s3cret\n');
  assert.deepEqual(r.files['/etc/app/data.key'], Uint8Array.of(0, 1, 2, 255));
  assert.equal(text(r.files['/etc/app/literal.txt'] as Uint8Array), 'uses {{ braces }} literally');
  assert.equal(r.env['API_KEY'], 'deadbeef');
  assert.equal(r.env['NAME'], 'frontend-i-1');
  assert.deepEqual(r.args.slice(0, 3), ['/usr/bin/app', '--listen', ':8080']);
  assert.deepEqual([...workloadTemplatePaths(m, 'frontend')].sort(), [
    '.instance.id',
    '.mesh.cert',
    '.mesh.key',
    '.secrets.apiCert.cert',
    '.secrets.apiKey',
    '.secrets.dataKey',
    '.secrets.dbPassword',
    '.workload.name',
  ]);
  const pending: TemplateContext = { ...ctx, secrets: { ...ctx.secrets, dbPassword: null } };
  assert.throws(
    () => renderWorkload(m, 'frontend', pending),
    (e: unknown) =>
      isCloisterError(e) &&
      e.code === 'TEMPLATE_VALUE_MISSING' &&
      e.details?.['field'] === '/workloads/frontend/files/~1etc~1app~1db.conf',
  );
  assert.throws(() => renderWorkload(m, 'ghost', ctx), code('TEMPLATE_INVALID_VALUE'));
});
