/** `cloister image convert|inspect|decrypt` and `cloister keyprovider` through commander. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import { ImageSchema, checkBody } from '@cloister/protocol';
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
  // Pastable: exactly the manifest schema's image fields.
  assert.deepEqual(checkBody(ImageSchema, img, 'image'), {
    // A layout has no digest syntax: the ref reads back as given, the digest pins it.
    ref: `oci:${join(dir, 'enc')}:v1`,
    manifestDigest: j.referenceValues.manifestDigest,
    configDigest: j.referenceValues.configDigest,
    diffIds: j.referenceValues.diffIds,
  });
  assert.deepEqual(Object.keys(j.manifestSnippet), ['workloads'], 'the coordinator releases keys');

  const inspect = JSON.parse(
    // The snippet's ref is a reference the commands read.
    (await cli(['image', 'inspect', String(img.ref), '--json'])).out,
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

test('image convert to a user key: the snippet carries the key secret and the file it goes to', async (t) => {
  const dir = tempDir(t);
  const plain = await makeLayout(join(dir, 'p'), [[{ name: 'a', content: 'x' }]]);
  const user = keyPair(dir, 'ec256', 'user');
  const { out } = await cli([
    'image',
    'convert',
    `oci:${plain.dir}:latest`,
    `oci:${join(dir, 'enc')}:v1`,
    '--recipient',
    `jwe:${user.pub}`,
    '--workload',
    'web',
    '--json',
  ]);
  const snippet = (JSON.parse(out) as { manifestSnippet: Record<string, unknown> }).manifestSnippet;
  assert.deepEqual(snippet['secrets'], { imageKey: { type: 'plain', userDefined: true } });
  const web = (snippet['workloads'] as Record<string, Record<string, unknown>>)['web'];
  assert.deepEqual(web?.['files'], {
    '/run/cloister/image-key.pem': '{{ raw .secrets.imageKey }}',
  });
  checkBody(ImageSchema, web?.['image'], 'image');
  await assert.rejects(
    cli([
      'image',
      'convert',
      `oci:${plain.dir}:latest`,
      `oci:${join(dir, 'x')}`,
      '--coordinator',
      'https://127.0.0.1:1',
      '--coordinator-key',
      user.pub,
    ]),
    { code: 'CLI_USAGE' },
  );
});
