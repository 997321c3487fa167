/**
 * Certificate and CRL signature algorithms, read from the exact DER of an AlgorithmIdentifier,
 * and signature verification over exact bytes (RFC 5280 sections 4.1.1.2 and 5.1.1.2), for the
 * path builder and the CRL checks (pki/cert-cache.ts `rawSignedBy`, `crlSignedBy`).
 * Supported, as the TEE vendors and the sim use them:
 *  - ECDSA with SHA-256/384/512 (RFC 5758 section 3.2): Intel SGX/TDX and the sim sign with
 *    ecdsa-with-SHA256 on P-256; keys on P-256 and P-384;
 *  - RSASSA-PSS (RFC 4055 section 3.1): AMD signs ARK, ASK/ASVK and VCEK/VLEK with SHA-384,
 *    MGF1-SHA-384 and a 48-byte salt;
 *  - RSA PKCS #1 v1.5 with SHA-256/384/512 (RFC 4055 section 5).
 * Anything else (SHA-1, MD5, other curves, Ed25519) is refused as unsupported.
 *
 * The RSASSA-PSS hash, mask generation function and salt length are the ones the signer
 * declared in the parameters, never defaults guessed by the verifier: a PSS signature checked
 * with another salt length does not verify. Only MGF1 with the signature's own hash is accepted
 * (what WebCrypto and every vendor use).
 *
 * Verification uses WebCrypto, which every engine has (the package is engine-neutral), except
 * ECDSA whose hash is the curve's own (P-256/SHA-256, P-384/SHA-384, all real chains): that
 * goes through crypto.ts `ecdsaVerify` and so gets node:crypto's fast path where the engine is
 * Node. Verified signatures are memoised by the caller, so an RSA check runs once per distinct
 * certificate or CRL and issuer key.
 */
import { arrayBufferView as buf } from '@cloister/bytes';
import { COORD_LEN, CURVE_HASH, ecdsaVerify, importEcSpki, type EcCurve } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import { BoundedMemo } from '../memo.js';
import {
  DER_BIT_STRING,
  DER_INTEGER,
  DER_NULL,
  DER_OID,
  DER_SEQUENCE,
  derOidText,
  derSmallUint,
  readDer,
  readDerChildren,
  type DerNode,
} from './der.js';

export type SignatureHash = 'SHA-256' | 'SHA-384' | 'SHA-512';

/** A supported certificate signature algorithm, with its parameters. */
export type SignatureAlgorithm =
  | { readonly kind: 'ecdsa'; readonly name: string; readonly hash: SignatureHash }
  | { readonly kind: 'rsa-pkcs1'; readonly name: string; readonly hash: SignatureHash }
  | {
      readonly kind: 'rsa-pss';
      readonly name: string;
      readonly hash: SignatureHash;
      readonly saltLength: number;
    };

const ECDSA_OIDS: Readonly<Record<string, SignatureHash>> = {
  '1.2.840.10045.4.3.2': 'SHA-256',
  '1.2.840.10045.4.3.3': 'SHA-384',
  '1.2.840.10045.4.3.4': 'SHA-512',
};
const RSA_PKCS1_OIDS: Readonly<Record<string, SignatureHash>> = {
  '1.2.840.113549.1.1.11': 'SHA-256',
  '1.2.840.113549.1.1.12': 'SHA-384',
  '1.2.840.113549.1.1.13': 'SHA-512',
};
const HASH_OIDS: Readonly<Record<string, SignatureHash>> = {
  '2.16.840.1.101.3.4.2.1': 'SHA-256',
  '2.16.840.1.101.3.4.2.2': 'SHA-384',
  '2.16.840.1.101.3.4.2.3': 'SHA-512',
};
const RSASSA_PSS_OID = '1.2.840.113549.1.1.10';
const MGF1_OID = '1.2.840.113549.1.1.8';
const RSA_KEY_OID = '1.2.840.113549.1.1.1';
const EC_KEY_OID = '1.2.840.10045.2.1';
const CURVE_OIDS: Readonly<Record<string, EcCurve>> = {
  '1.2.840.10045.3.1.7': 'P-256',
  '1.3.132.0.34': 'P-384',
};

function malformed(field: string, why: string): never {
  throw evidenceError('CERT_MALFORMED', `${field}: ${why}`, { details: { field } });
}

function lookup<T>(table: Readonly<Record<string, T>>, oid: string): T | undefined {
  return Object.hasOwn(table, oid) ? table[oid] : undefined;
}

/** The one TLV inside an EXPLICIT context tag. */
function explicitInner(n: DerNode, field: string): DerNode {
  const inner = readDer(n.content, 0, field);
  if (inner.end !== n.content.length) malformed(field, 'trailing bytes in an explicit tag');
  return inner;
}

/** A hash AlgorithmIdentifier (parameters absent or NULL, RFC 4055 section 2.1). */
function hashAlgorithm(n: DerNode, field: string): SignatureHash {
  if (n.tag !== DER_SEQUENCE) malformed(field, 'not an AlgorithmIdentifier');
  const [oid, params, ...rest] = readDerChildren(n.content, field, 3);
  if (oid === undefined || rest.length > 0) malformed(field, 'not an AlgorithmIdentifier');
  if (params !== undefined && (params.tag !== DER_NULL || params.content.length !== 0)) {
    malformed(field, 'hash parameters must be absent or NULL');
  }
  const text = derOidText(oid, field);
  const hash = lookup(HASH_OIDS, text);
  if (hash === undefined) malformed(field, `unsupported hash ${text}`);
  return hash;
}

/**
 * RSASSA-PSS-params (RFC 4055 section 3.1): [0] hash, [1] mask generation, [2] salt length,
 * [3] trailer field, each optional and in that order. The defaults (SHA-1, MGF1-SHA-1) are
 * refused; the salt length defaults to 20 and the trailer field must be 1.
 */
function pssParameters(n: DerNode, field: string): SignatureAlgorithm {
  if (n.tag !== DER_SEQUENCE) malformed(field, 'RSASSA-PSS parameters must be a SEQUENCE');
  let hash: SignatureHash | undefined;
  let mgfHash: SignatureHash | undefined;
  let saltLength = 20;
  let last = -1;
  for (const child of readDerChildren(n.content, field, 4)) {
    const index = child.tag - 0xa0;
    if (index < 0 || index > 3 || index <= last) malformed(field, 'bad RSASSA-PSS parameters');
    last = index;
    const inner = explicitInner(child, field);
    if (index === 0) hash = hashAlgorithm(inner, `${field}.hashAlgorithm`);
    if (index === 1) {
      if (inner.tag !== DER_SEQUENCE) malformed(field, 'bad maskGenAlgorithm');
      const [oid, params, ...rest] = readDerChildren(inner.content, `${field}.maskGenAlgorithm`, 3);
      if (oid === undefined || params === undefined || rest.length > 0)
        malformed(field, 'bad maskGenAlgorithm');
      if (derOidText(oid, `${field}.maskGenAlgorithm`) !== MGF1_OID)
        malformed(field, 'unsupported mask generation function');
      mgfHash = hashAlgorithm(params, `${field}.maskGenAlgorithm.hash`);
    }
    if (index === 2) saltLength = derSmallUint(inner, DER_INTEGER, `${field}.saltLength`);
    if (index === 3 && derSmallUint(inner, DER_INTEGER, `${field}.trailerField`) !== 1)
      malformed(field, 'unsupported RSASSA-PSS trailer field');
  }
  if (hash === undefined || mgfHash === undefined)
    malformed(field, 'RSASSA-PSS with SHA-1 is not supported');
  if (mgfHash !== hash) malformed(field, 'RSASSA-PSS MGF1 hash differs from the signature hash');
  return { kind: 'rsa-pss', name: `RSASSA-PSS(${hash}, salt ${saltLength})`, hash, saltLength };
}

/**
 * Reads a signature AlgorithmIdentifier (the TLV). Throws CERT_MALFORMED for an unsupported
 * algorithm or parameters that do not follow its specification.
 */
export function parseSignatureAlgorithm(n: DerNode, field: string): SignatureAlgorithm {
  if (n.tag !== DER_SEQUENCE) malformed(field, 'not an AlgorithmIdentifier');
  const [oid, params, ...rest] = readDerChildren(n.content, field, 3);
  if (oid === undefined || oid.tag !== DER_OID || rest.length > 0)
    malformed(field, 'not an AlgorithmIdentifier');
  const text = derOidText(oid, field);
  const ecdsa = lookup(ECDSA_OIDS, text);
  if (ecdsa !== undefined) {
    // RFC 5758 section 3.2: the parameters MUST be absent.
    if (params !== undefined) malformed(field, 'ECDSA parameters must be absent');
    return { kind: 'ecdsa', name: `ecdsa-with-${ecdsa.replace('-', '')}`, hash: ecdsa };
  }
  const pkcs1 = lookup(RSA_PKCS1_OIDS, text);
  if (pkcs1 !== undefined) {
    if (params !== undefined && (params.tag !== DER_NULL || params.content.length !== 0))
      malformed(field, 'RSA parameters must be NULL');
    return {
      kind: 'rsa-pkcs1',
      name: `${pkcs1.replace('-', '').toLowerCase()}WithRSAEncryption`,
      hash: pkcs1,
    };
  }
  if (text === RSASSA_PSS_OID) {
    if (params === undefined) malformed(field, 'RSASSA-PSS with SHA-1 is not supported');
    return pssParameters(params, field);
  }
  return malformed(field, `unsupported signature algorithm ${text}`);
}

/**
 * The r and s of a DER ECDSA-Sig-Value (RFC 5758 section 3.2), without sign octets. Throws
 * CERT_MALFORMED unless both are minimal, positive INTEGERs no longer than a P-521 coordinate.
 */
export function ecdsaSignatureParts(sig: Uint8Array, field: string): [Uint8Array, Uint8Array] {
  const seq = readDer(sig, 0, field);
  if (seq.tag !== DER_SEQUENCE || seq.end !== sig.length) malformed(field, 'bad ECDSA signature');
  const parts = readDerChildren(seq.content, field, 2);
  if (parts.length !== 2) malformed(field, 'bad ECDSA signature');
  return parts.map((p) => {
    const v = p.content;
    if (p.tag !== DER_INTEGER || v.length === 0 || v.length > 67 || ((v[0] as number) & 0x80) !== 0)
      malformed(field, 'bad ECDSA signature integer');
    if (v.length > 1 && v[0] === 0 && ((v[1] as number) & 0x80) === 0)
      malformed(field, 'non-minimal integer');
    return v[0] === 0 && v.length > 1 ? v.subarray(1) : v;
  }) as [Uint8Array, Uint8Array];
}

/** r||s of `size`-byte halves (WebCrypto's ECDSA format), or undefined when r or s is too long. */
function ecdsaP1363(sig: Uint8Array, size: number): Uint8Array | undefined {
  const [r, s] = ecdsaSignatureParts(sig, 'signature');
  if (r.length > size || s.length > size) return undefined;
  const out = new Uint8Array(2 * size);
  out.set(r, size - r.length);
  out.set(s, 2 * size - s.length);
  return out;
}

type KeyType = { readonly kind: 'ec'; readonly curve: EcCurve } | { readonly kind: 'rsa' };

/** The key type of a SubjectPublicKeyInfo, or undefined when it is not a supported key. */
function keyTypeOf(spki: Uint8Array): KeyType | undefined {
  const top = readDer(spki, 0, 'spki');
  if (top.tag !== DER_SEQUENCE || top.end !== spki.length) return undefined;
  const [alg, bits, ...rest] = readDerChildren(top.content, 'spki', 3);
  if (alg?.tag !== DER_SEQUENCE || bits?.tag !== DER_BIT_STRING || rest.length > 0)
    return undefined;
  const [oid, params] = readDerChildren(alg.content, 'spki.algorithm', 3);
  if (oid === undefined) return undefined;
  const text = derOidText(oid, 'spki.algorithm');
  if (text === RSA_KEY_OID) return { kind: 'rsa' };
  if (text !== EC_KEY_OID || params?.tag !== DER_OID) return undefined;
  const curve = lookup(CURVE_OIDS, derOidText(params, 'spki.curve'));
  return curve === undefined ? undefined : { kind: 'ec', curve };
}

const keyTypes = new BoundedMemo<KeyType | null>(1024);
const keys = new BoundedMemo<CryptoKey>(1024);

async function importRsa(
  spki: Uint8Array,
  spkiKey: string,
  name: 'RSA-PSS' | 'RSASSA-PKCS1-v1_5',
  hash: SignatureHash,
): Promise<CryptoKey> {
  const k = `${name}/${hash}\u0000${spkiKey}`;
  return (
    keys.get(k) ??
    keys.set(
      k,
      await globalThis.crypto.subtle.importKey('spki', buf(spki), { name, hash }, false, [
        'verify',
      ]),
    )
  );
}

/**
 * True when `signature` (the signatureValue bits) over `data` verifies with the key of
 * `issuerSpki` under `alg`. Never throws: a key or signature that cannot even be used is a
 * signature that does not verify. `issuerSpkiKey` is `bytesKey(issuerSpki)`, for the memos.
 */
export async function verifySignature(
  alg: SignatureAlgorithm,
  issuerSpki: Uint8Array,
  issuerSpkiKey: string,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  try {
    let type = keyTypes.get(issuerSpkiKey);
    if (type === undefined) type = keyTypes.set(issuerSpkiKey, keyTypeOf(issuerSpki) ?? null);
    if (type === null) return false;
    const subtle = globalThis.crypto.subtle;
    if (alg.kind === 'ecdsa') {
      if (type.kind !== 'ec') return false;
      const raw = ecdsaP1363(signature, COORD_LEN[type.curve]);
      if (raw === undefined) return false;
      const k = `ECDSA\u0000${issuerSpkiKey}`;
      const key =
        keys.get(k) ?? keys.set(k, await importEcSpki(type.curve, issuerSpki, 'issuer key'));
      if (CURVE_HASH[type.curve] === alg.hash) return await ecdsaVerify(type.curve, key, raw, data);
      return await subtle.verify({ name: 'ECDSA', hash: alg.hash }, key, buf(raw), buf(data));
    }
    if (type.kind !== 'rsa') return false;
    if (alg.kind === 'rsa-pss') {
      const key = await importRsa(issuerSpki, issuerSpkiKey, 'RSA-PSS', alg.hash);
      return await subtle.verify(
        { name: 'RSA-PSS', saltLength: alg.saltLength },
        key,
        buf(signature),
        buf(data),
      );
    }
    const key = await importRsa(issuerSpki, issuerSpkiKey, 'RSASSA-PKCS1-v1_5', alg.hash);
    return await subtle.verify({ name: 'RSASSA-PKCS1-v1_5' }, key, buf(signature), buf(data));
  } catch {
    return false;
  }
}
