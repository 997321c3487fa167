/**
 * Memoised X.509 work shared by every path (pki/path.ts): certificates split into their
 * signature-relevant parts (`RawCert`, RFC 5280 section 4.1), parsed certificates and CRLs
 * (`CertInfo`, `CrlInfo`) keyed by their exact DER bytes, and issuer-signature results keyed by
 * the exact DER of the signed object plus the issuer's exact SubjectPublicKeyInfo. Keys are the
 * bytes themselves (memo.ts), never a digest or a part of them: a cache keyed by the signature
 * value alone would accept an altered TBSCertificate carrying a previously verified signature.
 *
 * Splitting comes first and is cheap (the bounded DER reader, no X.509 library): a path's
 * signatures are verified over the raw bytes before any certificate is handed to the full
 * parser, so an altered certificate is refused before it costs a parse.
 *
 * Only successes are cached; every cache is bounded (cleared when full) so hostile input cannot
 * grow memory without limit.
 */
import { evidenceError } from '../error-codes.js';
import { BoundedMemo, bytesKey } from '../memo.js';
import { DER_BIT_STRING, DER_SEQUENCE, readDer, readDerChildren } from './der.js';
import {
  ecdsaSignatureParts,
  parseSignatureAlgorithm,
  verifySignature,
  type SignatureAlgorithm,
} from './signature.js';
import { parseCertificate, parseCrl, type Certificate, type Crl } from './x509.js';

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

function normalizeSerial(s: string): string {
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

/**
 * True when `crl` carries a valid signature by `issuer`'s key. CRLs are verified by the X.509
 * library (any algorithm it supports, RSASSA-PSS included): unlike certificates they are parsed
 * before any check anyway, to read their entries.
 */
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
 * full X.509 parser. Names are compared as exact DER bytes (the vendors' chains encode them
 * identically in subject and issuer).
 */
export interface RawCert {
  readonly der: Uint8Array;
  readonly derKey: string;
  readonly tbs: Uint8Array;
  /** The signature algorithm, identical in the TBSCertificate and outside it. */
  readonly algorithm: SignatureAlgorithm;
  /** The signatureValue bits (a DER ECDSA-Sig-Value for ECDSA, the RSA signature for RSA). */
  readonly signature: Uint8Array;
  readonly subjectKey: string;
  readonly issuerKey: string;
  readonly spki: Uint8Array;
  readonly spkiKey: string;
}

const rawMemo = new BoundedMemo<RawCert>(2048);

function certBad(field: string, why: string): never {
  throw evidenceError('CERT_MALFORMED', `${field}: ${why}`, { details: { field } });
}

/**
 * Splits a DER certificate (memoised by its exact bytes). Throws CERT_MALFORMED (or a DER
 * PARSE error) for anything that is not a certificate with a supported signature algorithm.
 */
export function rawCert(input: Uint8Array, field: string): RawCert {
  const derKey = bytesKey(input);
  const hit = rawMemo.get(derKey);
  if (hit !== undefined) return hit;
  // A copy: the memo entry must keep the bytes its key names, whatever the caller does later.
  const der = new Uint8Array(input);
  const top = readDer(der, 0, field);
  if (top.tag !== DER_SEQUENCE || top.end !== der.length) certBad(field, 'not a DER certificate');
  const [tbsNode, alg, sigBits, ...rest] = readDerChildren(top.content, field, 3);
  if (tbsNode === undefined || alg === undefined || sigBits === undefined || rest.length > 0) {
    certBad(field, 'not a DER certificate');
  }
  if (tbsNode.tag !== DER_SEQUENCE) certBad(field, 'not a DER certificate');
  const algorithm = parseSignatureAlgorithm(alg, `${field}.signatureAlgorithm`);
  if (sigBits.tag !== DER_BIT_STRING || sigBits.content[0] !== 0)
    certBad(field, 'bad signature bit string');
  const signature = sigBits.content.subarray(1);
  // An ECDSA signature must at least be a well-formed ECDSA-Sig-Value (checked against the
  // issuer's curve when verified).
  if (algorithm.kind === 'ecdsa') ecdsaSignatureParts(signature, `${field}.signature`);
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
  // The signed algorithm must equal the outer one, byte for byte (RFC 5280 section 4.1.1.2).
  if (innerAlg.tag !== alg.tag || bytesKey(innerAlg.content) !== bytesKey(alg.content)) {
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
    algorithm,
    signature,
    subjectKey: bytesKey(subject.content),
    issuerKey: bytesKey(issuer.content),
    spki,
    spkiKey: bytesKey(spki),
  });
}

/** True when `child`'s signature verifies with `issuer`'s key (memoised on success). */
export async function rawSignedBy(child: RawCert, issuer: RawCert): Promise<boolean> {
  const k = `${issuer.spkiKey}\u0003${child.derKey}`;
  if (sigMemo.get(k) === true) return true;
  const ok = await verifySignature(
    child.algorithm,
    issuer.spki,
    issuer.spkiKey,
    child.signature,
    child.tbs,
  );
  if (ok) sigMemo.set(k, true);
  return ok;
}
