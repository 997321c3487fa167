/**
 * X.509 chain verification for vendor roots (RFC 5280 path validation, reduced to what TEE
 * vendor chains need): the path is built leaf to root by issuer name and signature, the last
 * certificate must be a pinned root compared by its public key (never by its name: Intel's test
 * root has the production root's name), every certificate must be valid at the injected time,
 * and every certificate is checked against the CRL its issuer signed, when one is given.
 *
 * Signature checks are pure functions of the certificate bytes, so they are memoised; the time
 * and CRL checks run every time.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { bytesEqual, toHex } from '../bytes.js';
import { isCloisterError } from '@cloister/errors';
import { evidenceError } from '../error-codes.js';

x509.cryptoProvider.set(globalThis.crypto);

export type Certificate = x509.X509Certificate;
export type Crl = x509.X509Crl;

/** Parses one DER certificate; PARSE error on garbage. */
export function parseCertificate(der: Uint8Array, field = 'certificate'): Certificate {
  try {
    return new x509.X509Certificate(new Uint8Array(der));
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: not a DER X.509 certificate`, {
      cause,
      details: { field },
    });
  }
}

/** Parses one DER CRL. */
export function parseCrl(der: Uint8Array, field = 'crl'): Crl {
  try {
    return new x509.X509Crl(new Uint8Array(der));
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: not a DER X.509 CRL`, {
      cause,
      details: { field },
    });
  }
}

/**
 * Parses PEM text holding one or more certificates (a trailing NUL, as Intel quotes carry, is
 * ignored). Throws if no certificate is found.
 */
export function parsePemCertificates(pem: string, field = 'certificates'): Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0)
    throw evidenceError('CERT_MALFORMED', `${field}: no PEM certificate found`, {
      details: { field },
    });
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b);
    } catch (cause) {
      throw evidenceError('CERT_MALFORMED', `${field}[${i}]: bad PEM certificate`, {
        cause,
        details: { field, index: i },
      });
    }
  });
}

/** Parses certificates given as PEM text or as DER bytes (one certificate). */
export function parseCertificates(data: Uint8Array, field = 'certificates'): Certificate[] {
  const head = new TextDecoder().decode(data.subarray(0, Math.min(data.length, 64)));
  if (head.includes('-----BEGIN'))
    return parsePemCertificates(new TextDecoder().decode(data), field);
  return [parseCertificate(data, field)];
}

/** A root trusted by its public key. */
export interface TrustAnchor {
  readonly name: string;
  readonly certificate: Certificate;
}

export function trustAnchor(name: string, der: Uint8Array): TrustAnchor {
  return { name, certificate: parseCertificate(der, `root ${name}`) };
}

export interface ChainOptions {
  /** The roots accepted at the end of the path. */
  readonly roots: readonly TrustAnchor[];
  /** The verification time. */
  readonly now: Date;
  /** CRLs to check certificates against (each applies to the certificates its issuer signed). */
  readonly crls?: readonly Crl[];
  /** Names the chain in error messages ("PCK chain", "VCEK chain"). */
  readonly label: string;
}

export interface VerifiedChain {
  /** Leaf first, pinned root last. */
  readonly path: readonly Certificate[];
  readonly root: TrustAnchor;
}

const verifiedSignatures = new Set<string>();
const MAX_MEMO = 10_000;

async function signedBy(child: Certificate, issuer: Certificate): Promise<boolean> {
  // Keyed by the whole signed certificate and the issuer key: a certificate edited after a
  // genuine copy was checked keeps the old signature, so the signature alone is not a key.
  const key = `${toHex(new Uint8Array(child.rawData))}:${toHex(new Uint8Array(issuer.publicKey.rawData))}`;
  if (verifiedSignatures.has(key)) return true;
  let ok = false;
  try {
    ok = await child.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    ok = false;
  }
  if (ok) {
    if (verifiedSignatures.size >= MAX_MEMO) verifiedSignatures.clear();
    verifiedSignatures.add(key);
  }
  return ok;
}

function samePublicKey(a: Certificate, b: Certificate): boolean {
  return bytesEqual(new Uint8Array(a.publicKey.rawData), new Uint8Array(b.publicKey.rawData));
}

function checkValidity(c: Certificate, now: Date, label: string): void {
  if (now < c.notBefore || now > c.notAfter) {
    throw evidenceError(
      'CHAIN_EXPIRED',
      `${label}: certificate "${c.subject}" is not valid at ${now.toISOString()}`,
      {
        details: {
          subject: c.subject,
          notBefore: c.notBefore.toISOString(),
          notAfter: c.notAfter.toISOString(),
          now: now.toISOString(),
        },
      },
    );
  }
}

/**
 * Verifies a CRL (signature by `issuer`, thisUpdate/nextUpdate window) and that `cert` is not on
 * it. Stops: use of a revoked intermediate or leaf key, and replay of an expired CRL.
 */
export async function checkCrl(
  crl: Crl,
  issuer: Certificate,
  cert: Certificate,
  now: Date,
  label: string,
): Promise<void> {
  let ok = false;
  try {
    ok = await crl.verify({ publicKey: issuer.publicKey });
  } catch {
    ok = false;
  }
  if (!ok) {
    throw evidenceError(
      'COLLATERAL_SIGNATURE_INVALID',
      `${label}: CRL of "${crl.issuer}" is not signed by its issuer`,
      {
        details: { crlIssuer: crl.issuer },
      },
    );
  }
  if (now < crl.thisUpdate || (crl.nextUpdate !== undefined && now > crl.nextUpdate)) {
    throw evidenceError(
      'COLLATERAL_EXPIRED',
      `${label}: CRL of "${crl.issuer}" is not current at ${now.toISOString()}`,
      {
        details: {
          crlIssuer: crl.issuer,
          thisUpdate: crl.thisUpdate.toISOString(),
          nextUpdate: crl.nextUpdate?.toISOString(),
          now: now.toISOString(),
        },
      },
    );
  }
  const revoked = crl.findRevoked(cert);
  if (revoked !== null && revoked.revocationDate <= now) {
    throw evidenceError(
      'CHAIN_REVOKED',
      `${label}: certificate "${cert.subject}" (serial ${cert.serialNumber}) is revoked`,
      {
        details: {
          subject: cert.subject,
          serial: cert.serialNumber,
          revokedAt: revoked.revocationDate.toISOString(),
        },
      },
    );
  }
}

/**
 * Verifies `chain` (leaf first; intermediates in any order; the root may be included or not).
 * Throws a CHAIN error naming the failing certificate.
 */
export async function verifyChain(
  chain: readonly Certificate[],
  opts: ChainOptions,
): Promise<VerifiedChain> {
  try {
    return await walkChain(chain, opts);
  } catch (e) {
    // The X.509 library parses keys and extensions lazily: a malformed certificate can surface
    // as a library exception deep in the walk. It is still malformed input, never a crash.
    if (isCloisterError(e)) throw e;
    throw evidenceError('CERT_MALFORMED', `${opts.label}: a certificate cannot be parsed`, {
      cause: e,
    });
  }
}

async function walkChain(
  chain: readonly Certificate[],
  opts: ChainOptions,
): Promise<VerifiedChain> {
  const leaf = chain[0];
  if (leaf === undefined) throw evidenceError('CHAIN_INCOMPLETE', `${opts.label}: no certificate`);
  const path: Certificate[] = [leaf];
  const pool = chain.slice(1);
  for (let depth = 0; depth < 8; depth++) {
    const cur = path[path.length - 1] as Certificate;
    checkValidity(cur, opts.now, opts.label);
    // Reached a pinned root? (compare the key, not the name)
    const anchor = opts.roots.find((r) => samePublicKey(r.certificate, cur));
    if (anchor !== undefined) {
      if (!(await signedBy(cur, anchor.certificate))) {
        throw evidenceError(
          'CHAIN_SIGNATURE_INVALID',
          `${opts.label}: root "${cur.subject}" is not self-signed`,
        );
      }
      return { path, root: anchor };
    }
    // A self-signed certificate that is not pinned ends the path: an impostor root, even when
    // it bears a pinned root's name.
    if (cur.subject === cur.issuer && (await signedBy(cur, cur))) {
      throw evidenceError(
        'CHAIN_UNTRUSTED_ROOT',
        `${opts.label}: chain ends in "${cur.subject}", whose key is not a pinned root`,
        { details: { subject: cur.subject } },
      );
    }
    // Next issuer: a root if it names one, else a certificate of the pool.
    const candidates = [...opts.roots.map((r) => r.certificate), ...pool].filter(
      (c) => c.subject === cur.issuer,
    );
    if (candidates.length === 0) {
      const selfSigned = cur.subject === cur.issuer;
      throw evidenceError(
        selfSigned ? 'CHAIN_UNTRUSTED_ROOT' : 'CHAIN_INCOMPLETE',
        selfSigned
          ? `${opts.label}: chain ends in "${cur.subject}", whose key is not a pinned root`
          : `${opts.label}: issuer "${cur.issuer}" of "${cur.subject}" was not supplied`,
        { details: { subject: cur.subject, issuer: cur.issuer } },
      );
    }
    let issuer: Certificate | undefined;
    for (const c of candidates)
      if (await signedBy(cur, c)) {
        issuer = c;
        break;
      }
    if (issuer === undefined) {
      throw evidenceError(
        'CHAIN_SIGNATURE_INVALID',
        `${opts.label}: "${cur.subject}" is not signed by "${cur.issuer}"`,
        {
          details: { subject: cur.subject, issuer: cur.issuer },
        },
      );
    }
    for (const crl of opts.crls ?? []) {
      if (crl.issuer === issuer.subject) await checkCrl(crl, issuer, cur, opts.now, opts.label);
    }
    if (issuer === cur) {
      throw evidenceError(
        'CHAIN_UNTRUSTED_ROOT',
        `${opts.label}: chain ends in "${cur.subject}", whose key is not a pinned root`,
      );
    }
    path.push(issuer);
  }
  throw evidenceError('CHAIN_INCOMPLETE', `${opts.label}: chain longer than 8 certificates`);
}
