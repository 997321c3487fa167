/**
 * The ocicrypt keyprovider cmd protocol, driven exactly as containers/ocicrypt's keyprovider
 * client drives it: a subprocess, JSON on stdin (with the full DecryptConfig noise ocicrypt
 * sends), JSON on stdout. Wrapping goes to the coordinator key; unwrapping needs
 * CLOISTER_KEYPROVIDER_KEY. The annotation it produces is what Cloister convert writes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  OciLayoutDestination,
  OciLayoutSource,
  PROVIDER_KEYS_ANNOTATION,
  copyImage,
  handleKeyproviderRequest,
  loadPrivateKey,
  loadPublicKey,
  newPrivateOptions,
  parsePrivateOptions,
  serializePrivateOptions,
  unwrapLayerKey,
  type Digest,
} from '@cloister/image';
import { makeLayout } from './fixtures.js';
import { keyPair, repoRoot, tempDir } from './helpers.js';

function runProvider(
  input: unknown,
  env: Record<string, string>,
): { status: number | null; out: unknown; err: string } {
  const r = spawnSync(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', 'packages/image/test/keyprovider-bin.ts'],
    {
      cwd: repoRoot,
      input: JSON.stringify(input),
      env: { ...process.env, ...env },
      encoding: 'utf8',
    },
  );
  return {
    status: r.status,
    out: r.stdout ? (JSON.parse(r.stdout) as unknown) : undefined,
    err: r.stderr,
  };
}

test('keyprovider subprocess: keywrap and keyunwrap as ocicrypt sends them', async (t) => {
  const dir = tempDir(t);
  const coord = keyPair(dir, 'ec256', 'coordinator');
  const opts = newPrivateOptions(`sha256:${'ab'.repeat(32)}` as Digest);
  const optsB64 = Buffer.from(serializePrivateOptions(opts)).toString('base64');
  const wrap = runProvider(
    {
      op: 'keywrap',
      keywrapparams: {
        ec: {
          Parameters: { cloister: [Buffer.from(coord.pub).toString('base64')] },
          DecryptConfig: { Parameters: null },
        },
        optsdata: optsB64,
      },
      keyunwrapparams: { dc: null, annotation: null },
    },
    {},
  );
  assert.equal(wrap.status, 0, wrap.err);
  const annotation = (wrap.out as { keywrapresults: { annotation: string } }).keywrapresults
    .annotation;
  // ocicrypt stores base64(annotation bytes) under enc.keys.provider.cloister: Cloister reads it.
  const back = await unwrapLayerKey({ [PROVIDER_KEYS_ANNOTATION]: annotation }, [
    loadPrivateKey(new Uint8Array(readFileSync(coord.priv))),
  ]);
  assert.deepEqual(back, parsePrivateOptions(serializePrivateOptions(opts)));

  const unwrap = runProvider(
    {
      op: 'keyunwrap',
      keywrapparams: { ec: null, optsdata: null },
      keyunwrapparams: {
        dc: { Parameters: { privkeys: ['c2VjcmV0'], cloister: ['RW5hYmxlZA=='] } },
        annotation,
      },
    },
    { CLOISTER_KEYPROVIDER_KEY: coord.priv },
  );
  assert.equal(unwrap.status, 0, unwrap.err);
  assert.equal(
    (unwrap.out as { keyunwrapresults: { optsdata: string } }).keyunwrapresults.optsdata,
    optsB64,
  );

  // Without the private key the provider fails closed (non-zero exit, no optsdata).
  const denied = runProvider(
    { op: 'keyunwrap', keyunwrapparams: { annotation } },
    { CLOISTER_KEYPROVIDER_KEY: '' },
  );
  assert.notEqual(denied.status, 0);
  assert.match(denied.err, /IMAGE_NO_KEY/);
});

test('keyprovider unwraps what cloister convert --coordinator-key wrote', async (t) => {
  const dir = tempDir(t);
  const coord = keyPair(dir, 'rsa', 'coordinator');
  const plain = await makeLayout(join(dir, 'p'), [[{ name: 'x', content: 'y' }]]);
  await copyImage(
    new OciLayoutSource(plain.dir, 'latest'),
    new OciLayoutDestination(join(dir, 'e'), 'e'),
    {
      coordinatorKey: loadPublicKey(new Uint8Array(readFileSync(coord.pub))),
    },
  );
  const idx = JSON.parse(readFileSync(join(dir, 'e', 'index.json'), 'utf8')) as {
    manifests: { digest: string }[];
  };
  const m = JSON.parse(
    readFileSync(
      join(dir, 'e', 'blobs', 'sha256', (idx.manifests[0]?.digest ?? '').slice(7)),
      'utf8',
    ),
  ) as {
    layers: { annotations: Record<string, string> }[];
  };
  const item = m.layers[0]?.annotations[PROVIDER_KEYS_ANNOTATION] ?? '';
  const out = await handleKeyproviderRequest(
    new Uint8Array(
      Buffer.from(JSON.stringify({ op: 'keyunwrap', keyunwrapparams: { annotation: item } })),
    ),
    { env: { CLOISTER_KEYPROVIDER_KEY: coord.priv } },
  );
  const optsdata = (
    JSON.parse(Buffer.from(out).toString()) as { keyunwrapresults: { optsdata: string } }
  ).keyunwrapresults.optsdata;
  assert.equal(
    parsePrivateOptions(new Uint8Array(Buffer.from(optsdata, 'base64'))).symkey.length,
    32,
  );
});

test('keyprovider: malformed requests get IMAGE_KEYPROVIDER_PROTOCOL, never a crash', async () => {
  for (const bad of [
    '',
    'null',
    '[]',
    '{"op":"x"}',
    '{"op":"keywrap"}',
    '{"op":"keyunwrap","keyunwrapparams":{"annotation":"!!"}}',
  ]) {
    await assert.rejects(
      handleKeyproviderRequest(new Uint8Array(Buffer.from(bad))),
      { code: 'IMAGE_KEYPROVIDER_PROTOCOL' },
      bad,
    );
  }
  await fc.assert(
    fc.asyncProperty(fc.jsonValue(), async (v) => {
      try {
        await handleKeyproviderRequest(new Uint8Array(Buffer.from(JSON.stringify(v))), { env: {} });
      } catch (e) {
        assert.match(String((e as { code?: string }).code), /^IMAGE_/);
      }
    }),
    { numRuns: 300 },
  );
});
