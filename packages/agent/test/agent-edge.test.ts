/**
 * Edge cases of the agent's own process and of the files it materialises: paths that collide
 * with each other or with the mesh identity, names at the file-system limit, host environment
 * variables that load code, and signals the runtime reserves.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomBytes, verify as nodeVerify } from 'node:crypto';
import { COORDINATOR_CERT_URI, releaseSignedBytes } from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { releaseInstance } from '../src/activate.js';
import { CoordinatorClient } from '../src/coordinator-client.js';
import { createRoot, issueLeaf } from './test-pki.js';
import type { MeshIdentity } from '../src/bundle.js';
import { createFilesRoot, writeFiles } from '../src/files.js';
import { programEnv } from '../src/env.js';
import { writeBundleFiles } from '../src/run.js';

async function freshRoot(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), 'cloister-edge-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  return createFilesRoot(base);
}

const fakeMesh: MeshIdentity = {
  keyPem: 'KEY\n',
  chainPem: 'CHAIN\n',
  rootCaPem: 'ROOT\n',
  intermediateCaPem: 'INTER\n',
  spiffeId: 'spiffe://shop.test/web',
  trustDomain: 'shop.test',
  notBefore: new Date(0),
  notAfter: new Date(0),
  serial: '01',
};

function bundleWith(files: Record<string, string>): ActivationBundle {
  const enc: Record<string, string> = {};
  for (const [p, v] of Object.entries(files)) enc[p] = Buffer.from(v).toString('base64url');
  return { files: enc, env: {}, args: [] } as unknown as ActivationBundle;
}

test('a path that is also the directory of another path is refused before anything is written', async (t) => {
  const root = await freshRoot(t);
  // Written in this order, `/etc/app` would be created as a file and `/etc/app/db.conf` would
  // then fail, leaving half a bundle on disk.
  await assert.rejects(writeFiles(root, { '/etc/app': 'x', '/etc/app/db.conf': 'y' }), {
    code: 'AGENT_PATH_ESCAPE',
  });
  assert.deepEqual(await readdir(root), []);
  await assert.rejects(writeFiles(root, { '/z/a/b/c': 'y', '/z/a': 'x' }), {
    code: 'AGENT_PATH_ESCAPE',
  });
  assert.deepEqual(await readdir(root), []);
});

test('a bundle file in the way of the mesh identity is refused before anything is written', async (t) => {
  const root = await freshRoot(t);
  for (const p of ['/run/cloister/mesh', '/run/cloister', '/run/cloister/mesh/key.pem/x']) {
    await assert.rejects(
      writeBundleFiles(root, bundleWith({ '/ok': 'fine', [p]: 'x' }), fakeMesh),
      { code: 'AGENT_PATH_ESCAPE' },
      p,
    );
    assert.deepEqual(await readdir(root), [], p);
  }
});

test('a file name of 255 bytes (the file-system limit) is written', async (t) => {
  const root = await freshRoot(t);
  const name = `/etc/${'n'.repeat(255)}`;
  await writeFiles(root, { [name]: 'long' });
  assert.equal(await readFile(join(root, name), 'utf8'), 'long');
  assert.deepEqual(await readdir(join(root, 'etc')), ['n'.repeat(255)]);
});

test('host variables that make a runtime load code are not passed to the program', () => {
  const loaders = {
    JAVA_TOOL_OPTIONS: '-javaagent:/host/evil.jar',
    _JAVA_OPTIONS: '-javaagent:/host/evil.jar',
    JDK_JAVA_OPTIONS: '-javaagent:/host/evil.jar',
    BASH_ENV: '/host/evil.sh',
    PYTHONHOME: '/host/py',
    NODE_PATH: '/host/node_modules',
    PERL5LIB: '/host/perl',
    PERLLIB: '/host/perl',
    RUBYLIB: '/host/ruby',
    GCONV_PATH: '/host/gconv',
  };
  const env = programEnv({ PATH: '/bin', HOME: '/home/app', ...loaders }, {}, '/r');
  assert.deepEqual(env, { PATH: '/bin', HOME: '/home/app', CLOISTER_FILES: '/r' });
  // The manifest is trusted: it may still set them.
  assert.equal(programEnv(loaders, { NODE_PATH: '/app/lib' }, '/r')['NODE_PATH'], '/app/lib');
});

test('SIGUSR1 does not open the Node.js inspector in a running agent', async (t) => {
  // Node starts a debugger on SIGUSR1 unless the process handles that signal itself; anyone who
  // can signal the agent would get a local port that runs code inside it, next to its keys.
  const repo = fileURLToPath(new URL('../../..', import.meta.url));
  const code = `
    const { runAgent } = await import(process.env.AGENT_RUN_MODULE);
    const provider = { type: 'sim', getEvidence: async () => { throw new Error('unused'); } };
    await runAgent({
      coordinator: 'https://127.0.0.1:9',
      workload: 'web',
      provider,
      program: { executable: '/nonexistent', argv0: 'app', args: [] },
      retryForMs: 60000,
      log: { info() {}, warn() { process.stdout.write('waiting\\n'); } },
    }).catch(() => undefined);
  `;
  const child = spawn(
    process.execPath,
    [
      '--conditions=source',
      '--import',
      'tsx',
      '--inspect-port=0',
      '--input-type=module',
      '-e',
      code,
    ],
    {
      cwd: repo,
      env: { ...process.env, AGENT_RUN_MODULE: new URL('../src/run.ts', import.meta.url).href },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const give = Date.now() + 20_000;
  while (!stdout.includes('waiting') && child.exitCode === null && Date.now() < give) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(stdout.includes('waiting'), `the agent did not start: ${stderr}`);
  child.kill('SIGUSR1');
  await new Promise((r) => setTimeout(r, 1500));
  assert.doesNotMatch(stderr, /Debugger listening/);
  assert.equal(child.exitCode, null, 'the agent survives the signal');
  assert.equal(child.signalCode, null, 'the agent survives the signal');
  child.kill('SIGKILL');
  await once(child, 'exit');
});

test('a symlinked directory already in the files root cannot lead a write outside it', async (t) => {
  const root = await freshRoot(t);
  const outside = await mkdtemp(join(tmpdir(), 'cloister-edge-outside-'));
  t.after(() => rm(outside, { recursive: true, force: true }));
  // Say a shared `--files-dir` where someone else made `etc` a link to a directory on a disk.
  await symlink(outside, join(root, 'etc'));
  await assert.rejects(writeFiles(root, { '/ok': 'x', '/etc/app/db.conf': 'secret' }), {
    code: 'AGENT_PATH_ESCAPE',
  });
  assert.deepEqual(await readdir(outside), []);
  assert.deepEqual(await readdir(root), ['etc']);
  // A link that stays inside the root is followed as before.
  await mkdir(join(root, 'real'));
  await symlink(join(root, 'real'), join(root, 'inside'));
  await writeFiles(root, { '/inside/a/b.txt': 'fine' });
  assert.equal(await readFile(join(root, 'real/a/b.txt'), 'utf8'), 'fine');
});

test('the release is signed with the mesh key, also when the coordinator made that key', async (t) => {
  // With `.mesh.key` in a template the coordinator generates the mesh key, records it as the
  // instance's key and ships it in the bundle; the agent's own activation key is not it.
  const meshKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const root = await createRoot();
  const tls = await issueLeaf(root, [COORDINATOR_CERT_URI], {
    dns: ['localhost'],
    ips: ['127.0.0.1'],
  });
  const id = 'ab'.repeat(16);
  let verified: boolean | undefined;
  const server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/v1/activate/challenge') {
        const nonce = randomBytes(32).toString('base64url');
        res.end(JSON.stringify({ nonce, expiresAt: new Date(Date.now() + 60_000).toISOString() }));
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString()) as {
        nonce: string;
        signature: string;
      };
      verified = nodeVerify(
        'sha256',
        releaseSignedBytes(id, body.nonce),
        { key: meshKey.publicKey, dsaEncoding: 'ieee-p1363' },
        Buffer.from(body.signature, 'base64url'),
      );
      res.statusCode = verified ? 200 : 401;
      res.end(verified ? JSON.stringify({ instanceId: id, released: true }) : '{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const client = new CoordinatorClient({
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    rootCa: root.certPem,
  });
  await releaseInstance(client, {
    instanceId: id,
    mesh: {
      ...fakeMesh,
      keyPem: meshKey.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    },
  });
  assert.equal(verified, true);
});
