/**
 * The evidence verifiers' ECDSA on node:crypto instead of WebCrypto: the same OpenSSL
 * verification without WebCrypto's per-call job and algorithm plumbing, which cost about a
 * third more CPU per P-256 verification on Node 20 (one per activation, more per hardware
 * quote). Installed by `createCoordinator` through `useEcdsaVerifier`; the evidence package
 * stays engine-neutral.
 */
import { KeyObject, verify } from 'node:crypto';
import type { EcdsaVerifier } from '@cloister/evidence';

/** Each imported key converted once (a cached certificate's key verifies many signatures). */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

export const nodeEcdsaVerify: EcdsaVerifier = (curve, key, signature, data) => {
  let k = keyObjects.get(key);
  if (k === undefined) {
    k = KeyObject.from(key);
    keyObjects.set(key, k);
  }
  try {
    return verify(
      curve === 'P-256' ? 'sha256' : 'sha384',
      data,
      { key: k, dsaEncoding: 'ieee-p1363' },
      signature,
    );
  } catch {
    // A signature OpenSSL cannot even decode does not verify (WebCrypto answers false too).
    return false;
  }
};
