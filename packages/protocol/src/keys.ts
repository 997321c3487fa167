/**
 * Owner and recovery public keys: PEM SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of the few key
 * types Cloister accepts. The type is recognised by the exact DER prefix of the
 * AlgorithmIdentifier and the exact total length, so a key with unexpected parameters (an
 * explicit curve, a compressed point, another algorithm under a familiar label) is refused
 * before any library sees it.
 */
import { arrayBufferView, fromPem } from './bytes.js';
import { protocolError } from './error-codes.js';

export type OwnerKeyType = 'P-256' | 'P-384' | 'Ed25519';
export type RecoveryKeyType = 'P-256' | 'P-384' | 'RSA';

const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

const EC_PREFIX: { type: 'P-256' | 'P-384' | 'Ed25519'; prefix: Uint8Array; length: number }[] = [
  // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes, uncompressed) }
  {
    type: 'P-256',
    prefix: hex('3059301306072a8648ce3d020106082a8648ce3d030107034200'),
    length: 91,
  },
  // SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING (97 bytes, uncompressed) }
  { type: 'P-384', prefix: hex('3076301006072a8648ce3d020106052b8104002203620004'), length: 120 },
  // SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (32 bytes) }
  { type: 'Ed25519', prefix: hex('302a300506032b6570032100'), length: 44 },
];
const RSA_ALG = hex('300d06092a864886f70d0101010500');

function startsWith(b: Uint8Array, p: Uint8Array, at = 0): boolean {
  if (b.length < at + p.length) return false;
  for (let i = 0; i < p.length; i++) if (b[at + i] !== p[i]) return false;
  return true;
}

/** The key type of a SubjectPublicKeyInfo DER, or undefined. */
export function spkiKeyType(der: Uint8Array): OwnerKeyType | 'RSA' | undefined {
  for (const k of EC_PREFIX) {
    if (der.length === k.length && startsWith(der, k.prefix)) {
      // P-256 prefix stops before the 0x04 point-format byte; require uncompressed points.
      if (k.type === 'P-256' && der[26] !== 4) return undefined;
      return k.type;
    }
  }
  // SEQUENCE (long form, 2 length bytes) { rsaEncryption NULL, BIT STRING ... }: 2048..4096 bits.
  if (der[0] === 0x30 && der[1] === 0x82 && startsWith(der, RSA_ALG, 4)) {
    const len = 4 + (((der[2] as number) << 8) | (der[3] as number));
    if (len === der.length && len >= 290 && len <= 560) return 'RSA';
  }
  return undefined;
}

function decode(pem: string, field: string): Uint8Array {
  try {
    return fromPem(pem, 'PUBLIC KEY', field);
  } catch (cause) {
    throw protocolError('OWNER_KEY_INVALID', `${field}: not a PEM public key`, {
      cause,
      details: { field },
    });
  }
}

/** The type of an owner key (PEM). Throws OWNER_KEY_INVALID for anything else. */
export function ownerKeyType(pem: string, field = 'publicKey'): OwnerKeyType {
  const t = spkiKeyType(decode(pem, field));
  if (t === undefined || t === 'RSA') {
    throw protocolError(
      'OWNER_KEY_INVALID',
      `${field}: owner keys must be ECDSA P-256, ECDSA P-384 or Ed25519`,
      { details: { field } },
    );
  }
  return t;
}

/** The type of a recovery key (PEM). Throws OWNER_KEY_INVALID for anything else. */
export function recoveryKeyType(pem: string, field = 'recovery key'): RecoveryKeyType {
  const t = spkiKeyType(decode(pem, field));
  if (t === undefined || t === 'Ed25519') {
    throw protocolError(
      'OWNER_KEY_INVALID',
      `${field}: recovery keys must be P-256, P-384 or RSA 2048-4096`,
      { details: { field } },
    );
  }
  return t;
}

/** Imports an owner key (PEM) for signature verification. */
export async function importOwnerKey(pem: string, field = 'publicKey'): Promise<CryptoKey> {
  const type = ownerKeyType(pem, field);
  const der = arrayBufferView(decode(pem, field));
  const alg = type === 'Ed25519' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: type };
  try {
    return await globalThis.crypto.subtle.importKey('spki', der, alg, true, ['verify']);
  } catch (cause) {
    throw protocolError('OWNER_KEY_INVALID', `${field}: not a valid ${type} public key`, {
      cause,
      details: { field },
    });
  }
}
