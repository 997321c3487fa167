/**
 * Memoised X.509 work for the DCAP verifier (RFC 5280 section 6.1 signature step only): parsed
 * certificates and CRLs keyed by their exact DER bytes, and issuer-signature results keyed by the
 * exact DER of the signed object plus the issuer's exact SubjectPublicKeyInfo. Keys are the
 * bytes themselves (as a one-byte-per-char string), never a digest or a part of them: a cache
 * keyed by the signature value alone would accept an altered TBSCertificate carrying a
 * previously verified signature.
 *
 * Only successes are cached; every cache is bounded (cleared when full) so hostile input cannot
 * grow memory without limit.
 */
import { ecdsaVerify, importEcSpki } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import { DER_INTEGER, DER_SEQUENCE, readDer, readDerChildren } from './der.js';

const DER_BIT_STRING = 0x03;
import { parseCertificate, parseCrl, type Certificate, type Crl } from '../pki/chain.js';

const LATIN1 = new TextDecoder('latin1');

/** The exact bytes as a string usable as a Map key (windows-1252 decoding is one-to-one). */
export function bytesKey(b: Uint8Array): string {
  return LATIN1.decode(b);
}

/** A small bounded memo (cleared when full: simple, and enough against unbounded growth). */
export class BoundedMemo<V> {
  readonly #map = new Map<string, V>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  get(k: string): V | undefined {
    return this.#map.get(k);
  }
  set(k: string, v: V): V {
    if (this.#map.size >= this.#max) this.#map.clear();
    this.#map.set(k, v);
    return v;
  }
}

/** A certificate with the facts the verifier reads on every call, precomputed. */
export interface CertInfo {
  readonly cert: Certificate;
  readonly der: Uint8Array;
  readonly derKey: string;
  /** Exact SPKI DER as a key string. */
  readonly spkiKey: string;
  readonly subject: string;
  readonly issuer: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Serial as lowercase hex without leading zeros. */
  readonly serial: string;
  /** Extension values (extnValue contents) by OID. */
  readonly extensions: ReadonlyMap<string, Uint8Array>;
}

const certMemo = new BoundedMemo<CertInfo>(2048);

export function normalizeSerial(s: string): string {
  const t = s.toLowerCase().replace(/^0+/, '');
  return t === '' ? '0' : t;
}

/** Parses (once per exact DER) a certificate. */
export function certInfo(der: Uint8Array, field: string): CertInfo {
  const derKey = bytesKey(der);
  const hit = certMemo.get(derKey);
  if (hit !== undefined) return hit;
  const cert = parseCertificate(der, field);
  let notBefore: number;
  let notAfter: number;
  let subject: string;
  let issuer: string;
  let serial: string;
  let spki: Uint8Array;
  const extensions = new Map<string, Uint8Array>();
  try {
    notBefore = cert.notBefore.getTime();
    notAfter = cert.notAfter.getTime();
    subject = cert.subject;
    issuer = cert.issuer;
    serial = normalizeSerial(cert.serialNumber);
    spki = new Uint8Array(cert.publicKey.rawData);
    // Extensions are decoded lazily by the library: decode them now, inside the guard, so a
    // malformed extension is a PARSE error here and never an exception later.
    for (const e of cert.extensions) {
      // RFC 5280 section 4.2: an extension appears at most once.
      if (extensions.has(e.type)) throw new Error(`duplicate extension ${e.type}`);
      extensions.set(e.type, new Uint8Array(e.value));
    }
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: unreadable certificate fields`, {
      cause,
      details: { field },
    });
  }
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) {
    throw evidenceError('CERT_MALFORMED', `${field}: bad validity`, { details: { field } });
  }
  return certMemo.set(derKey, {
    cert,
    der: new Uint8Array(der),
    derKey,
    spkiKey: bytesKey(spki),
    subject,
    issuer,
    notBefore,
    notAfter,
    serial,
    extensions,
  });
}

const sigMemo = new BoundedMemo<true>(4096);

/** A CRL with its revoked serials indexed. */
export interface CrlInfo {
  readonly crl: Crl;
  readonly derKey: string;
  readonly issuer: string;
  readonly thisUpdate: number;
  /** Infinity when the CRL names no next update. */
  readonly nextUpdate: number;
  /** Revoked serial (normalised) -> revocation time. */
  readonly revoked: ReadonlyMap<string, number>;
}

const crlMemo = new BoundedMemo<CrlInfo>(256);

export function crlInfo(der: Uint8Array, field: string): CrlInfo {
  const derKey = bytesKey(der);
  const hit = crlMemo.get(derKey);
  if (hit !== undefined) return hit;
  const crl = parseCrl(der, field);
  const revoked = new Map<string, number>();
  let thisUpdate: number;
  let nextUpdate: number;
  try {
    for (const e of crl.entries)
      revoked.set(normalizeSerial(e.serialNumber), e.revocationDate.getTime());
    thisUpdate = crl.thisUpdate.getTime();
    nextUpdate = crl.nextUpdate === undefined ? Infinity : crl.nextUpdate.getTime();
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: unreadable CRL fields`, {
      cause,
      details: { field },
    });
  }
  return crlMemo.set(derKey, { crl, derKey, issuer: crl.issuer, thisUpdate, nextUpdate, revoked });
}

/** True when `crl` carries a valid signature by `issuer`'s key. */
export async function crlSignedBy(crl: CrlInfo, issuer: CertInfo): Promise<boolean> {
  const k = `${issuer.spkiKey}\u0002${crl.derKey}`;
  if (sigMemo.get(k) === true) return true;
  let ok = false;
  try {
    ok = await crl.crl.verify({ publicKey: issuer.cert.publicKey });
  } catch {
    ok = false;
  }
  if (ok) sigMemo.set(k, true);
  return ok;
}

/** The value (extnValue content) of an extension, or undefined. */
export function extensionValue(c: CertInfo, oid: string): Uint8Array | undefined {
  return c.extensions.get(oid);
}

/**
 * The signature-relevant parts of a DER certificate (RFC 5280 section 4.1), read with the
 * bounded DER reader: enough to build and verify a path before handing the certificate to the
 * full X.509 parser. Names are compared as exact DER bytes (Intel's chains encode them
 * identically in subject and issuer). Only ecdsa-with-SHA256 is accepted, as every Intel
 * SGX/TDX certificate uses it.
 */
export interface RawCert {
  readonly der: Uint8Array;
  readonly derKey: string;
  readonly tbs: Uint8Array;
  /** r||s, 64 bytes. */
  readonly signature: Uint8Array;
  readonly subjectKey: string;
  readonly issuerKey: string;
  readonly spki: Uint8Array;
  readonly spkiKey: string;
}

const ECDSA_SHA256_ALG = '300a06082a8648ce3d040302';
const rawMemo = new BoundedMemo<RawCert>(2048);

function certBad(field: string, why: string): never {
  throw evidenceError('CERT_MALFORMED', `${field}: ${why}`, { details: { field } });
}

/** DER ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }) to 64-byte r||s. */
function ecdsaDerToRaw(sig: Uint8Array, field: string): Uint8Array {
  const seq = readDer(sig, 0, field);
  if (seq.tag !== DER_SEQUENCE || seq.end !== sig.length) certBad(field, 'bad ECDSA signature');
  const parts = readDerChildren(seq.content, field, 2);
  const out = new Uint8Array(64);
  if (parts.length !== 2) certBad(field, 'bad ECDSA signature');
  parts.forEach((p, i) => {
    let v = p.content;
    if (
      p.tag !== DER_INTEGER ||
      v.length === 0 ||
      v.length > 33 ||
      ((v[0] as number) & 0x80) !== 0
    ) {
      certBad(field, 'bad ECDSA signature integer');
    }
    if (v.length > 1 && v[0] === 0 && ((v[1] as number) & 0x80) === 0)
      certBad(field, 'non-minimal integer');
    if (v.length === 33) v = v.subarray(1);
    out.set(v, i * 32 + 32 - v.length);
  });
  return out;
}

/** Splits a DER certificate (memoised by its exact bytes). Throws CERT_MALFORMED. */
export function rawCert(der: Uint8Array, field: string): RawCert {
  const derKey = bytesKey(der);
  const hit = rawMemo.get(derKey);
  if (hit !== undefined) return hit;
  const top = readDer(der, 0, field);
  if (top.tag !== DER_SEQUENCE || top.end !== der.length) certBad(field, 'not a DER certificate');
  const [tbsNode, alg, sigBits, ...rest] = readDerChildren(top.content, field, 3);
  if (tbsNode === undefined || alg === undefined || sigBits === undefined || rest.length > 0) {
    certBad(field, 'not a DER certificate');
  }
  if (
    tbsNode.tag !== DER_SEQUENCE ||
    bytesKey(alg.content) !== bytesKey(ECDSA_ALG_CONTENT) ||
    alg.tag !== DER_SEQUENCE
  ) {
    certBad(field, 'not an ecdsa-with-SHA256 certificate');
  }
  if (sigBits.tag !== DER_BIT_STRING || sigBits.content[0] !== 0)
    certBad(field, 'bad signature bit string');
  const tbs = top.content.subarray(0, tbsNode.end);
  const f = readDerChildren(tbsNode.content, `${field}.tbs`, 10);
  let k = 0;
  if (f[0]?.tag === 0xa0) k = 1; // explicit version
  const innerAlg = f[k + 1];
  const issuer = f[k + 2];
  const subject = f[k + 4];
  const spkiNode = f[k + 5];
  if (
    innerAlg === undefined ||
    issuer === undefined ||
    subject === undefined ||
    spkiNode === undefined
  ) {
    certBad(field, 'incomplete TBSCertificate');
  }
  // The signed algorithm must equal the outer one (RFC 5280 section 4.1.1.2).
  if (innerAlg.tag !== DER_SEQUENCE || bytesKey(innerAlg.content) !== bytesKey(ECDSA_ALG_CONTENT)) {
    certBad(field, 'signature algorithm mismatch');
  }
  if (
    issuer.tag !== DER_SEQUENCE ||
    subject.tag !== DER_SEQUENCE ||
    spkiNode.tag !== DER_SEQUENCE
  ) {
    certBad(field, 'bad TBSCertificate');
  }
  // Child TLVs are contiguous: the SPKI TLV starts where the subject TLV ends.
  const spki = tbsNode.content.subarray(subject.end, spkiNode.end);
  return rawMemo.set(derKey, {
    der,
    derKey,
    tbs,
    signature: ecdsaDerToRaw(sigBits.content.subarray(1), `${field}.signature`),
    subjectKey: bytesKey(subject.content),
    issuerKey: bytesKey(issuer.content),
    spki,
    spkiKey: bytesKey(spki),
  });
}

const ECDSA_ALG_CONTENT = fromHexConst(ECDSA_SHA256_ALG).subarray(2);
function fromHexConst(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const verifyKeys = new BoundedMemo<CryptoKey>(1024);

/** True when `child`'s signature verifies with `issuer`'s key (memoised on success). */
export async function rawSignedBy(child: RawCert, issuer: RawCert): Promise<boolean> {
  const k = `${issuer.spkiKey}\u0003${child.derKey}`;
  if (sigMemo.get(k) === true) return true;
  let key = verifyKeys.get(issuer.spkiKey);
  if (key === undefined) {
    try {
      key = verifyKeys.set(
        issuer.spkiKey,
        await importEcSpki('P-256', issuer.spki, 'issuer public key'),
      );
    } catch {
      return false;
    }
  }
  const ok = await ecdsaVerify('P-256', key, child.signature, child.tbs);
  if (ok) sigMemo.set(k, true);
  return ok;
}
