/**
 * The core libraries run in any JavaScript engine (browsers, Deno, Workers): only Uint8Array
 * and WebCrypto. This fails when a `node:` import, a bare Node built-in or `Buffer` creeps into
 * their sources.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = new URL('..', import.meta.url).pathname;
const NODE_BUILTINS = [
  'fs',
  'path',
  'crypto',
  'buffer',
  'os',
  'child_process',
  'net',
  'tls',
  'http',
  'https',
  'stream',
  'url',
  'util',
  'zlib',
];

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

for (const pkg of ['errors', 'evidence', 'protocol']) {
  test(`@cloister/${pkg} has no node: import and no Buffer`, () => {
    const files = sources(join(root, 'packages', pkg, 'src'));
    assert.ok(files.length > 0);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
      assert.doesNotMatch(code, /from\s+['"]node:/, `${f} imports a node: module`);
      assert.doesNotMatch(code, /import\(\s*['"]node:/, `${f} imports a node: module`);
      for (const b of NODE_BUILTINS) {
        assert.doesNotMatch(
          code,
          new RegExp(`from\\s+['"]${b}['"]`),
          `${f} imports the Node built-in ${b}`,
        );
      }
      assert.doesNotMatch(code, /\bBuffer\b/, `${f} uses Buffer`);
      assert.doesNotMatch(code, /\bprocess\./, `${f} uses process`);
    }
  });
}
