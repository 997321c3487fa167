/**
 * The activation bundle's encryption: a compact JWE (RFC 7516) with `alg` ECDH-ES (RFC 7518
 * §4.6, direct key agreement) and `enc` A256GCM, to the agent's fresh P-256 key, the same key
 * whose SPKI the evidence's report data binds. Only the TEE that made the evidence can open it.
 */
import { CompactEncrypt, compactDecrypt } from 'jose';
import { utf8 } from './bytes.js';
import { protocolError } from './error-codes.js';
import { ActivationBundleSchema, checkBody } from './api.js';
import type { ActivationBundle } from './api.js';

export const BUNDLE_CONTENT_TYPE = 'application/vnd.cloister.bundle+json';

/** Encrypts a bundle to the agent's public key (P-256 CryptoKey). */
export async function encryptBundle(
  bundle: ActivationBundle,
  agentPublicKey: CryptoKey,
): Promise<string> {
  const body = checkBody(ActivationBundleSchema, bundle, 'bundle');
  return new CompactEncrypt(utf8(JSON.stringify(body)))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', cty: BUNDLE_CONTENT_TYPE })
    .encrypt(agentPublicKey);
}

/**
 * Decrypts and validates a bundle with the agent's private key. Only ECDH-ES + A256GCM are
 * accepted (no algorithm the sender chose freely); throws BUNDLE_INVALID.
 */
export async function decryptBundle(
  jwe: string,
  agentPrivateKey: CryptoKey,
): Promise<ActivationBundle> {
  let plaintext: Uint8Array;
  try {
    const r = await compactDecrypt(jwe, agentPrivateKey, {
      keyManagementAlgorithms: ['ECDH-ES'],
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    if (r.protectedHeader.cty !== BUNDLE_CONTENT_TYPE) throw new Error('wrong content type');
    plaintext = r.plaintext;
  } catch (cause) {
    throw protocolError('BUNDLE_INVALID', 'the bundle cannot be decrypted with the agent key', {
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
