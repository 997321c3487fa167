import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readVector, requireVectors } from '@cloister/testkit';
import { isCloisterError, VerificationError } from '@cloister/errors';
import { parseCertificates, trustAnchor, verifyChain } from '@cloister/evidence';

const dir = requireVectors();

test(
  'VCEK chains to the pinned Milan ARK, not to the Genoa ARK',
  { skip: dir === undefined },
  async () => {
    const [ask, ark] = parseCertificates(readVector('snp/amd-ask-ark-milan-vcek.pem'));
    const [, genoaArk] = parseCertificates(readVector('snp/amd-ask-ark-genoa-vcek.pem'));
    const [vcek] = parseCertificates(readVector('snp/gsev-milan-v2.vcek.der'));
    assert.ok(ask && ark && vcek && genoaArk);
    const milan = { name: 'ARK-Milan', certificate: ark };
    const ok = await verifyChain([vcek, ask], {
      roots: [milan],
      now: new Date('2025-01-01T00:00:00Z'),
      label: 'VCEK chain',
    });
    assert.equal(ok.path.length, 3);
    await assert.rejects(
      verifyChain([vcek, ask], {
        roots: [{ name: 'ARK-Genoa', certificate: genoaArk }],
        now: new Date('2025-01-01T00:00:00Z'),
        label: 'VCEK chain',
      }),
      (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
    );
    await assert.rejects(
      verifyChain([vcek, ask], {
        roots: [milan],
        now: new Date('2030-01-01T00:00:00Z'),
        label: 'VCEK chain',
      }),
      (e: unknown) => isCloisterError(e) && e.code === 'CHAIN_EXPIRED',
    );
  },
);

test('a root is trusted by key, never by name', { skip: dir === undefined }, async () => {
  const intel = trustAnchor('Intel SGX Root CA', readVector('sgx/intel-sgx-root-ca.der'));
  const [testRoot] = parseCertificates(readVector('tdx/intel-qvl-sample-TEST-root-ca.pem'));
  assert.ok(testRoot);
  assert.equal(testRoot.subject, intel.certificate.subject);
  await assert.rejects(
    verifyChain([testRoot], {
      roots: [intel],
      now: new Date('2026-01-01T00:00:00Z'),
      label: 'PCK chain',
    }),
    (e: unknown) => isCloisterError(e) && e.code === 'CHAIN_UNTRUSTED_ROOT',
  );
});
