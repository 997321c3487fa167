/**
 * WebCrypto helpers used by every verifier. Engine-neutral: only `globalThis.crypto.subtle`.
 * Intel and AMD sign with raw r||s ECDSA, which is exactly WebCrypto's ECDSA signature format.
 */
import { arrayBufferView as buf, concatBytes } from '@cloister/bytes';
import { evidenceError } from './error-codes.js';

export { sha256, sha384, sha512 } from '@cloister/bytes';

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

export type EcCurve = 'P-256' | 'P-384';
const HASH_OF: Record<EcCurve, string> = { 'P-256': 'SHA-256', 'P-384': 'SHA-384' };
const COORD_LEN: Record<EcCurve, number> = { 'P-256': 32, 'P-384': 48 };

/** Imports an ECDSA public key for verification; a key WebCrypto refuses is malformed input. */
async function importEcdsaKey(
  format: 'raw' | 'spki',
  curve: EcCurve,
  bytes: Uint8Array,
  field: string,
): Promise<CryptoKey> {
  try {
    return await subtle().importKey(
      format,
      buf(bytes),
      { name: 'ECDSA', namedCurve: curve },
      false,
      ['verify'],
    );
  } catch (cause) {
    // Not a point on the curve: an attacker-chosen key cannot be imported, so this is
    // malformed input.
    throw evidenceError('EVIDENCE_BAD_FIELD', `${field}: not a valid ${curve} public key`, {
      cause,
      details: { field },
    });
  }
}

/** Imports an uncompressed EC public key given as x||y (no 0x04 prefix), as Intel quotes carry it. */
export async function importEcRawXY(
  curve: EcCurve,
  xy: Uint8Array,
  field: string,
): Promise<CryptoKey> {
  if (xy.length !== 2 * COORD_LEN[curve]) {
    throw evidenceError('EVIDENCE_BAD_FIELD', `${field}: expected ${2 * COORD_LEN[curve]} bytes`, {
      details: { field },
    });
  }
  return importEcdsaKey('raw', curve, concatBytes(Uint8Array.of(4), xy), field);
}

/** Imports a SubjectPublicKeyInfo (DER) ECDSA key. */
export async function importEcSpki(
  curve: EcCurve,
  spki: Uint8Array,
  field: string,
): Promise<CryptoKey> {
  return importEcdsaKey('spki', curve, spki, field);
}

/**
 * Verifies a raw r||s ECDSA signature over `data` with the curve's hash (SHA-256 for P-256,
 * SHA-384 for P-384). The signature has the curve's length (checked before the call).
 */
export type EcdsaVerifier = (
  curve: EcCurve,
  key: CryptoKey,
  signature: Uint8Array,
  data: Uint8Array,
) => boolean | Promise<boolean>;

const webCryptoVerify: EcdsaVerifier = (curve, key, signature, data) =>
  subtle().verify({ name: 'ECDSA', hash: HASH_OF[curve] }, key, buf(signature), buf(data));

let verifier: EcdsaVerifier = webCryptoVerify;

/**
 * Installs the ECDSA verifier every verifier of this package uses (undefined: WebCrypto again).
 * For a host whose native crypto verifies faster than its WebCrypto (on Node 20, node:crypto
 * saves about a third of each verification); the package itself stays engine-neutral.
 */
export function useEcdsaVerifier(v: EcdsaVerifier | undefined): void {
  verifier = v ?? webCryptoVerify;
}

/** Verifies a raw r||s ECDSA signature; the hash is the curve's (SHA-256 for P-256, SHA-384 for P-384). */
export async function ecdsaVerify(
  curve: EcCurve,
  key: CryptoKey,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  if (signature.length !== 2 * COORD_LEN[curve]) return false;
  return verifier(curve, key, signature, data);
}
