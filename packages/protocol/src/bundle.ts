/**
 * The activation bundle's encryption: a compact JWE (RFC 7516) with `alg` ECDH-ES (RFC 7518
 * §4.6, direct key agreement over X25519, RFC 8037) and `enc` A256GCM, to the agent's fresh
 * bundle key, the X25519 key the evidence's report data binds. Only the TEE that made the
 * evidence can open it.
 */
import { CompactEncrypt, compactDecrypt } from 'jose';
import { utf8 } from './bytes.js';
import { protocolError } from './error-codes.js';
import { ActivationBundleSchema, checkBody } from './api.js';
import type { ActivationBundle } from './api.js';

export const BUNDLE_CONTENT_TYPE = 'application/vnd.cloister.bundle+json';

/** Encrypts a bundle to the agent's bundle key (an X25519 public CryptoKey). */
export async function encryptBundle(
  bundle: ActivationBundle,
  bundleKey: CryptoKey,
): Promise<string> {
  const body = checkBody(ActivationBundleSchema, bundle, 'bundle');
  return new CompactEncrypt(utf8(JSON.stringify(body)))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', cty: BUNDLE_CONTENT_TYPE })
    .encrypt(bundleKey);
}

/**
 * Decrypts and validates a bundle with the agent's X25519 private key. Only ECDH-ES + A256GCM
 * without compression are accepted (no algorithm the sender chose freely); throws
 * BUNDLE_INVALID.
 */
export async function decryptBundle(
  jwe: string,
  bundlePrivateKey: CryptoKey,
): Promise<ActivationBundle> {
  let plaintext: Uint8Array;
  try {
    const r = await compactDecrypt(jwe, bundlePrivateKey, {
      keyManagementAlgorithms: ['ECDH-ES'],
      contentEncryptionAlgorithms: ['A256GCM'],
      // No `zip`: the coordinator never compresses (RFC 8725 §3.6), so a compressed bundle is
      // not one of its own.
      maxDecompressedLength: 0,
    });
    if (r.protectedHeader.cty !== BUNDLE_CONTENT_TYPE) throw new Error('wrong content type');
    plaintext = r.plaintext;
  } catch (cause) {
    throw protocolError('BUNDLE_INVALID', 'the bundle cannot be decrypted with the bundle key', {
      cause,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plaintext));
  } catch (cause) {
    throw protocolError('BUNDLE_INVALID', 'the bundle is not JSON', { cause });
  }
  try {
    return checkBody(ActivationBundleSchema, json, 'bundle');
  } catch (cause) {
    throw protocolError('BUNDLE_INVALID', 'the bundle does not match its schema', { cause });
  }
}
