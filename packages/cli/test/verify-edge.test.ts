// Edges of the coordinator client that an attacker on the network or the host can reach: who
// may answer a connection pinned to the saved root CA, and a server that never finishes its
// answer.
import { strict as assert } from 'node:assert';
import { webcrypto } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  createIntermediateCa,
  generateSecret,
  createRootCa,
  issueLeaf,
  issueServerCert,
  leafDnsNames,
} from '@cloister/coordinator';
import type { LoadedCa } from '@cloister/coordinator';
import { errorFromProblem } from '../src/client/http.js';
import { verifyCoordinator } from '../src/client/verify.js';
import { cli, tempDir } from './helpers.js';

const subtle = webcrypto.subtle;

const pem = (label: string, der: Uint8Array): string =>
  `-----BEGIN ${label}-----\n${(
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? []
  ).join('\n')}\n-----END ${label}-----\n`;

async function p256(): Promise<{ keyPem: string; spkiDer: Uint8Array; publicKey: CryptoKey }> {
  const k = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
  return {
    keyPem: pem('PRIVATE KEY', new Uint8Array(await subtle.exportKey('pkcs8', k.privateKey))),
    spkiDer: new Uint8Array(await subtle.exportKey('spki', k.publicKey)),
    publicKey: k.publicKey,
  };
}

/** The TLS identity a coordinator under `root` serves (a fresh root when none is given). */
async function coordinatorTls(root?: LoadedCa): Promise<{ key: string; cert: string }> {
  const k = await p256();
  const ca = root ?? (await createRootCa(new Date())).ca;
  const cert = await issueServerCert(ca, {
    publicKey: k.publicKey,
    dnsNames: ['localhost'],
    ips: ['127.0.0.1', '::1'],
    now: new Date(),
    validityMs: 86_400_000,
  });
  return { key: k.keyPem, cert: cert.pem };
}

function listen(server: HttpsServer): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, 'localhost', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? a.port : 0);
    });
  });
}

/** Answers every request like a coordinator's `/v1/status`. */
const statusAnswer: RequestListener = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ state: 'ready', version: '0.1.0', tee: 'sim' }));
};

describe('a connection pinned to the saved root CA', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let root: LoadedCa;
  let rootFile: string;
  const servers: HttpsServer[] = [];
  before(async () => {
    t = await tempDir();
    const r = await createRootCa(new Date());
    root = r.ca;
    rootFile = join(t.dir, 'root.pem');
    await writeFile(rootFile, root.cert.toString('pem'));
  });
  after(async () => {
    for (const s of servers) s.close();
    await t.cleanup();
  });

  const status = (port: number) =>
    cli(['status', '--coordinator', `https://localhost:${port}`, '--root-ca', rootFile, '--json']);

  it("accepts the coordinator's own server certificate (issued by the root)", async () => {
    const server = createHttpsServer(await coordinatorTls(root), statusAnswer);
    servers.push(server);
    const r = await status(await listen(server));
    assert.equal(r.code, 0, r.out + r.err);
    assert.equal(r.json()['state'], 'ready');
  });

  it('refuses a workload mesh leaf that names the host (CLIENT_COORDINATOR_UNTRUSTED)', async () => {
    // A workload with an external ingress gets `localhost` in its leaf, which chains to the same
    // root through the mesh CA. Its program may hold that key (`.mesh.key`); if it could answer
    // for the coordinator it would receive secret values and hand out its own image key.
    const mesh = await createIntermediateCa(root, 'test.local', 'ab'.repeat(32), new Date());
    const k = await p256();
    const leaf = await issueLeaf(mesh.ca, {
      spkiDer: k.spkiDer,
      trustDomain: 'test.local',
      workload: 'web',
      dnsNames: leafDnsNames('web', [{ external: true }]),
      instanceId: '0123456789abcdef0123456789abcdef',
      validityMs: 86_400_000,
      now: new Date(),
    });
    const server = createHttpsServer(
      { key: k.keyPem, cert: `${leaf.pem.trim()}\n${mesh.ca.cert.toString('pem').trim()}\n` },
      statusAnswer,
    );
    servers.push(server);
    const r = await status(await listen(server));
    assert.equal(r.code, 10, r.out + r.err);
    assert.equal((r.json()['error'] as { code: string }).code, 'CLIENT_COORDINATOR_UNTRUSTED');
  });

  it('refuses a certificate secret the root signed for the host (CLIENT_COORDINATOR_UNTRUSTED)', async () => {
    // `cert-ecdsa` secrets are signed by the root itself, with the names the owner chose, and
    // delivered to workloads: only the coordinator's own certificate carries its name.
    const secret = await generateSecret(
      { type: 'cert-ecdsa', curve: 'P-256', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] },
      root,
      new Date(),
    );
    const v = secret.value as { certificate: string; privateKey: string };
    const server = createHttpsServer(
      {
        key: pem('PRIVATE KEY', new Uint8Array(Buffer.from(v.privateKey, 'base64url'))),
        cert: pem('CERTIFICATE', new Uint8Array(Buffer.from(v.certificate, 'base64url'))),
      },
      statusAnswer,
    );
    servers.push(server);
    const r = await status(await listen(server));
    assert.equal(r.code, 10, r.out + r.err);
    assert.equal((r.json()['error'] as { code: string }).code, 'CLIENT_COORDINATOR_UNTRUSTED');
  });
});

describe('a coordinator that never finishes its answer', () => {
  const servers: HttpsServer[] = [];
  const timers: NodeJS.Timeout[] = [];
  after(() => {
    for (const x of timers) clearInterval(x);
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  it('verify gives up after its timeout even when bytes keep trickling in', async () => {
    const tls = await coordinatorTls();
    // One byte of whitespace every 100 ms: each chunk arrives well within the idle timeout,
    // and the answer would never end.
    const server = createHttpsServer(tls, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      timers.push(setInterval(() => res.write(' '), 100));
    });
    servers.push(server);
    const port = await listen(server);
    const started = Date.now();
    const outcome = await Promise.race([
      verifyCoordinator({
        url: `https://localhost:${port}`,
        allowSimulation: true,
        timeoutMs: 1_000,
      }).then(
        () => 'verified',
        (e: unknown) => (isCloisterError(e) ? e.code : String(e)),
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 8_000).unref()),
    ]);
    assert.equal(outcome, 'CLIENT_COORDINATOR_UNREACHABLE');
    assert.ok(Date.now() - started < 5_000, `gave up after ${Date.now() - started} ms`);
  });

  it('a redirect is not followed (the answer must come from the coordinator itself)', async () => {
    const tls = await coordinatorTls();
    let requests = 0;
    const server = createHttpsServer(tls, (req, res) => {
      requests++;
      res.writeHead(307, { location: `/elsewhere${req.url ?? ''}` });
      res.end();
    });
    servers.push(server);
    const port = await listen(server);
    const outcome = await verifyCoordinator({
      url: `https://localhost:${port}`,
      allowSimulation: true,
      timeoutMs: 2_000,
    }).then(
      () => 'verified',
      (e: unknown) => (isCloisterError(e) ? e.code : String(e)),
    );
    assert.equal(outcome, 'CLIENT_REMOTE_ERROR');
    assert.equal(requests, 1);
  });
});

describe('problem+json text from whoever answered', () => {
  it('cannot carry terminal control sequences into the printed message', () => {
    // Before the TLS key is checked, a machine in the middle writes this text; printed raw, it
    // could erase the REJECTED line and draw a VERIFIED one.
    const spoof = '\r\u001b[2K\u001b[1AVERIFIED coordinator\u202e';
    for (const body of [
      { code: 'VERIFY_SPOOF', detail: spoof },
      { code: 'VERIFY_SPOOF', title: spoof },
      { code: 'VERIFY_SPOOF', layer: 'POLICY', detail: spoof },
    ]) {
      const e = errorFromProblem(403, body, 'POST /v1/attest');
      assert.equal(e.code, 'VERIFY_SPOOF');
      assert.doesNotMatch(e.message, /[\p{Cc}\p{Cf}]/u);
      assert.match(e.message, /VERIFIED coordinator/);
    }
  });
});
