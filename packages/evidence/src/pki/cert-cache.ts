/**
 * Memoised X.509 work shared by every path (pki/path.ts): certificates split into their
 * signature-relevant parts (`RawCert`, RFC 5280 section 4.1), parsed certificates and CRLs
 * (`CertInfo`, `CrlInfo`) keyed by their exact DER bytes, and issuer-signature results keyed by
 * the exact DER of the signed object plus the issuer's exact SubjectPublicKeyInfo. Keys are the
 * bytes themselves (memo.ts), never a digest or a part of them: a cache keyed by the signature
 * value alone would accept an altered TBSCertificate carrying a previously verified signature.
 *
 * Certificates and CRLs have the same signed shape (RFC 5280 sections 4.1 and 5.1: the signed
 * data, the signature algorithm, the signature value) and their signatures are checked the same
 * way: split with the bounded DER reader (no X.509 library), the signed algorithm equal to the
 * outer one, and verified over the exact signed bytes by signature.ts. A path's certificate
 * signatures are verified before any certificate is handed to the full parser, so an altered
 * certificate is refused before it costs a parse; a CRL is parsed first (its issuer and entries
 * are needed to apply it) and split when its signature is checked.
 *
 * Only successes are cached; every cache is bounded (cleared when full) so hostile input cannot
 * grow memory without limit.
 */
import { evidenceError } from '../error-codes.js';
import { BoundedMemo, bytesKey } from '../memo.js';
import {
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  parseBasicConstraints,
  parseKeyUsage,
  type BasicConstraints,
} from './ca-extensions.js';
import {
  DER_BIT_STRING,
  DER_INTEGER,
  DER_SEQUENCE,
  readDer,
  readDerChildren,
  type DerNode,
} from './der.js';
import {
  ecdsaSignatureParts,
  parseSignatureAlgorithm,
  verifySignature,
  type SignatureAlgorithm,
} from './signature.js';
import { parseCertificate, parseCrl, type Certificate } from './x509.js';

/** A certificate with the facts the verifier reads on every call, precomputed. */
export interface CertInfo {
  readonly cert: Certificate;
  readonly der: Uint8Array;
  readonly derKey: string;
  /** The SubjectPublicKeyInfo DER, and the same as a key string. */
  readonly spki: Uint8Array;
  readonly spkiKey: string;
  readonly subject: string;
  readonly issuer: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Serial as lowercase hex without leading zeros. */
  readonly serial: string;
  /** Extension values (extnValue contents) by OID. */
  readonly extensions: ReadonlyMap<string, Uint8Array>;
  /** The OIDs of the extensions marked critical. */
  readonly criticalExtensions: readonly string[];
  /** basicConstraints, decoded strictly (ca-extensions.ts); undefined when absent. */
  readonly basicConstraints: BasicConstraints | undefined;
  /** keyUsage as a mask of `KEY_USAGE` bits, decoded strictly; undefined when absent. */
  readonly keyUsage: number | undefined;
}

const certMemo = new BoundedMemo<CertInfo>(2048);

function normalizeSerial(s: string): string {
  const t = s.toLowerCase().replace(/^0+/, '');
  return t === '' ? '0' : t;
}

/**
 * Parses (once per exact DER) a certificate. Its basicConstraints and keyUsage are decoded here,
 * strictly, so a malformed one is CERT_MALFORMED whether or not the certificate ends up issuing
 * anything.
 */
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
  const criticalExtensions: string[] = [];
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
      if (e.critical) criticalExtensions.push(e.type);
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
  const bc = extensions.get(OID_BASIC_CONSTRAINTS);
  const ku = extensions.get(OID_KEY_USAGE);
  return certMemo.set(derKey, {
    cert,
    der: new Uint8Array(der),
    derKey,
    spki,
    spkiKey: bytesKey(spki),
    subject,
    issuer,
    notBefore,
    notAfter,
    serial,
    extensions,
    criticalExtensions,
    basicConstraints:
      bc === undefined ? undefined : parseBasicConstraints(bc, `${field}.basicConstraints`),
    keyUsage: ku === undefined ? undefined : parseKeyUsage(ku, `${field}.keyUsage`),
  });
}

/** A CRL with its revoked serials indexed. */
export interface CrlInfo {
  readonly der: Uint8Array;
  readonly derKey: string;
  readonly issuer: string;
  readonly thisUpdate: number;
  /** Infinity when the CRL names no next update. */
  readonly nextUpdate: number;
  /** Revoked serial (normalised) -> revocation time. */
  readonly revoked: ReadonlyMap<string, number>;
  /** The OIDs of the CRL extensions marked critical (RFC 5280 section 5.2). */
  readonly criticalExtensions: readonly string[];
  /** The OIDs of the entry extensions marked critical in any entry, once each (section 5.3). */
  readonly criticalEntryExtensions: readonly string[];
}

const crlMemo = new BoundedMemo<CrlInfo>(256);

/**
 * For each signed certificate or CRL (exact DER), the issuer keys (exact SPKI) its signature
 * verified under. CRLs are applied on every verification, so the lookup uses the memoised key
 * strings as they are (their hashes cached) rather than a new concatenation of both, which would
 * be hashed in full each time.
 */
const verifiedSigners = new BoundedMemo<Set<string>>(4096);

/** The key of a signing certificate, as {@link signedBy} uses it. */
interface SignerKey {
  readonly spki: Uint8Array;
  readonly spkiKey: string;
}

/**
 * True when the object whose exact DER is `signedKey` carries a valid signature by `issuer`'s
 * key: memoised on success; `parts` (the signed bytes, algorithm and signature) is only read on
 * a miss.
 */
async function signedBy(
  signedKey: string,
  issuer: SignerKey,
  parts: () => Pick<SignedParts, 'tbs' | 'algorithm' | 'signature'>,
): Promise<boolean> {
  const signers = verifiedSigners.get(signedKey);
  if (signers?.has(issuer.spkiKey) === true) return true;
  const p = parts();
  const ok = await verifySignature(p.algorithm, issuer.spki, issuer.spkiKey, p.signature, p.tbs);
  if (ok)
    (verifiedSigners.get(signedKey) ?? verifiedSigners.set(signedKey, new Set())).add(
      issuer.spkiKey,
    );
  return ok;
}

/**
 * Parses (once per exact DER) a CRL. Its signature is checked by {@link crlSignedBy}; its
 * critical extensions, CRL and entry ones, are recorded here (the library decodes them lazily:
 * they are read now, inside the guard, so a malformed one is CERT_MALFORMED here) and refused
 * where the CRL is applied (pki/path.ts `checkCrl`).
 */
export function crlInfo(der: Uint8Array, field: string): CrlInfo {
  const derKey = bytesKey(der);
  const hit = crlMemo.get(derKey);
  if (hit !== undefined) return hit;
  const crl = parseCrl(der, field);
  const revoked = new Map<string, number>();
  const criticalExtensions: string[] = [];
  const criticalEntryExtensions = new Set<string>();
  let issuer: string;
  let thisUpdate: number;
  let nextUpdate: number;
  try {
    for (const e of crl.entries) {
      revoked.set(normalizeSerial(e.serialNumber), e.revocationDate.getTime());
      for (const x of e.extensions) if (x.critical) criticalEntryExtensions.add(x.type);
    }
    for (const x of crl.extensions) if (x.critical) criticalExtensions.push(x.type);
    issuer = crl.issuer;
    thisUpdate = crl.thisUpdate.getTime();
    nextUpdate = crl.nextUpdate === undefined ? Infinity : crl.nextUpdate.getTime();
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: unreadable CRL fields`, {
      cause,
      details: { field },
    });
  }
  return crlMemo.set(derKey, {
    der: new Uint8Array(der),
    derKey,
    issuer,
    thisUpdate,
    nextUpdate,
    revoked,
    criticalExtensions,
    criticalEntryExtensions: [...criticalEntryExtensions],
  });
}

/**
 * True when `crl` carries a valid signature by `issuer`'s key (memoised on success), checked
 * like a certificate's: over the exact TBSCertList, with the algorithm it declares (RFC 5280
 * section 5.1). Throws CERT_MALFORMED (or a DER PARSE error) when the CRL cannot be split or
 * declares an unsupported algorithm, as {@link rawCert} does for a certificate; `field` names
 * the CRL in that error.
 */
export function crlSignedBy(crl: CrlInfo, issuer: CertInfo, field: string): Promise<boolean> {
  return signedBy(crl.derKey, issuer, () => splitSigned(crl.der, field, 'CRL'));
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

function malformed(field: string, why: string): never {
  throw evidenceError('CERT_MALFORMED', `${field}: ${why}`, { details: { field } });
}

/** The signature-relevant parts of a certificate or CRL, as {@link splitSigned} reads them. */
interface SignedParts {
  /** The signed bytes: the TBSCertificate or TBSCertList TLV. */
  readonly tbs: Uint8Array;
  /** The fields of the TBSCertificate or TBSCertList. */
  readonly tbsFields: readonly DerNode[];
  /** The TBSCertificate or TBSCertList TLV, its content the parent of `tbsFields`. */
  readonly tbsNode: DerNode;
  readonly algorithm: SignatureAlgorithm;
  readonly signature: Uint8Array;
}

/**
 * Splits a DER certificate (RFC 5280 section 4.1) or CRL (section 5.1), both a SEQUENCE of the
 * signed data, signatureAlgorithm and signatureValue, and checks that the algorithm inside the
 * signed data equals the outer one, byte for byte (sections 4.1.1.2 and 5.1.1.2). Throws
 * CERT_MALFORMED (or a DER PARSE error) for anything else, or an unsupported algorithm.
 */
function splitSigned(der: Uint8Array, field: string, kind: 'certificate' | 'CRL'): SignedParts {
  const top = readDer(der, 0, field);
  if (top.tag !== DER_SEQUENCE || top.end !== der.length) malformed(field, `not a DER ${kind}`);
  const [tbsNode, alg, sigBits, ...rest] = readDerChildren(top.content, field, 3);
  if (tbsNode === undefined || alg === undefined || sigBits === undefined || rest.length > 0) {
    malformed(field, `not a DER ${kind}`);
  }
  if (tbsNode.tag !== DER_SEQUENCE) malformed(field, `not a DER ${kind}`);
  const algorithm = parseSignatureAlgorithm(alg, `${field}.signatureAlgorithm`);
  if (sigBits.tag !== DER_BIT_STRING || sigBits.content[0] !== 0)
    malformed(field, 'bad signature bit string');
  const signature = sigBits.content.subarray(1);
  // An ECDSA signature must at least be a well-formed ECDSA-Sig-Value (checked against the
  // issuer's curve when verified).
  if (algorithm.kind === 'ecdsa') ecdsaSignatureParts(signature, `${field}.signature`);
  const tbsFields = readDerChildren(tbsNode.content, `${field}.tbs`, 10);
  // The signed algorithm: after the serial number in a TBSCertificate, after the optional
  // version in both (`[0] EXPLICIT` in a TBSCertificate, a bare INTEGER in a TBSCertList).
  let at = kind === 'certificate' ? 1 : 0;
  if (tbsFields[0]?.tag === (kind === 'certificate' ? 0xa0 : DER_INTEGER)) at++;
  const innerAlg = tbsFields[at];
  if (innerAlg === undefined) malformed(field, `incomplete signed ${kind}`);
  if (innerAlg.tag !== alg.tag || bytesKey(innerAlg.content) !== bytesKey(alg.content)) {
    malformed(field, 'signature algorithm mismatch');
  }
  return {
    tbs: top.content.subarray(0, tbsNode.end),
    tbsFields,
    tbsNode,
    algorithm,
    signature,
  };
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
  const parts = splitSigned(der, field, 'certificate');
  const f = parts.tbsFields;
  // [0] version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  const k = f[0]?.tag === 0xa0 ? 1 : 0;
  const issuer = f[k + 2];
  const subject = f[k + 4];
  const spkiNode = f[k + 5];
  if (issuer === undefined || subject === undefined || spkiNode === undefined) {
    malformed(field, 'incomplete TBSCertificate');
  }
  if (
    issuer.tag !== DER_SEQUENCE ||
    subject.tag !== DER_SEQUENCE ||
    spkiNode.tag !== DER_SEQUENCE
  ) {
    malformed(field, 'bad TBSCertificate');
  }
  // Child TLVs are contiguous: the SPKI TLV starts where the subject TLV ends.
  const spki = parts.tbsNode.content.subarray(subject.end, spkiNode.end);
  return rawMemo.set(derKey, {
    der,
    derKey,
    tbs: parts.tbs,
    algorithm: parts.algorithm,
    signature: parts.signature,
    subjectKey: bytesKey(subject.content),
    issuerKey: bytesKey(issuer.content),
    spki,
    spkiKey: bytesKey(spki),
  });
}

/** True when `child`'s signature verifies with `issuer`'s key (memoised on success). */
export function rawSignedBy(child: RawCert, issuer: RawCert): Promise<boolean> {
  return signedBy(child.derKey, issuer, () => child);
}
