/** `cloister image convert|inspect|decrypt` and `cloister keyprovider` through commander. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import { registerImage } from '../../cli/src/commands/image.js';
import { registerKeyprovider } from '../../cli/src/commands/keyprovider.js';
import type { CommandContext } from '../../cli/src/main.js';
import { makeLayout } from './fixtures.js';
import { keyPair, tempDir } from './helpers.js';

async function cli(args: string[]): Promise<{ out: string; ctx: CommandContext }> {
  let out = '';
  const ctx: CommandContext = { io: { out: (s) => (out += s), err: () => undefined }, exitCode: 0 };
  const program = new Command('cloister')
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
  registerImage(program, ctx);
  registerKeyprovider(program, ctx);
  await program.parseAsync(args, { from: 'user' });
  return { out, ctx };
}

test('image convert --json prints reference values and the manifest snippet; decrypt restores', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'p'), [[{ name: 'a', content: 'x' }]]);
  const coord = keyPair(dir, 'ec256', 'coord');
  const rsa = keyPair(dir, 'rsa');
  const { out } = await cli([
    'image',
    'convert',
    `oci:${plain.dir}:latest`,
    `oci:${join(dir, 'enc')}:v1`,
    '--coordinator-key',
    coord.pub,
    '--recipient',
    `jwe:${rsa.pub}`,
    '--workload',
    'web',
    '--json',
  ]);
  const j = JSON.parse(out) as {
    referenceValues: {
      manifestDigest: string;
      configDigest: string;
      diffIds: string[];
      encryptedLayers: string[];
    };
    manifestSnippet: { workloads: { web: { image: Record<string, unknown> } } };
  };
  assert.deepEqual(j.referenceValues.diffIds, plain.diffIds);
  assert.equal(j.referenceValues.configDigest, plain.configDigest);
  assert.equal(j.referenceValues.encryptedLayers.length, 1);
  const img = j.manifestSnippet.workloads.web.image;
  assert.equal(img.manifestDigest, j.referenceValues.manifestDigest);
  assert.equal(img.keyScheme, 'provider.cloister');
  assert.equal(img.reference, `oci:${join(dir, 'enc')}@${j.referenceValues.manifestDigest}`);

  const inspect = JSON.parse(
    (await cli(['image', 'inspect', `oci:${join(dir, 'enc')}:v1`, '--json'])).out,
  ) as {
    referenceValues: { manifestDigest: string; layers: { keySchemes: string[] }[] };
  };
  assert.equal(inspect.referenceValues.manifestDigest, j.referenceValues.manifestDigest);
  assert.deepEqual(inspect.referenceValues.layers[0]?.keySchemes, ['jwe', 'provider.cloister']);

  const dec = JSON.parse(
    (
      await cli([
        'image',
        'decrypt',
        `oci:${join(dir, 'enc')}:v1`,
        `oci:${join(dir, 'dec')}:v1`,
        '--key',
        rsa.priv,
        '--json',
      ])
    ).out,
  ) as { referenceValues: { manifestDigest: string; encryptedLayers: string[] } };
  assert.equal(
    dec.referenceValues.manifestDigest,
    plain.manifestDigest,
    'decrypting restores the original manifest',
  );
  await assert.rejects(
    cli([
      'image',
      'decrypt',
      `oci:${join(dir, 'enc')}:v1`,
      `oci:${join(dir, 'dec2')}:v1`,
      '--key',
      keyPair(dir, 'rsa', 'other').priv,
    ]),
    { code: 'IMAGE_NO_KEY' },
  );
  await assert.rejects(
    cli(['image', 'convert', `oci:${plain.dir}:latest`, `oci:${join(dir, 'x')}`]),
    { code: 'CLI_USAGE' },
  );
  await assert.rejects(cli(['image', 'inspect', 'nonsense']), { code: 'IMAGE_BAD_REFERENCE' });
});
