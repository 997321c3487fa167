import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXIT_CODES } from '@cloister/errors';
import { buildProgram, main } from '../src/main.js';
import type { CommandContext } from '../src/main.js';

const ALL = [
  'up',
  'verify',
  'keygen',
  'manifest',
  'secret',
  'status',
  'coordinator',
  'agent',
  'sim',
  'evidence',
  'image',
  'keyprovider',
];

const quiet = (): CommandContext => ({
  io: { out: () => undefined, err: () => undefined },
  exitCode: EXIT_CODES.ok,
});

const commandsFor = async (argv: string[]): Promise<string[]> =>
  (await buildProgram(quiet(), argv)).commands.map((c) => c.name());

test('a command loads only its own group; help and unknown commands load every group', async () => {
  assert.deepEqual(await commandsFor(['image', 'convert']), ['image']);
  assert.deepEqual(await commandsFor(['keyprovider']), ['keyprovider']);
  assert.deepEqual(await commandsFor(['--version']), []);
  assert.deepEqual(await commandsFor([]), ALL);
  assert.deepEqual(await commandsFor(['--help']), ALL);
  assert.deepEqual(await commandsFor(['imgae']), ALL);
  // Names are looked up as own keys only.
  assert.deepEqual(await commandsFor(['constructor']), ALL);
});

test('help lists every command, and a misspelt one gets a suggestion', async () => {
  let out = '';
  let err = '';
  const io = { out: (s: string) => (out += s), err: (s: string) => (err += s) };
  assert.equal(await main(['--help'], io), EXIT_CODES.ok);
  for (const name of ALL) assert.match(out, new RegExp(`^\\s+${name}\\b`, 'm'), name);
  assert.notEqual(await main(['imgae'], io), EXIT_CODES.ok);
  assert.match(err, /Did you mean image\?/);
});
