/**
 * The shared certification path builder (src/pki/path.ts) through the public `verifyChain` /
 * `checkCrl` layer, on synthetic root -> intermediate -> leaf hierarchies: every refusal has a
 * case here that passes only while its check is in place. The DCAP, SNP and sim verifiers use
 * the same builder; their own chain refusals are tested in dcap-vectors, snp-synthetic,
 * snp-verify and sim-report.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isCloisterError, VerificationError } from '@cloister/errors';
import { checkCrl, parseCertificate, trustAnchor, verifyChain } from '@cloister/evidence';
import type { ChainOptions, Certificate } from '@cloister/evidence';
import {
  ALG,
  der,
  hierarchy,
  makeCert,
  makeCrl,
  makeRoot,
  NOW,
  resign,
  type Ca,
} from './pki-fixtures.js';

function hasCode(code: string, layer?: string) {
  return (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (layer !== undefined) assert.ok(e instanceof VerificationError && e.layer === layer);
    return true;
  };
}

const anchor = (ca: Ca) => trustAnchor('test root', der(ca.cert));
const opts = (root: Ca, extra: Partial<ChainOptions> = {}): ChainOptions => ({
  roots: [anchor(root)],
  now: NOW,
  label: 'test chain',
  ...extra,
});
const certs = (...cas: Ca[]): Certificate[] => cas.map((c) => c.cert);

test('a chain verifies to the pinned root, with or without the root carried', async () => {
  const h = await hierarchy();
  const a = anchor(h.root);
  for (const chain of [
    certs(h.leaf, h.inter),
    certs(h.leaf, h.inter, h.root),
    certs(h.leaf, h.root, h.inter),
  ]) {
    const v = await verifyChain(chain, { roots: [a], now: NOW, label: 'test chain' });
    assert.equal(v.root, a);
    assert.deepEqual(
      v.path.map((c) => c.subject),
      [h.leaf.cert.subject, h.inter.cert.subject, h.root.cert.subject],
    );
  }
  // The pinned root alone is a chain of one.
  assert.equal((await verifyChain(certs(h.root), opts(h.root))).path.length, 1);
});

test('CHAIN_INCOMPLETE: no certificate, or an issuer that was not supplied', async () => {
  const h = await hierarchy();
  await assert.rejects(verifyChain([], opts(h.root)), hasCode('CHAIN_INCOMPLETE', 'CHAIN'));
  await assert.rejects(
    verifyChain(certs(h.leaf), opts(h.root)),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
});

test('CHAIN_SIGNATURE_INVALID: an issuer with the right name but another key', async () => {
  const h = await hierarchy();
  // Same subject as the real intermediate, signed by the real root, but another key: the leaf's
  // signature does not verify under it.
  const twin = await makeCert(h.root, h.inter.cert.subject, { serial: '09' });
  await assert.rejects(
    verifyChain(certs(h.leaf, twin), opts(h.root)),
    hasCode('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
  );
  // An intermediate the pinned root did not sign, bearing the names of the real one.
  const fakeRoot = await makeRoot(h.root.cert.subject);
  const forged = await makeCert(fakeRoot, h.inter.cert.subject, { keys: h.inter.keys });
  await assert.rejects(
    verifyChain(certs(h.leaf, forged), opts(h.root)),
    hasCode('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
  );
});

test('certificates given but not on the path are ignored, never trusted', async () => {
  // verifyChain's contract (and SNP's): intermediates are candidates, not claims. DCAP, whose
  // chains must be exactly the path, is tested in dcap-vectors.
  const h = await hierarchy();
  const other = await hierarchy({ prefix: 'Other' });
  const unrelated = await makeCert(h.root, 'CN=Unrelated', { serial: '0a' });
  // An intermediate the builder cannot use (ecdsa-with-SHA1) is as good as absent.
  const sha1 = Uint8Array.of(0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01);
  const unusable = parseCertificate(
    await resign(der(other.inter.cert), { alg: sha1, signTbs: () => new Uint8Array(8) }),
  );
  const v = await verifyChain(
    [h.leaf.cert, other.inter.cert, h.inter.cert, other.root.cert, unrelated.cert, unusable],
    opts(h.root),
  );
  assert.deepEqual(
    v.path.map((c) => c.subject),
    [h.leaf.cert.subject, h.inter.cert.subject, h.root.cert.subject],
  );
  // Without the real intermediate, the others do not stand in for it.
  await assert.rejects(
    verifyChain([h.leaf.cert, other.inter.cert, unrelated.cert, unusable], opts(h.root)),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
});

test('CHAIN_UNTRUSTED_ROOT: the path ends in a self-signed certificate whose key is not pinned', async () => {
  const h = await hierarchy();
  // An impostor hierarchy with exactly the pinned names: trusted by key, never by name.
  const impostor = await hierarchy();
  assert.equal(impostor.root.cert.subject, h.root.cert.subject);
  await assert.rejects(
    verifyChain(certs(impostor.leaf, impostor.inter, impostor.root), opts(h.root)),
    hasCode('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
  );
  // A self-signed certificate on its own that is not pinned.
  await assert.rejects(
    verifyChain(certs(impostor.root), opts(h.root)),
    hasCode('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
  );
  // A root re-issued with the pinned key (other bytes, same key) is the pinned root.
  const reissued = await makeRoot(h.root.cert.subject, { keys: h.root.keys, serial: '77' });
  const v = await verifyChain(certs(h.leaf, h.inter, reissued), opts(h.root));
  assert.equal(v.path.length, 3);
});

test('CHAIN_EXPIRED: every certificate on the path is checked at `now`', async () => {
  const past = {
    notBefore: new Date('2020-01-01T00:00:00Z'),
    notAfter: new Date('2025-06-01T00:00:00Z'),
  };
  const future = {
    notBefore: new Date('2027-01-01T00:00:00Z'),
    notAfter: new Date('2030-01-01T00:00:00Z'),
  };
  for (const [where, o] of [
    ['leaf expired', { leaf: past }],
    ['intermediate expired', { inter: past }],
    ['root expired', { root: past }],
    ['leaf not yet valid', { leaf: future }],
    ['intermediate not yet valid', { inter: future }],
  ] as const) {
    const h = await hierarchy(o);
    await assert.rejects(
      verifyChain(certs(h.leaf, h.inter), opts(h.root)),
      hasCode('CHAIN_EXPIRED', 'CHAIN'),
      where,
    );
    // The same chain is valid at a time inside every period (so only `now` made it fail).
    const inside = where.includes('expired')
      ? new Date('2025-03-01T00:00:00Z')
      : new Date('2028-01-01T00:00:00Z');
    await verifyChain(certs(h.leaf, h.inter), opts(h.root, { now: inside }));
  }
});

test('a carried root edited to extend its validity is refused: its self-signature breaks', async () => {
  const h = await hierarchy({
    root: {
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2025-06-01T00:00:00Z'),
    },
  });
  await assert.rejects(
    verifyChain(certs(h.leaf, h.inter, h.root), opts(h.root)),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
  // The same root with its notAfter moved to 2027 (same key, same name, signature unchanged).
  const text = Buffer.from(der(h.root.cert)).toString('latin1');
  assert.equal(text.split('250601000000Z').length, 2);
  const edited = parseCertificate(
    new Uint8Array(Buffer.from(text.replace('250601000000Z', '270601000000Z'), 'latin1')),
  );
  assert.equal(edited.notAfter.getUTCFullYear(), 2027);
  // As the top of a path, its key pinned: its self-signature no longer verifies.
  await assert.rejects(
    verifyChain([edited], opts(h.root)),
    hasCode('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
  );
  // Beside a chain, the pinned root is used and the edited copy ignored: still expired.
  await assert.rejects(
    verifyChain([h.leaf.cert, h.inter.cert, edited], opts(h.root)),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
});

test('CRLs: revoke only what their issuer signed, when signed by it and current', async () => {
  const h = await hierarchy({ leaf: { serial: '05' }, inter: { serial: '04' } });
  const chain = certs(h.leaf, h.inter);
  // The intermediate revokes the leaf; the root revokes the intermediate.
  await assert.rejects(
    verifyChain(chain, opts(h.root, { crls: [await makeCrl(h.inter, { revoke: ['05'] })] })),
    hasCode('CHAIN_REVOKED', 'CHAIN'),
  );
  await assert.rejects(
    verifyChain(chain, opts(h.root, { crls: [await makeCrl(h.root, { revoke: ['04'] })] })),
    hasCode('CHAIN_REVOKED', 'CHAIN'),
  );
  // The root's CRL listing the leaf's serial says nothing about the leaf (the root did not sign
  // it), nor does a clean CRL, nor a revocation dated after `now`.
  await verifyChain(
    chain,
    opts(h.root, {
      crls: [await makeCrl(h.root, { revoke: ['05'] }), await makeCrl(h.inter, { revoke: ['7f'] })],
    }),
  );
  await verifyChain(
    chain,
    opts(h.root, {
      crls: [
        await makeCrl(h.inter, { revoke: ['05'], revokedAt: new Date('2027-01-01T00:00:00Z') }),
      ],
    }),
  );
  // A CRL of an issuer that is not on the path is ignored.
  const other = await hierarchy({ prefix: 'Other' });
  await verifyChain(
    chain,
    opts(h.root, { crls: [await makeCrl(other.inter, { revoke: ['05'] })] }),
  );

  // Forged: the intermediate's name, another key.
  await assert.rejects(
    verifyChain(
      chain,
      opts(h.root, {
        crls: [await makeCrl(h.inter, { revoke: [], signer: other.inter.keys.privateKey })],
      }),
    ),
    hasCode('COLLATERAL_SIGNATURE_INVALID', 'COLLATERAL'),
  );
  // Not current: past its nextUpdate, or before its thisUpdate.
  for (const window of [
    { nextUpdate: new Date('2025-06-01T00:00:00Z') },
    { thisUpdate: new Date('2027-01-01T00:00:00Z') },
  ]) {
    await assert.rejects(
      verifyChain(chain, opts(h.root, { crls: [await makeCrl(h.inter, window)] })),
      hasCode('COLLATERAL_EXPIRED', 'COLLATERAL'),
    );
  }
});

test('checkCrl: signature by the issuer, window, then the certificate', async () => {
  const h = await hierarchy({ leaf: { serial: '05' } });
  const other = await hierarchy({ prefix: 'Other' });
  const run = async (crl: Awaited<ReturnType<typeof makeCrl>>) =>
    checkCrl(crl, h.inter.cert, h.leaf.cert, NOW, 'test');
  await run(await makeCrl(h.inter));
  await assert.rejects(run(await makeCrl(h.inter, { revoke: ['05'] })), hasCode('CHAIN_REVOKED'));
  await assert.rejects(
    run(await makeCrl(h.inter, { signer: other.inter.keys.privateKey })),
    hasCode('COLLATERAL_SIGNATURE_INVALID'),
  );
  await assert.rejects(
    run(await makeCrl(h.inter, { nextUpdate: new Date('2025-06-01T00:00:00Z') })),
    hasCode('COLLATERAL_EXPIRED'),
  );
});

test('CERT_MALFORMED: an unsupported signature algorithm; POLICY_INVALID: no valid time', async () => {
  const h = await hierarchy();
  // The leaf re-signed with ECDSA, but its algorithm identifiers saying ecdsa-with-SHA1.
  const sha1 = Uint8Array.of(0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01);
  const leaf = await resign(der(h.leaf.cert), { alg: sha1, signTbs: () => new Uint8Array(8) });
  await assert.rejects(
    verifyChain([parseCertificate(leaf), h.inter.cert], opts(h.root)),
    hasCode('CERT_MALFORMED', 'PARSE'),
  );
  // Not a signed AlgorithmIdentifier equal to the outer one.
  const mixed = await resign(der(h.leaf.cert), {
    alg: ALG.ecdsa('SHA-256'),
    outerAlg: ALG.ecdsa('SHA-384'),
    signTbs: () => Uint8Array.of(0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01),
  });
  await assert.rejects(
    verifyChain([parseCertificate(mixed), h.inter.cert], opts(h.root)),
    hasCode('CERT_MALFORMED', 'PARSE'),
  );
  await assert.rejects(
    verifyChain(certs(h.leaf, h.inter), opts(h.root, { now: new Date('not a date') })),
    hasCode('POLICY_INVALID'),
  );
});
