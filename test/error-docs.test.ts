import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { docsPath, loadTables, renderErrorDocs } from '../scripts/error-docs.js';

test('docs/errors.md lists exactly the codes the packages declare', async () => {
  const expected = await renderErrorDocs();
  const actual = readFileSync(docsPath, 'utf8');
  assert.equal(actual, expected, 'docs/errors.md is stale: run `npm run docs:errors`');
});

test('no error code is declared by two packages', async () => {
  const seen = new Map<string, string>();
  for (const { pkg, table } of await loadTables()) {
    for (const code of Object.keys(table)) {
      assert.ok(!seen.has(code), `${code} is declared by ${seen.get(code)} and ${pkg}`);
      seen.set(code, pkg);
    }
  }
});
