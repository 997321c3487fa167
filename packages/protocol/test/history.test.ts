import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  manifestHash,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  transitionHash,
  transitionSignedBytes,
  validateManifest,
  verifyHistory,
  verifyOwnerApprovals,
  verifyOwnerSignature,
  ZERO_HASH,
} from '@cloister/protocol';
import type { HistoryEntry, Manifest, OwnerSignature, TransitionKind } from '@cloister/protocol';
import { alice, bob, carol, sampleManifest } from './fixtures.js';

const code = (c: string) => (e: unknown) => isCloisterError(e) && e.code === c;
const webKey = (k: typeof alice) => k.privateKey.export({ format: 'jwk' });
async function cryptoKey(k: typeof alice): Promise<CryptoKey> {
  const jwk = webKey(k);
  const alg =
    jwk.crv === 'Ed25519' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: jwk.crv as string };
  return crypto.subtle.importKey('jwk', jwk, alg, false, ['sign']);
}

test('transition hash follows the documented layout', async () => {
  const t = {
    seq: 3,
    prevHash: 'ab'.repeat(32),
    manifestHash: 'cd'.repeat(32),
    kind: 'update' as const,
  };
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64BE(3n);
  const expected = createHash('sha256')
    .update(
      Buffer.concat([
        Buffer.from('cloister/transition/v1\0'),
        seq,
        Buffer.from(t.prevHash, 'hex'),
        Buffer.from(t.manifestHash, 'hex'),
        Buffer.from('update'),
      ]),
    )
    .digest('hex');
  assert.equal(await transitionHash(t), expected);
  assert.deepEqual(
    Buffer.from(transitionSignedBytes(expected)),
    Buffer.concat([
      Buffer.from('cloister/owner-signature/v1\0transition\0'),
      Buffer.from(expected, 'hex'),
    ]),
  );
});

async function buildHistory(): Promise<{
  entries: HistoryEntry[];
  manifests: Record<string, Manifest>;
}> {
  const m0 = validateManifest(sampleManifest());
  const raw1 = sampleManifest();
  raw1['trustDomain'] = 'shop2.example';
  const m1 = validateManifest({ ...raw1, owners: m0.owners, recovery: m0.recovery });
  const m2 = structuredClone(m1);
  (m2.packages['api'] as { minSvn: number }).minSvn = 4;
  const manifests: Record<string, Manifest> = {};
  const entries: HistoryEntry[] = [];
  let prev = ZERO_HASH;
  const steps: [Manifest, TransitionKind, (typeof alice)[]][] = [
    [m0, 'set', []],
    [m1, 'update', [alice, bob]],
    [m2, 'package-update', [bob]],
  ];
  for (const [i, [m, kind, signers]] of steps.entries()) {
    const h = await manifestHash(m);
    manifests[h] = m;
    const t = { seq: i, prevHash: prev, manifestHash: h, kind };
    const th = await transitionHash(t);
    const names = signers.map((s) => (s === alice ? 'alice' : 'bob'));
    const signatures: OwnerSignature[] = [];
    for (const [j, s] of signers.entries())
      signatures.push(
        await signAsOwner(transitionSignedBytes(th), names[j] as string, await cryptoKey(s)),
      );
    entries.push({ ...t, signatures, at: '2026-01-01T00:00:00Z' });
    prev = th;
  }
  return { entries, manifests };
}

test('a valid history verifies, with and without its manifests', async () => {
  const { entries, manifests } = await buildHistory();
  const r = await verifyHistory(entries, { manifests });
  assert.equal(r.length, 3);
  assert.equal(r.head, await transitionHash(entries[2] as HistoryEntry));
  assert.equal((await verifyHistory(entries)).head, r.head);
  assert.deepEqual(await verifyHistory([]), { head: ZERO_HASH, length: 0 });
});

test('tampering with the chain is detected', async () => {
  const { entries, manifests } = await buildHistory();
  const broken = async (es: HistoryEntry[], c = 'HISTORY_BROKEN', withManifests = false) =>
    assert.rejects(verifyHistory(es, withManifests ? { manifests } : {}), code(c));
  await broken(entries.slice(1)); // dropped the first entry
  await broken([entries[0], entries[2]] as HistoryEntry[]); // dropped a middle entry
  await broken([
    entries[0],
    { ...(entries[1] as HistoryEntry), seq: 5 },
    entries[2],
  ] as HistoryEntry[]);
  await broken([
    entries[0],
    { ...(entries[1] as HistoryEntry), manifestHash: 'ee'.repeat(32) },
    entries[2],
  ] as HistoryEntry[]);
  await broken([
    entries[0],
    { ...(entries[1] as HistoryEntry), kind: 'package-update' },
    entries[2],
  ] as HistoryEntry[]);
  await broken([
    entries[0],
    { ...(entries[1] as HistoryEntry), kind: 'set' },
    entries[2],
  ] as HistoryEntry[]);
  await broken([{ ...(entries[0] as HistoryEntry), prevHash: 'ab'.repeat(32) }]);
  // A manifest that does not hash to its entry.
  const h1 = (entries[1] as HistoryEntry).manifestHash;
  const swapped = {
    ...manifests,
    [h1]: { ...(manifests[h1] as Manifest), trustDomain: 'evil.example' },
  };
  await assert.rejects(verifyHistory(entries, { manifests: swapped }), code('HISTORY_BROKEN'));
});

test('owner approvals: threshold, roles, forged and duplicated signatures', async () => {
  const { entries, manifests } = await buildHistory();
  const e1 = entries[1] as HistoryEntry;
  // Only one of two required signatures.
  await assert.rejects(
    verifyHistory(
      [entries[0], { ...e1, signatures: e1.signatures.slice(0, 1) }] as HistoryEntry[],
      { manifests },
    ),
    code('OWNER_THRESHOLD_NOT_MET'),
  );
  // The same owner twice counts once.
  const a = e1.signatures[0] as OwnerSignature;
  await assert.rejects(
    verifyHistory([entries[0], { ...e1, signatures: [a, a] }] as HistoryEntry[], { manifests }),
    code('OWNER_THRESHOLD_NOT_MET'),
  );
  // A signature by alice relabelled as bob's.
  await assert.rejects(
    verifyHistory(
      [
        entries[0],
        { ...e1, signatures: [a, { ...a, owner: 'bob', alg: 'EdDSA' }] },
      ] as HistoryEntry[],
      {
        manifests,
      },
    ),
    code('OWNER_SIGNATURE_INVALID'),
  );
  // Algorithm substitution.
  await assert.rejects(
    verifyHistory(
      [
        entries[0],
        { ...e1, signatures: [{ ...a, alg: 'ES384' }, e1.signatures[1]] },
      ] as HistoryEntry[],
      {
        manifests,
      },
    ),
    code('OWNER_SIGNATURE_INVALID'),
  );
  // carol (package:web only) cannot approve a full update; an unknown owner neither.
  const m0 = manifests[(entries[0] as HistoryEntry).manifestHash] as Manifest;
  const th = await transitionHash(e1);
  const carolKey = await crypto.subtle.importKey(
    'jwk',
    carol.privateKey.export({ format: 'jwk' }),
    { name: 'ECDSA', namedCurve: 'P-384' },
    false,
    ['sign'],
  );
  const carolSig = await signAsOwner(transitionSignedBytes(th), 'carol', carolKey);
  await assert.rejects(
    verifyOwnerApprovals(m0.owners ?? {}, [...e1.signatures, carolSig], transitionSignedBytes(th), {
      threshold: 2,
      eligible: (r) => r.includes('update'),
    }),
    code('OWNER_SIGNATURE_INVALID'),
  );
  await assert.rejects(
    verifyOwnerApprovals(
      m0.owners ?? {},
      [{ ...carolSig, owner: 'mallory' }],
      transitionSignedBytes(th),
      {
        threshold: 1,
        eligible: () => true,
      },
    ),
    code('OWNER_SIGNATURE_INVALID'),
  );
  // No owners: immutable.
  await assert.rejects(
    verifyOwnerApprovals({}, [], transitionSignedBytes(th), { threshold: 0, eligible: () => true }),
    code('OWNER_THRESHOLD_NOT_MET'),
  );
  // An owner with role "update" may approve a package update alone.
  const e2 = entries[2] as HistoryEntry;
  const aliceKey = await cryptoKey(alice);
  const th2 = await transitionHash(e2);
  const alone = await signAsOwner(transitionSignedBytes(th2), 'alice', aliceKey);
  assert.equal(
    (
      await verifyHistory([entries[0], e1, { ...e2, signatures: [alone] }] as HistoryEntry[], {
        manifests,
      })
    ).length,
    3,
  );
});

test('package updates may only raise minimums', async () => {
  const { entries, manifests } = await buildHistory();
  const e2 = entries[2] as HistoryEntry;
  const m2 = manifests[e2.manifestHash] as Manifest;
  const lowered = structuredClone(m2);
  (lowered.packages['api'] as { minSvn: number }).minSvn = 2;
  const changedMore = structuredClone(m2);
  changedMore.trustDomain = 'other.example';
  for (const bad of [lowered, changedMore]) {
    const h = await manifestHash(bad);
    const t = { ...e2, manifestHash: h };
    const sig = await signAsOwner(
      transitionSignedBytes(await transitionHash(t)),
      'bob',
      await cryptoKey(bob),
    );
    await assert.rejects(
      verifyHistory([entries[0], entries[1], { ...t, signatures: [sig] }] as HistoryEntry[], {
        manifests: { ...manifests, [h]: bad },
      }),
      code('HISTORY_BROKEN'),
    );
  }
});

test('owner signatures over secrets bind deployment, name, version and value', async () => {
  const root = new Uint8Array(100).fill(1);
  const d = await secretDigest({
    rootCaDer: root,
    name: 'dbPassword',
    version: 2,
    value: new TextEncoder().encode('pw'),
  });
  const nameBytes = Buffer.from('dbPassword');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(nameBytes.length);
  const ver = Buffer.alloc(8);
  ver.writeBigUInt64BE(2n);
  const sha = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest();
  const expected = sha(
    Buffer.concat([
      Buffer.from('cloister/secret/v1\0'),
      sha(root),
      len,
      nameBytes,
      ver,
      sha(Buffer.from('pw')),
    ]),
  );
  assert.equal(Buffer.from(d).toString('hex'), expected.toString('hex'));
  const msg = ownerSignedBytes('secret', d);
  const sig = await signAsOwner(msg, 'alice', await cryptoKey(alice));
  const pemA = alice.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  await verifyOwnerSignature(sig, msg, pemA);
  const other = await secretDigest({
    rootCaDer: root,
    name: 'dbPassword',
    version: 3,
    value: new TextEncoder().encode('pw'),
  });
  await assert.rejects(
    verifyOwnerSignature(sig, ownerSignedBytes('secret', other), pemA),
    code('OWNER_SIGNATURE_INVALID'),
  );
  // The same digest signed for another purpose does not verify as a secret write.
  await assert.rejects(
    verifyOwnerSignature(sig, ownerSignedBytes('transition', d), pemA),
    code('OWNER_SIGNATURE_INVALID'),
  );
  await assert.rejects(
    verifyOwnerSignature({ ...sig, signature: 'not base64!' }, msg, pemA),
    code('OWNER_SIGNATURE_INVALID'),
  );
});
