import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import {
  createIntermediateCa,
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
    const leaf = await issueLeaf(inter.ca, {
      spkiDer: spki,
      trustDomain: 'shop.example',
      workload: 'frontend',
      instanceId: '00'.repeat(16),
      validityMs: 86_400_000,
      now,
    });
    assert.equal(leaf.notAfter.getTime(), now.getTime() + 86_400_000);
    const san = leaf.cert.getExtension(x509.SubjectAlternativeNameExtension);
    assert.deepEqual(
      san?.names.items.map((n) => [n.type, n.value]),
      [['url', 'spiffe://shop.example/frontend']],
    );
    assert.ok(await leaf.cert.verify({ publicKey: inter.ca.cert.publicKey, date: now }));
    assert.ok(await inter.ca.cert.verify({ publicKey: root.ca.cert.publicKey, date: now }));
    const bc = inter.ca.cert.getExtension(x509.BasicConstraintsExtension);
    assert.equal(bc?.ca, true);
    assert.equal(leaf.cert.getExtension(x509.BasicConstraintsExtension)?.ca, false);
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
