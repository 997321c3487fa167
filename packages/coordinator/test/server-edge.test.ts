/**
 * Adversarial tests of the coordinator's HTTP server: what a client on the network can do to it
 * without any credential.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { connect } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import { startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

describe('coordinator HTTP server edges', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
  });
  after(async () => f.cleanup());

  it('bounds the time a client may take to send a request (slow bodies)', () => {
    // Node bounds only the headers by default, and Fastify turns the whole-request limit off:
    // a client could send its headers and then one body byte a minute, for ever, on as many
    // connections as it likes. (Checked on the listening server: the limit is enforced by a
    // timer that runs every 30 s, too slow to wait for in a test.)
    const server = f.coord.server.server;
    assert.ok(server.requestTimeout > 0, 'no limit on the time to receive a request');
    assert.ok(server.requestTimeout <= 120_000, `request timeout ${server.requestTimeout} ms`);
    assert.ok(server.headersTimeout > 0 && server.headersTimeout <= server.requestTimeout);
  });
});

/** The protocol and cipher a TLS 1.2-or-older client gets, or the handshake error code. */
function handshake(url: string, opts: ConnectionOptions): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({
      host: u.hostname,
      port: Number(u.port),
      rejectUnauthorized: false,
      ...opts,
    });
    s.once('secureConnect', () => {
      resolve(`${s.getProtocol() ?? ''} ${s.getCipher().name}`);
      s.destroy();
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
  });
}

describe('coordinator TLS', () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture();
  });
  after(async () => f.cleanup());

  it('offers TLS 1.2 only with AEAD suites, never CBC with HMAC-SHA1', async () => {
    const tls12 = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;
    assert.equal(
      await handshake(f.coord.url, { ...tls12, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' }),
      'TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256',
    );
    for (const cipher of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA']) {
      assert.match(await handshake(f.coord.url, { ...tls12, ciphers: cipher }), /^error /, cipher);
    }
    assert.match(await handshake(f.coord.url, {}), /^TLSv1\.3 /);
  });
});
