// `cloister verify` through machines in the middle: a TLS relay that terminates the connection
// with its own key, and an HTTP-level relay that rewrites the attestation answer. Each must be
// rejected (exit 10) with the reason that names the broken binding.
import { strict as assert } from 'node:assert';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import type { Server as TlsServer } from 'node:tls';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createRootCa } from '@cloister/coordinator';
import { cli, startDeployment } from './helpers.js';
import type { Deployment } from './helpers.js';

const pem = (label: string, b64: string): string =>
  `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

/** A self-signed key and certificate that are not the coordinator's. */
async function foreignTls(): Promise<{ key: string; cert: string; certPem: string }> {
  const { stored } = await createRootCa(new Date());
  const certPem = pem('CERTIFICATE', stored.certDer);
  return { key: pem('PRIVATE KEY', stored.keyPkcs8), cert: certPem, certPem };
}

function listen(server: TlsServer | HttpsServer): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(`https://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`);
    });
  });
}

describe('cloister verify through a machine in the middle', () => {
  let d: Deployment;
  const servers: (TlsServer | HttpsServer)[] = [];
  before(async () => {
    d = await startDeployment();
  });
  after(async () => {
    for (const s of servers) s.close();
    await d.close();
  });
  /** `cloister verify` of the deployment, reached at `url` (a relay in the middle). */
  const verifyThrough = (url: string) =>
    cli(['verify', '--coordinator', url, '--allow-simulation', '--sim-root', d.sim, '--json']);

  it('a TLS relay with its own key is rejected with VERIFY_TLS_KEY_MISMATCH', async () => {
    const target = new URL(d.coord.url);
    const relay = createTlsServer(await foreignTls(), (client) => {
      const upstream = tlsConnect({
        host: target.hostname,
        port: Number(target.port),
        rejectUnauthorized: false,
      });
      client.pipe(upstream).pipe(client);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    servers.push(relay);
    const url = await listen(relay);
    // Sanity: the coordinator itself verifies.
    const ok = await cli([
      'verify',
      '--coordinator',
      d.coord.url,
      '--allow-simulation',
      '--sim-root',
      d.sim,
      '--json',
    ]);
    assert.equal(ok.code, 0, ok.out + ok.err);
    const r = await verifyThrough(url);
    assert.equal(r.code, 10, r.out + r.err);
    const reason = r.json()['reason'] as {
      code: string;
      layer: string;
      details: { expected: string; actual: string };
    };
    assert.equal(reason.code, 'VERIFY_TLS_KEY_MISMATCH');
    assert.equal(reason.layer, 'BINDING');
    assert.notEqual(reason.details.expected, reason.details.actual);
  });

  /** An HTTPS relay that rewrites the /v1/attest answer with `edit`. */
  async function rewritingRelay(edit: (body: Record<string, unknown>) => void): Promise<string> {
    const upstream = new Agent({ connect: { rejectUnauthorized: false } });
    const relay = createHttpsServer(await foreignTls(), (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          const r = await request(new URL(req.url ?? '/', d.coord.url), {
            method: req.method as 'POST',
            dispatcher: upstream,
            headers: { 'content-type': 'application/json' },
            ...(chunks.length === 0 ? {} : { body: Buffer.concat(chunks) }),
          });
          const body = (await r.body.json()) as Record<string, unknown>;
          if (req.url === '/v1/attest') edit(body);
          res.writeHead(r.statusCode, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        })();
      });
    });
    servers.push(relay);
    return listen(relay);
  }

  it('a relay that swaps the root CA is rejected with VERIFY_BINDING_MISMATCH', async () => {
    const other = await foreignTls();
    const url = await rewritingRelay((b) => {
      b['rootCa'] = other.certPem;
    });
    const r = await verifyThrough(url);
    assert.equal(r.code, 10, r.out + r.err);
    const reason = r.json()['reason'] as { code: string; layer: string };
    assert.equal(reason.code, 'VERIFY_BINDING_MISMATCH');
    assert.equal(reason.layer, 'BINDING');
  });

  it('a relay that announces its own TLS key instead is rejected with VERIFY_BINDING_MISMATCH', async () => {
    const url = await rewritingRelay((b) => {
      b['tlsSpki'] = Buffer.from('not the attested key').toString('base64url');
    });
    const r = await verifyThrough(url);
    assert.equal(r.code, 10, r.out + r.err);
    assert.equal((r.json()['reason'] as { code: string }).code, 'VERIFY_BINDING_MISMATCH');
  });

  it('a relay that replays the evidence of another nonce is rejected with VERIFY_BINDING_MISMATCH', async () => {
    // Fetch genuine evidence for some other nonce once, then answer every request with it.
    const upstream = new Agent({ connect: { rejectUnauthorized: false } });
    const old = (await (
      await request(new URL('/v1/attest', d.coord.url), {
        method: 'POST',
        dispatcher: upstream,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ nonce: Buffer.alloc(32, 1).toString('base64url') }),
      })
    ).body.json()) as Record<string, unknown>;
    const url = await rewritingRelay((b) => {
      b['evidence'] = old['evidence'];
    });
    const r = await verifyThrough(url);
    assert.equal(r.code, 10, r.out + r.err);
    assert.equal((r.json()['reason'] as { code: string }).code, 'VERIFY_BINDING_MISMATCH');
  });

  it('a relay that rewrites the history is rejected', async () => {
    const url = await rewritingRelay((b) => {
      b['history'] = [
        {
          seq: 0,
          prevHash: '0'.repeat(64),
          manifestHash: 'ab'.repeat(32),
          kind: 'set',
          signatures: [],
          at: new Date().toISOString(),
        },
      ];
    });
    const r = await verifyThrough(url);
    assert.equal(r.code, 10, r.out + r.err);
    assert.equal((r.json()['reason'] as { code: string }).code, 'VERIFY_BINDING_MISMATCH');
  });

  it('an answer that violates the API schema is malformed (exit 30), not trusted', async () => {
    const url = await rewritingRelay((b) => {
      b['evidence'] = { type: 'sim', data: 'not base64url!' };
    });
    const r = await verifyThrough(url);
    assert.equal(r.code, 30, r.out + r.err);
    assert.equal((r.json()['error'] as { code: string }).code, 'CLIENT_BAD_RESPONSE');
  });
});
