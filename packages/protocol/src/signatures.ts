/**
 * Owner signatures: detached signatures by manifest owners over a documented byte string.
 *
 *   signed bytes = "cloister/owner-signature/v1" || 0x00 || purpose (ASCII) || 0x00 || digest
 *
 * where `purpose` is `transition` (digest = the 32-byte transition hash, see history.ts) or
 * `secret` (digest = `secretDigest(...)`). The purpose stops a signature made for one use from
 * being replayed as another. Algorithms: ES256 (P-256 with SHA-256), ES384 (P-384 with SHA-384),
 * both as raw r||s (IEEE P1363, as in JOSE), and EdDSA (Ed25519). The signature travels as
 * base64url.
 */
import {
  arrayBufferView,
  concatBytes,
  fromBase64Url,
  fromHex,
  sha256,
  toBase64Url,
  uintBe,
  utf8,
} from './bytes.js';
import { protocolError } from './error-codes.js';
import { importOwnerKey, ownerKeyType } from './keys.js';
import type { Owner } from './manifest/schema.js';

export type OwnerSignatureAlg = 'ES256' | 'ES384' | 'EdDSA';
export type SignaturePurpose = 'transition' | 'secret';

/** One owner's detached signature. */
export interface OwnerSignature {
  /** The owner's name in the manifest that authorises the action. */
  readonly owner: string;
  readonly alg: OwnerSignatureAlg;
  /** base64url: raw r||s for ECDSA, 64 bytes for Ed25519. */
  readonly signature: string;
}

export const OWNER_SIGNATURE_LABEL = 'cloister/owner-signature/v1';
export const SECRET_DIGEST_LABEL = 'cloister/secret/v1';

/** The exact bytes an owner signs for `purpose` over a 32-byte digest. */
export function ownerSignedBytes(purpose: SignaturePurpose, digest: Uint8Array): Uint8Array {
  if (digest.length !== 32) throw new RangeError('digest must be 32 bytes');
  return concatBytes(
    utf8(OWNER_SIGNATURE_LABEL),
    Uint8Array.of(0),
    utf8(purpose),
    Uint8Array.of(0),
    digest,
  );
}

/** The bytes owners sign to approve a transition (hash as lowercase hex). */
export function transitionSignedBytes(transitionHashHex: string): Uint8Array {
  return ownerSignedBytes('transition', fromHex(transitionHashHex, 'transitionHash'));
}

/**
 * Digest of a user-defined secret write:
 *   SHA-256("cloister/secret/v1" || 0x00 || SHA-256(root CA DER) || u32be(len name) || name
 *           || u64be(version) || SHA-256(value))
 * The root CA pins the deployment (no replay to another coordinator), the version makes each
 * write single-use (no rollback to an older value by replaying an older signed write).
 */
export async function secretDigest(input: {
  readonly rootCaDer: Uint8Array;
  readonly name: string;
  readonly version: number;
  readonly value: Uint8Array;
}): Promise<Uint8Array> {
  const name = utf8(input.name);
  return sha256(
    concatBytes(
      utf8(SECRET_DIGEST_LABEL),
      Uint8Array.of(0),
      await sha256(input.rootCaDer),
      uintBe(name.length, 4),
      name,
      uintBe(input.version, 8),
      await sha256(input.value),
    ),
  );
}

function algFor(key: CryptoKey): {
  alg: OwnerSignatureAlg;
  params: AlgorithmIdentifier | EcdsaParams;
} {
  const a = key.algorithm as EcKeyAlgorithm;
  if (a.name === 'Ed25519') return { alg: 'EdDSA', params: { name: 'Ed25519' } };
  if (a.name === 'ECDSA' && a.namedCurve === 'P-256')
    return { alg: 'ES256', params: { name: 'ECDSA', hash: 'SHA-256' } };
  if (a.name === 'ECDSA' && a.namedCurve === 'P-384')
    return { alg: 'ES384', params: { name: 'ECDSA', hash: 'SHA-384' } };
  throw protocolError('OWNER_KEY_INVALID', 'owner keys are ECDSA P-256, P-384 or Ed25519');
}

/** Signs `message` (from `ownerSignedBytes`) with an owner's private key. */
export async function signAsOwner(
  message: Uint8Array,
  owner: string,
  privateKey: CryptoKey,
): Promise<OwnerSignature> {
  const { alg, params } = algFor(privateKey);
  const sig = await globalThis.crypto.subtle.sign(params, privateKey, arrayBufferView(message));
  return { owner, alg, signature: toBase64Url(new Uint8Array(sig)) };
}

const ALG_OF_KEY = { 'P-256': 'ES256', 'P-384': 'ES384', Ed25519: 'EdDSA' } as const;

/**
 * Verifies one signature with the owner's PEM key. Throws OWNER_SIGNATURE_INVALID. The `alg`
 * must be the one the key type implies: stops algorithm substitution.
 */
export async function verifyOwnerSignature(
  sig: OwnerSignature,
  message: Uint8Array,
  publicKeyPem: string,
): Promise<void> {
  const type = ownerKeyType(publicKeyPem);
  const bad = (why: string): never => {
    throw protocolError('OWNER_SIGNATURE_INVALID', `signature of "${sig.owner}": ${why}`, {
      details: { owner: sig.owner },
    });
  };
  if (sig.alg !== ALG_OF_KEY[type]) bad(`alg ${String(sig.alg)} does not fit a ${type} key`);
  let raw: Uint8Array = new Uint8Array();
  try {
    raw = fromBase64Url(sig.signature, 'signature');
  } catch {
    bad('not base64url');
  }
  const key = await importOwnerKey(publicKeyPem);
  const params =
    type === 'Ed25519'
      ? { name: 'Ed25519' }
      : { name: 'ECDSA', hash: type === 'P-256' ? 'SHA-256' : 'SHA-384' };
  let ok = false;
  try {
    ok = await globalThis.crypto.subtle.verify(
      params,
      key,
      arrayBufferView(raw),
      arrayBufferView(message),
    );
  } catch {
    ok = false;
  }
  if (!ok) bad('does not verify');
}

/**
 * Checks that at least `threshold` distinct owners for whom `eligible(roles)` holds signed
 * `message`. Every signature given must be valid and by an eligible owner (a bad one is an
 * error, not ignored); several signatures by one owner count once. Returns the approving
 * owners. With no eligible owner at all this always fails: an empty owner list is immutable.
 */
export async function verifyOwnerApprovals(
  owners: Readonly<Record<string, Owner>>,
  signatures: readonly OwnerSignature[],
  message: Uint8Array,
  rule: { readonly threshold: number; readonly eligible: (roles: readonly string[]) => boolean },
): Promise<string[]> {
  const approved = new Set<string>();
  for (const sig of signatures) {
    const owner = Object.hasOwn(owners, sig.owner) ? owners[sig.owner] : undefined;
    if (owner === undefined) {
      throw protocolError('OWNER_SIGNATURE_INVALID', `"${sig.owner}" is not an owner`, {
        details: { owner: sig.owner },
      });
    }
    if (!rule.eligible(owner.roles)) {
      throw protocolError(
        'OWNER_SIGNATURE_INVALID',
        `owner "${sig.owner}" lacks the role for this action`,
        {
          details: { owner: sig.owner },
        },
      );
    }
    await verifyOwnerSignature(sig, message, owner.publicKey);
    approved.add(sig.owner);
  }
  const threshold = Math.max(1, rule.threshold);
  if (approved.size < threshold) {
    throw protocolError(
      'OWNER_THRESHOLD_NOT_MET',
      `${approved.size} of the ${threshold} required owner approval(s)`,
      { details: { approved: [...approved], threshold } },
    );
  }
  return [...approved];
}
