// Edge cases of the mesh CA and of the activation bundle's JWE: issuers at the end of their
// validity, certificates other TLS stacks must accept, and openers that take only what the
// coordinator makes (RFC 7516, RFC 7518 §4.6, RFC 8725 §3.6).
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  X509Certificate,
  createCipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  webcrypto,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { BUNDLE_CONTENT_TYPE, decryptBundle } from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { openBundle, sealBundle } from '../src/bundle-seal.js';
import {
  createIntermediateCa,
  createRootCa,
  issueLeaf,
  leafDnsNames,
  spkiDer,
} from '../src/mesh-ca.js';

const YEAR = 365 * 86_400_000;
const t0 = new Date('2026-06-01T00:00:00Z');

async function p256Spki(): Promise<Uint8Array> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  return await spkiDer(keys.publicKey);
}

function pem(der: Uint8Array | ArrayBuffer): string {
  const b64 = Buffer.from(der as Uint8Array).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${b64.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END CERTIFICATE-----\n`;
}

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

/** `openssl verify` of leaf -> intermediate -> root at `at`, strict X.509, for one TLS purpose. */
function opensslVerify(
  root: Uint8Array,
  inter: Uint8Array,
  leaf: Uint8Array,
  at: Date,
  purpose: 'sslserver' | 'sslclient',
): string {
  const dir = mkdtempSync(join(tmpdir(), 'pki-edge-'));
  try {
    writeFileSync(join(dir, 'root.pem'), pem(root));
    writeFileSync(join(dir, 'inter.pem'), pem(inter));
    writeFileSync(join(dir, 'leaf.pem'), pem(leaf));
    const r = spawnSync(
      'openssl',
      [
        'verify',
        '-x509_strict',
        '-attime',
        String(Math.floor(at.getTime() / 1000)),
        '-purpose',
        purpose,
        '-CAfile',
        join(dir, 'root.pem'),
        '-untrusted',
        join(dir, 'inter.pem'),
        join(dir, 'leaf.pem'),
      ],
      { encoding: 'utf8' },
    );
    return `${r.stdout}${r.stderr}`.trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('mesh CA at the edges of validity', () => {
  it('refuses to issue a leaf under an expired intermediate (no certificate that ends before it begins)', async () => {
    const root = await createRootCa(t0);
    const inter = await createIntermediateCa(root.ca, 'shop.example', 'ab'.repeat(32), t0);
    const spki = await p256Spki();
    const issue = (now: Date): ReturnType<typeof issueLeaf> =>
      issueLeaf(inter.ca, {
        spkiDer: spki,
        trustDomain: 'shop.example',
        workload: 'api',
        dnsNames: ['api'],
        instanceId: 'ab'.repeat(16),
        validityMs: 86_400_000,
        now,
      });
    const end = inter.ca.cert.notAfter.getTime();
    // An hour before the end: a leaf, cut to the intermediate's notAfter.
    const last = await issue(new Date(end - 3_600_000));
    assert.equal(last.notAfter.getTime(), end);
    // Five years on, with no manifest update in between, the intermediate has expired. A leaf
    // "issued" then would be dead on arrival, and an instance recorded with an expiry in the
    // past counts against no maxInstances.
    await assert.rejects(issue(new Date(end)), { code: 'COORDINATOR_CA_EXPIRED' });
    await assert.rejects(issue(new Date(end + 86_400_000)), { code: 'COORDINATOR_CA_EXPIRED' });
  });

  it('refuses to create an intermediate under an expired root', async () => {
    const root = await createRootCa(t0);
    const end = root.ca.cert.notAfter.getTime();
    const last = await createIntermediateCa(
      root.ca,
      'shop.example',
      'cd'.repeat(32),
      new Date(end - 86_400_000),
    );
    assert.equal(last.ca.cert.notAfter.getTime(), end);
    await assert.rejects(
      createIntermediateCa(root.ca, 'shop.example', 'cd'.repeat(32), new Date(end + 86_400_000)),
      { code: 'COORDINATOR_CA_EXPIRED' },
    );
  });

  it(
    'leaves verify with openssl (strict) and Node: template path, capped at the issuer, past 2049',
    { skip: hasOpenssl ? false : 'openssl is not installed' },
    async () => {
      // A root made in 2035 ends in 2054 (GeneralizedTime); its intermediate made in 2049 ends
      // with it.
      const cases: { made: Date; at: Date; validityMs: number; workload: string }[] = [
        { made: t0, at: t0, validityMs: 86_400_000, workload: 'front-end' },
        // Capped at the intermediate's notAfter.
        {
          made: t0,
          at: new Date(t0.getTime() + 5 * YEAR - 3_600_000),
          validityMs: 86_400_000,
          workload: 'my_app',
        },
        // UTCTime notBefore, GeneralizedTime notAfter (the library builds this one).
        {
          made: new Date('2035-01-01T00:00:00Z'),
          at: new Date('2049-12-31T12:00:00Z'),
          validityMs: 86_400_000,
          workload: 'Api',
        },
      ];
      for (const c of cases) {
        const root = await createRootCa(c.made);
        const inter = await createIntermediateCa(root.ca, 'shop.example', 'ef'.repeat(32), c.at);
        const spki = await p256Spki();
        const leaf = await issueLeaf(inter.ca, {
          spkiDer: spki,
          trustDomain: 'shop.example',
          workload: c.workload,
          dnsNames: leafDnsNames(c.workload, [{ external: true }]),
          instanceId: randomBytes(16).toString('hex'),
          validityMs: c.validityMs,
          now: c.at,
        });
        assert.ok(leaf.notAfter.getTime() <= inter.ca.cert.notAfter.getTime());
        assert.ok(inter.ca.cert.notAfter.getTime() <= root.ca.cert.notAfter.getTime());
        const node = new X509Certificate(leaf.der);
        assert.deepEqual(
          new Uint8Array(node.publicKey.export({ format: 'der', type: 'spki' })),
          spki,
        );
        assert.ok(
          node.verify(new X509Certificate(new Uint8Array(inter.ca.cert.rawData)).publicKey),
        );
        const at = new Date(c.at.getTime() + 60_000);
        for (const purpose of ['sslserver', 'sslclient'] as const) {
          assert.match(
            opensslVerify(
              new Uint8Array(root.ca.cert.rawData),
              new Uint8Array(inter.ca.cert.rawData),
              leaf.der,
              at,
              purpose,
            ),
            /: OK$/,
            `${c.workload} at ${c.at.toISOString()} for ${purpose}`,
          );
        }
      }
    },
  );
});

const bundle: ActivationBundle = {
  files: { '/run/app/config.json': Buffer.from('{"k":"v"}').toString('base64url') },
  env: { MODE: 'test' },
  args: ['--port', '8080'],
  mesh: {
    cert: pem(Uint8Array.of(1)),
    rootCa: pem(Uint8Array.of(2)),
    intermediateCa: pem(Uint8Array.of(3)),
  },
  renewAfter: '2026-06-01T00:00:00.000Z',
};

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * A JWE to `agentRaw` made the RFC 7518 §4.6 way with any protected header: what a sender other
 * than the coordinator could send (ECDH-ES needs only the recipient's public key).
 */
function sealWithHeader(
  extra: Record<string, unknown>,
  plaintext: Uint8Array,
  agentRaw: Uint8Array,
  epkExtra: Record<string, unknown> = {},
): string {
  const eph = generateKeyPairSync('x25519');
  const agentKey = createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(agentRaw).toString('base64url') },
    format: 'jwk',
  });
  const z = diffieHellman({ privateKey: eph.privateKey, publicKey: agentKey });
  const otherInfo = Buffer.concat([u32(7), Buffer.from('A256GCM'), u32(0), u32(0), u32(256)]);
  const cek = createHash('sha256').update(u32(1)).update(z).update(otherInfo).digest();
  const header = Buffer.from(
    JSON.stringify({
      alg: 'ECDH-ES',
      enc: 'A256GCM',
      cty: BUNDLE_CONTENT_TYPE,
      epk: { kty: 'OKP', crv: 'X25519', x: eph.publicKey.export({ format: 'jwk' }).x, ...epkExtra },
      ...extra,
    }),
  ).toString('base64url');
  const iv = randomBytes(12);
  const gcm = createCipheriv('aes-256-gcm', cek, iv);
  gcm.setAAD(Buffer.from(header, 'ascii'));
  const ct = Buffer.concat([gcm.update(plaintext), gcm.final()]);
  return `${header}..${iv.toString('base64url')}.${ct.toString('base64url')}.${gcm.getAuthTag().toString('base64url')}`;
}

/** An agent's bundle key as WebCrypto (what `decryptBundle` takes) and Node hold it. */
async function agent(): Promise<{ keys: CryptoKeyPair; node: KeyObject; raw: Uint8Array }> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'X25519' }, true, [
    'deriveBits',
  ])) as CryptoKeyPair;
  const node = createPrivateKey({
    key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    format: 'der',
    type: 'pkcs8',
  });
  return {
    keys,
    node,
    raw: new Uint8Array(await webcrypto.subtle.exportKey('raw', keys.publicKey)),
  };
}

const json = (b: ActivationBundle): Uint8Array => new TextEncoder().encode(JSON.stringify(b));

describe('bundle openers take only what the coordinator makes', () => {
  it('the hand-made JWE of these tests is what both openers accept', async () => {
    const a = await agent();
    const jwe = sealWithHeader({}, json(bundle), a.raw);
    assert.deepEqual(openBundle(jwe, a.node), bundle);
    assert.deepEqual(await decryptBundle(jwe, a.keys.privateKey), bundle);
    assert.deepEqual(openBundle(sealBundle(bundle, a.raw), a.node), bundle);
  });

  it('openBundle: a protected header that is JSON but not an object is BUNDLE_INVALID, not a TypeError', async () => {
    const a = await agent();
    const rest = sealBundle(bundle, a.raw).split('.').slice(1).join('.');
    for (const h of ['null', '[]', '"ECDH-ES"', '0', 'true']) {
      assert.throws(() => openBundle(`${Buffer.from(h).toString('base64url')}.${rest}`, a.node), {
        code: 'BUNDLE_INVALID',
      });
    }
  });

  it('openBundle: refuses crit (RFC 7516 §4.1.13), zip and header members the coordinator never sends', async () => {
    const a = await agent();
    for (const extra of [{ crit: ['exp'], exp: 1 }, { zip: 'DEF' }, { kid: 'k1' }]) {
      const jwe = sealWithHeader(extra, json(bundle), a.raw);
      assert.throws(
        () => openBundle(jwe, a.node),
        { code: 'BUNDLE_INVALID' },
        JSON.stringify(extra),
      );
    }
    // The ephemeral key is a public key and nothing else.
    const withD = sealWithHeader({}, json(bundle), a.raw, { d: 'A'.repeat(43) });
    assert.throws(() => openBundle(withD, a.node), { code: 'BUNDLE_INVALID' });
    // jose refuses an unknown critical member too.
    await assert.rejects(
      decryptBundle(
        sealWithHeader({ crit: ['exp'], exp: 1 }, json(bundle), a.raw),
        a.keys.privateKey,
      ),
      { code: 'BUNDLE_INVALID' },
    );
  });

  it('decryptBundle: refuses a compressed (zip: DEF) bundle, which the coordinator never sends', async () => {
    const a = await agent();
    const jwe = sealWithHeader({ zip: 'DEF' }, deflateRawSync(json(bundle)), a.raw);
    await assert.rejects(decryptBundle(jwe, a.keys.privateKey), { code: 'BUNDLE_INVALID' });
  });
});
