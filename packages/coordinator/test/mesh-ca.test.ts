import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { X509Certificate, createECDH, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import {
  agentSpki,
  onP256,
  p256Spki,
  createIntermediateCa,
  leafDnsNames,
  createRootCa,
  issueLeaf,
  loadCa,
  spkiDer,
  spkiFromCsr,
} from '../src/mesh-ca.js';

const now = new Date('2026-06-01T00:00:00Z');

async function csrFor(keys: CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=agent',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return csr.toString('pem');
}

describe('mesh CA', () => {
  it('issues a SPIFFE leaf that chains leaf -> intermediate -> root and survives reload', async () => {
    const root = await createRootCa(now);
    const reloaded = await loadCa(root.stored);
    const inter = await createIntermediateCa(reloaded, 'shop.example', 'ab'.repeat(32), now);
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ]);
    const spki = await spkiFromCsr(await csrFor(keys));
    assert.deepEqual(spki, await spkiDer(keys.publicKey));
    const issued = await issueLeaf(inter.ca, {
      spkiDer: spki,
      trustDomain: 'shop.example',
      workload: 'frontend',
      dnsNames: ['frontend', 'localhost'],
      instanceId: '00'.repeat(16),
      validityMs: 86_400_000,
      now,
    });
    assert.equal(issued.notAfter.getTime(), now.getTime() + 86_400_000);
    const leaf = { cert: new x509.X509Certificate(new Uint8Array(issued.der)) };
    assert.equal(issued.pem.trim(), leaf.cert.toString('pem').trim());
    const san = leaf.cert.getExtension(x509.SubjectAlternativeNameExtension);
    assert.deepEqual(
      san?.names.items.map((n) => [n.type, n.value]),
      [
        ['url', 'spiffe://shop.example/frontend'],
        ['dns', 'frontend'],
        ['dns', 'localhost'],
      ],
    );
    assert.ok(await leaf.cert.verify({ publicKey: inter.ca.cert.publicKey, date: now }));
    assert.ok(await inter.ca.cert.verify({ publicKey: root.ca.cert.publicKey, date: now }));
    const bc = inter.ca.cert.getExtension(x509.BasicConstraintsExtension);
    assert.equal(bc?.ca, true);
    assert.equal(leaf.cert.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  });

  it('patches the leaf template per certificate: serial, validity, instance, key (checked by two parsers)', async () => {
    const root = await createRootCa(now);
    const inter = await createIntermediateCa(root.ca, 'shop.example', 'cd'.repeat(32), now);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const keys = await webcrypto.subtle.generateKey(
        { name: 'ECDSA', namedCurve: 'P-256' },
        true,
        ['sign', 'verify'],
      );
      const spki = await spkiDer(keys.publicKey);
      const at = new Date(now.getTime() + i * 3_600_000 + 1234);
      const instanceId = randomBytes(16).toString('hex');
      const issued = await issueLeaf(inter.ca, {
        spkiDer: spki,
        trustDomain: 'shop.example',
        workload: 'api',
        dnsNames: ['api'],
        instanceId,
        validityMs: 86_400_000,
        now: at,
      });
      const lib = new x509.X509Certificate(new Uint8Array(issued.der));
      const node = new X509Certificate(issued.der);
      assert.equal(lib.serialNumber, issued.serial);
      assert.equal(node.serialNumber.toLowerCase(), issued.serial);
      assert.ok(!seen.has(issued.serial));
      seen.add(issued.serial);
      assert.equal(lib.subject, `CN=api, OU=${instanceId}`);
      assert.equal(lib.notBefore.getTime(), Math.floor((at.getTime() - 60_000) / 1000) * 1000);
      assert.equal(lib.notAfter.getTime(), Math.floor(issued.notAfter.getTime() / 1000) * 1000);
      assert.deepEqual(new Uint8Array(lib.publicKey.rawData), spki);
      assert.ok(node.verify(new X509Certificate(new Uint8Array(inter.ca.cert.rawData)).publicKey));
      assert.ok(node.checkIssued(new X509Certificate(new Uint8Array(inter.ca.cert.rawData))));
      assert.equal(node.subjectAltName, 'URI:spiffe://shop.example/api, DNS:api');
      assert.equal(node.ca, false);
    }
  });

  it('refuses keys that are not uncompressed P-256 SPKIs', async () => {
    const root = await createRootCa(now);
    const p384 = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, [
      'sign',
      'verify',
    ]);
    const good = await spkiDer(
      (
        await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
          'sign',
          'verify',
        ])
      ).publicKey,
    );
    const offCurve = good.slice();
    offCurve[90] = (offCurve[90] ?? 0) ^ 1;
    for (const spki of [await spkiDer(p384.publicKey), good.subarray(0, 90), new Uint8Array(91)]) {
      assert.throws(() => agentSpki(spki), { code: 'COORDINATOR_KEY_INVALID' });
      await assert.rejects(
        issueLeaf(root.ca, {
          spkiDer: spki,
          trustDomain: 't',
          workload: 'w',
          instanceId: '00'.repeat(16),
          validityMs: 1000,
          now,
        }),
        { code: 'COORDINATOR_KEY_INVALID' },
      );
    }
    assert.equal(agentSpki(good), good);
    assert.deepEqual(p256Spki(good.subarray(26)), good);
    assert.throws(() => p256Spki(good.subarray(25)), { code: 'COORDINATOR_KEY_INVALID' });
    assert.throws(() => p256Spki(good.subarray(26, 90)), { code: 'COORDINATOR_KEY_INVALID' });
    // A point off the curve goes into no certificate.
    assert.throws(() => agentSpki(offCurve), { code: 'COORDINATOR_KEY_INVALID' });
  });

  it('onP256 agrees with OpenSSL on real points, near misses and random coordinates', () => {
    const nodeAccepts = (xy: Uint8Array): boolean => {
      try {
        createPublicKey({
          key: Buffer.from(p256Spki(Uint8Array.of(4, ...xy))),
          format: 'der',
          type: 'spki',
        });
        return true;
      } catch {
        return false;
      }
    };
    const p = Buffer.from(
      'ffffffff00000001000000000000000000000000ffffffffffffffffffffffff',
      'hex',
    );
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        fc.nat(63),
        fc.integer({ min: 0, max: 3 }),
        (random, at, kind) => {
          const real = new Uint8Array(createECDH('prime256v1').generateKeys().subarray(1));
          const tweaked = real.slice();
          tweaked[at] = (tweaked[at] as number) ^ 1;
          // x + p (out of range) has the same residue as x: refused all the same.
          const big = real.slice();
          big.set(p, 0);
          const xy = [real, tweaked, random, big][kind] as Uint8Array;
          assert.equal(onP256(xy), nodeAccepts(xy));
          if (kind === 0) assert.ok(onP256(xy));
        },
      ),
      { numRuns: 400 },
    );
    assert.equal(onP256(new Uint8Array(63)), false);
    assert.equal(onP256(new Uint8Array(64)), false);
  });

  it('DNS SANs: the workload name when it is a host name, localhost for external ingress', () => {
    assert.deepEqual(leafDnsNames('Web', []), ['web']);
    assert.deepEqual(leafDnsNames('my_app', [{ external: true }]), ['localhost']);
    assert.deepEqual(leafDnsNames('api', [{}, { external: false }]), ['api']);
  });

  it('refuses a CSR whose signature does not verify, garbage, and non-P-256 keys', async () => {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ]);
    const pem = await csrFor(keys);
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 1;
    await assert.rejects(spkiFromCsr(der.toString('base64')), { code: 'COORDINATOR_KEY_INVALID' });
    await assert.rejects(spkiFromCsr('not a csr'), { code: 'COORDINATOR_KEY_INVALID' });
    const p384 = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, [
      'sign',
      'verify',
    ]);
    const csr384 = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=agent',
      keys: p384,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
    });
    await assert.rejects(spkiFromCsr(csr384.toString('pem')), { code: 'COORDINATOR_KEY_INVALID' });
  });
});
