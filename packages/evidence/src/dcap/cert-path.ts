/**
 * Certification path building for Intel SGX/TDX chains (RFC 5280 section 6.1, reduced to the
 * fixed Intel hierarchy: leaf <- Intel SGX PCK Platform/Processor CA or TCB Signing <- Intel SGX
 * Root CA). The signature part of a path depends only on certificate bytes and is memoised; the
 * root pin, validity periods and revocation depend on the call (`roots`, `now`, CRLs) and are
 * checked by {@link checkPath} every time.
 */
import { evidenceError } from '../error-codes.js';
import type { TrustAnchor } from '../pki/chain.js';
import {
  certInfo,
  rawCert,
  rawSignedBy,
  type CertInfo,
  type CrlInfo,
  type RawCert,
} from './cert-cache.js';

/** A path whose signatures verify, leaf first, ending in a self-signed certificate. */
export interface SignedPath {
  readonly certs: readonly CertInfo[];
  readonly top: CertInfo;
}

const anchorInfo = new WeakMap<TrustAnchor, CertInfo>();

/** The parsed form of a trust anchor's certificate. */
export function anchorCert(a: TrustAnchor): CertInfo {
  let c = anchorInfo.get(a);
  if (c === undefined) {
    c = certInfo(new Uint8Array(a.certificate.rawData), `root ${a.name}`);
    anchorInfo.set(a, c);
  }
  return c;
}

const anchorRaw = new WeakMap<TrustAnchor, RawCert>();

/** The split form of a trust anchor's certificate. */
export function anchorRawCert(a: TrustAnchor): RawCert {
  let c = anchorRaw.get(a);
  if (c === undefined) {
    c = rawCert(new Uint8Array(a.certificate.rawData), `root ${a.name}`);
    anchorRaw.set(a, c);
  }
  return c;
}

/**
 * Builds the path from `leaf` through `pool` (then `anchors`, for chains that omit the root) to a
 * self-signed certificate, verifying every signature on the way before any certificate is
 * handed to the full X.509 parser (so altered certificates are refused cheaply).
 */
export async function buildSignedPath(
  leaf: RawCert,
  pool: readonly RawCert[],
  anchors: readonly RawCert[],
  label: string,
): Promise<SignedPath> {
  const raw: RawCert[] = [leaf];
  let cur = leaf;
  for (let depth = 0; ; depth++) {
    if (depth >= 6) throw evidenceError('CHAIN_INCOMPLETE', `${label}: chain too long`);
    if (cur.subjectKey === cur.issuerKey) {
      // A self-issued certificate ends the path; whether its key is pinned is checked per call.
      if (!(await rawSignedBy(cur, cur))) {
        throw evidenceError(
          'CHAIN_SIGNATURE_INVALID',
          `${label}: certificate ${depth} is not self-signed`,
          {
            details: { depth },
          },
        );
      }
      break;
    }
    const candidates = [...pool, ...anchors].filter(
      (c) => c !== cur && c.subjectKey === cur.issuerKey,
    );
    if (candidates.length === 0) {
      throw evidenceError(
        'CHAIN_INCOMPLETE',
        `${label}: the issuer of certificate ${depth} was not supplied`,
        {
          details: { depth },
        },
      );
    }
    let next: RawCert | undefined;
    for (const c of candidates) {
      if (await rawSignedBy(cur, c)) {
        next = c;
        break;
      }
    }
    if (next === undefined) {
      throw evidenceError(
        'CHAIN_SIGNATURE_INVALID',
        `${label}: certificate ${depth} is not signed by its issuer`,
        {
          details: { depth },
        },
      );
    }
    raw.push(next);
    cur = next;
  }
  // Every certificate carried must be on the path: an unused, altered certificate riding along
  // would be accepted unseen by us but might be read by a consumer of the same evidence.
  for (const c of [leaf, ...pool]) {
    if (!raw.includes(c)) {
      throw evidenceError(
        'CHAIN_SIGNATURE_INVALID',
        `${label}: a carried certificate is not on the path to the root`,
      );
    }
  }
  const certs = raw.map((r, i) => certInfo(r.der, `${label}[${i}]`));
  return { certs, top: certs[certs.length - 1] as CertInfo };
}

/** Throws CHAIN_UNTRUSTED_ROOT unless the path's self-signed top has a pinned root's key. */
export function checkPinned(path: SignedPath, roots: readonly TrustAnchor[], label: string): void {
  // Compared by key, never by name: Intel's test root has the production root's name.
  for (const r of roots) if (anchorCert(r).spkiKey === path.top.spkiKey) return;
  throw evidenceError(
    'CHAIN_UNTRUSTED_ROOT',
    `${label}: chain ends in "${path.top.subject}", whose key is not a pinned root`,
    { details: { subject: path.top.subject } },
  );
}

/** Throws CHAIN_EXPIRED unless every certificate of the path is valid at `now`. */
export function checkValidity(path: SignedPath, now: number, label: string): void {
  for (const c of path.certs) {
    if (now < c.notBefore || now > c.notAfter) {
      throw evidenceError(
        'CHAIN_EXPIRED',
        `${label}: certificate "${c.subject}" is not valid at ${new Date(now).toISOString()}`,
        {
          details: {
            subject: c.subject,
            notBefore: new Date(c.notBefore).toISOString(),
            notAfter: new Date(c.notAfter).toISOString(),
            now: new Date(now).toISOString(),
          },
        },
      );
    }
  }
}

/** Throws COLLATERAL_EXPIRED unless `crl` is current at `now` (stops replay of an old CRL). */
export function checkCrlWindow(crl: CrlInfo, now: number, label: string): void {
  if (now < crl.thisUpdate || now > crl.nextUpdate) {
    throw evidenceError(
      'COLLATERAL_EXPIRED',
      `${label}: CRL of "${crl.issuer}" is not current at ${new Date(now).toISOString()}`,
      {
        details: {
          crlIssuer: crl.issuer,
          thisUpdate: new Date(crl.thisUpdate).toISOString(),
          nextUpdate: Number.isFinite(crl.nextUpdate)
            ? new Date(crl.nextUpdate).toISOString()
            : undefined,
          now: new Date(now).toISOString(),
        },
      },
    );
  }
}

/** Throws CHAIN_REVOKED when `cert` is on `crl` (whose signature the caller verified). */
export function checkNotRevoked(crl: CrlInfo, cert: CertInfo, now: number, label: string): void {
  const at = crl.revoked.get(cert.serial);
  if (at !== undefined && at <= now) {
    throw evidenceError(
      'CHAIN_REVOKED',
      `${label}: certificate "${cert.subject}" (serial ${cert.serial}) is revoked`,
      {
        details: {
          subject: cert.subject,
          serial: cert.serial,
          revokedAt: new Date(at).toISOString(),
        },
      },
    );
  }
}
