/**
 * Key files for layer-key wrapping: PEM (SPKI, PKCS#8, PKCS#1, SEC1), DER or JWK, RSA or EC
 * P-256/P-384/P-521, as ocicrypt's `jwe:` recipients accept them (ocicrypt `utils/utils.go`
 * ParsePublicKey / ParsePrivateKey).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { imageError } from './error-codes.js';

/**
 * Where an agent finds the private key of an image encrypted to a user's key, by default: the
 * manifest file path its workload's `files` deliver the key secret to (docs/images.md).
 */
export const IMAGE_KEY_FILE = '/run/cloister/image-key.pem';

/** JWE key-management algorithms ocicrypt writes and reads (keywrap/jwe). */
export type KeyWrapAlg =
  'RSA-OAEP' | 'RSA-OAEP-256' | 'ECDH-ES+A128KW' | 'ECDH-ES+A192KW' | 'ECDH-ES+A256KW';

export const KEY_WRAP_ALGS: readonly KeyWrapAlg[] = [
  'RSA-OAEP',
  'RSA-OAEP-256',
  'ECDH-ES+A128KW',
  'ECDH-ES+A192KW',
  'ECDH-ES+A256KW',
];

/** A public key to wrap layer keys to, with the algorithm ocicrypt would pick for it. */
export interface WrapRecipient {
  readonly key: KeyObject;
  readonly alg: KeyWrapAlg;
}

const EC_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

function checkKind(key: KeyObject, file: string): void {
  const t = key.asymmetricKeyType;
  if (t === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    // Stops downgrade to keys that can be factored: 2048 is the floor every current policy sets.
    if (bits < 2048)
      throw imageError('IMAGE_KEY_INVALID', `${file}: RSA keys must have at least 2048 bits`, {
        details: { file, bits },
      });
    return;
  }
  if (t === 'ec' && EC_CURVES.has(key.asymmetricKeyDetails?.namedCurve ?? '')) return;
  throw imageError(
    'IMAGE_KEY_INVALID',
    `${file}: only RSA and EC P-256/384/521 keys are supported`,
    {
      details: { file, type: t, curve: key.asymmetricKeyDetails?.namedCurve },
    },
  );
}

function asJwk(bytes: Uint8Array): Record<string, unknown> | undefined {
  const text = Buffer.from(bytes).toString('utf8').trim();
  if (!text.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function isPem(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, 64)).toString('latin1').includes('-----BEGIN');
}

/**
 * Parses a public key (or a private key, whose public half is used) and picks the wrapping
 * algorithm like ocicrypt: RSA → RSA-OAEP, EC → ECDH-ES+A256KW; a JWK's `alg` overrides.
 */
export function loadPublicKey(bytes: Uint8Array, file = 'key'): WrapRecipient {
  const jwk = asJwk(bytes);
  let key: KeyObject;
  try {
    if (jwk !== undefined) key = createPublicKey({ key: jwk as never, format: 'jwk' });
    else if (isPem(bytes)) key = createPublicKey(Buffer.from(bytes));
    else {
      try {
        key = createPublicKey({ key: Buffer.from(bytes), format: 'der', type: 'spki' });
      } catch {
        key = createPublicKey({ key: Buffer.from(bytes), format: 'der', type: 'pkcs1' });
      }
    }
  } catch (cause) {
    throw imageError('IMAGE_KEY_INVALID', `${file}: not a public key`, {
      cause,
      details: { file },
    });
  }
  checkKind(key, file);
  const jwkAlg = typeof jwk?.alg === 'string' ? jwk.alg : undefined;
  let alg: KeyWrapAlg = key.asymmetricKeyType === 'rsa' ? 'RSA-OAEP' : 'ECDH-ES+A256KW';
  if (jwkAlg !== undefined) {
    const ok =
      key.asymmetricKeyType === 'rsa'
        ? jwkAlg.startsWith('RSA-OAEP')
        : jwkAlg.startsWith('ECDH-ES+');
    if (!ok || !(KEY_WRAP_ALGS as readonly string[]).includes(jwkAlg))
      throw imageError(
        'IMAGE_KEY_INVALID',
        `${file}: JWK alg ${jwkAlg} is not usable for wrapping`,
        {
          details: { file, alg: jwkAlg },
        },
      );
    alg = jwkAlg as KeyWrapAlg;
  }
  return { key, alg };
}

/** Parses a private key used to unwrap layer keys (PEM, DER PKCS#8/PKCS#1/SEC1, or JWK). */
export function loadPrivateKey(bytes: Uint8Array, file = 'key'): KeyObject {
  const jwk = asJwk(bytes);
  let key: KeyObject;
  try {
    if (jwk !== undefined) key = createPrivateKey({ key: jwk as never, format: 'jwk' });
    else if (isPem(bytes)) key = createPrivateKey(Buffer.from(bytes));
    else {
      const der = Buffer.from(bytes);
      const attempts = ['pkcs8', 'pkcs1', 'sec1'] as const;
      let found: KeyObject | undefined;
      for (const type of attempts) {
        try {
          found = createPrivateKey({ key: der, format: 'der', type });
          break;
        } catch {
          /* try the next encoding */
        }
      }
      if (found === undefined) throw new Error('no DER encoding matched');
      key = found;
    }
  } catch (cause) {
    throw imageError('IMAGE_KEY_INVALID', `${file}: not a private key`, {
      cause,
      details: { file },
    });
  }
  checkKind(key, file);
  return key;
}
