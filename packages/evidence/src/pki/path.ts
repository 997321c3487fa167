/**
 * Certification path building and validation, the one implementation behind every vendor chain
 * (RFC 5280 section 6.1, reduced to what TEE vendor hierarchies need):
 *   Intel SGX/TDX   PCK <- Intel SGX PCK Platform/Processor CA <- Intel SGX Root CA, and
 *                   TCB Signing <- Intel SGX Root CA
 *   AMD SEV-SNP     VCEK <- ASK <- ARK, VLEK <- ASVK <- ARK
 *   simulation      platform <- sim root
 *
 * The work is split by what it depends on. {@link buildSignedPath} depends only on certificate
 * bytes, so callers memoise its result: it walks from the leaf by issuer name (exact DER) and
 * verifies every signature over the raw bytes before any certificate reaches the full X.509
 * parser, up to a self-signed certificate, (for DCAP) refuses a carried certificate that is not
 * on the path, and then holds every certificate that issues another to what its extensions
 * allow (section 6.1.4 (k), (l), (m), (n) and (o): {@link checkIssuers}). What depends on the
 * call is checked every time by the caller:
 * {@link checkPinned} (the top's key is a pinned root's key, never compared by name: Intel's
 * test root has the production root's name), {@link checkValidity} (every certificate valid at
 * `now`) and the CRL checks, {@link checkPathCrls} and {@link checkCrl} (each CRL signed by the
 * issuer it names, which may sign CRLs, free of critical extensions, current at `now`, and
 * revoking only certificates that issuer signed). Verifiers whose leaf key signs evidence or
 * collateral also hold it to its keyUsage ({@link checkLeafSigner}).
 *
 * `verifyChain` (chain.ts) composes these for callers holding parsed certificates; the DCAP and
 * SNP verifiers call them directly so they can memoise the signed path.
 */
import { isCloisterError } from '@cloister/errors';
import { evidenceError } from '../error-codes.js';
import { KEY_USAGE, OID_BASIC_CONSTRAINTS, OID_KEY_USAGE } from './ca-extensions.js';
import {
  certInfo,
  crlSignedBy,
  rawCert,
  rawSignedBy,
  type CertInfo,
  type CrlInfo,
  type RawCert,
} from './cert-cache.js';
import type { TrustAnchor } from './x509.js';

/**
 * A path whose signatures verify and whose issuers may issue, leaf first, ending in a
 * self-signed certificate.
 */
export interface SignedPath {
  readonly certs: readonly CertInfo[];
  readonly top: CertInfo;
}

/** The longest path accepted (vendor chains have three certificates). */
const MAX_PATH_CERTS = 6;

const anchorInfo = new WeakMap<TrustAnchor, CertInfo>();

/** The parsed form of a trust anchor's certificate. */
function anchorCert(a: TrustAnchor): CertInfo {
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
 * Splits certificates handed over beside evidence, to offer to {@link buildSignedPath}, leaving
 * out those it could never use (an unsupported signature algorithm, DER the splitter refuses):
 * an offered certificate is only a candidate issuer, so one that cannot be checked is as good as
 * absent, and a chain that needed it fails as incomplete.
 */
export function offeredCerts(ders: readonly Uint8Array[], label: string): RawCert[] {
  const out: RawCert[] = [];
  ders.forEach((d, i) => {
    try {
      out.push(rawCert(d, `${label}[${i}]`));
    } catch (e) {
      if (!isCloisterError(e)) throw e;
    }
  });
  return out;
}

/**
 * Builds the path from `leaf` to a self-signed certificate, verifying every signature on the
 * way before any certificate is handed to the full X.509 parser (so altered certificates are
 * refused cheaply). Issuers are looked up first among `carried`, then among `offered`:
 *  - `carried`: certificates that must all end up on the path. DCAP passes the chains a quote or
 *    its collateral carry: an unused, possibly altered certificate riding along would be
 *    accepted unseen by us but might be read by a consumer of the same evidence.
 *  - `offered`: certificates that may be used and are otherwise ignored, never trusted: pinned
 *    roots and intermediates the verifier supplies, and, where the caller's contract says so,
 *    certificates handed over beside the evidence (SNP `--cert` files and extended-report
 *    certificate tables, `verifyChain`'s intermediates) that may include other products' ones.
 *    Callers list pinned certificates first, so a carried copy is used only when no pinned one
 *    fits.
 *
 * Every certificate that issues another on the path must be allowed to ({@link checkIssuers}).
 * Whether the top is pinned, and the validity periods, are not checked here (they depend on the
 * call): see {@link checkPinned} and {@link checkValidity}.
 */
export async function buildSignedPath(
  leaf: RawCert,
  carried: readonly RawCert[],
  offered: readonly RawCert[],
  label: string,
): Promise<SignedPath> {
  const raw: RawCert[] = [leaf];
  let cur = leaf;
  for (let depth = 0; ; depth++) {
    if (depth >= MAX_PATH_CERTS)
      throw evidenceError('CHAIN_INCOMPLETE', `${label}: chain too long`);
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
    const candidates = [...carried, ...offered].filter(
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
  for (const c of carried) {
    if (!raw.includes(c)) {
      throw evidenceError(
        'CHAIN_SIGNATURE_INVALID',
        `${label}: a carried certificate is not on the path to the root`,
      );
    }
  }
  const certs = raw.map((r, i) => certInfo(r.der, `${label}[${i}]`));
  checkIssuers(certs, label);
  return { certs, top: certs[certs.length - 1] as CertInfo };
}

/** The extensions the checks below process: any other marked critical refuses the path. */
const PROCESSED_EXTENSIONS: ReadonlySet<string> = new Set([OID_BASIC_CONSTRAINTS, OID_KEY_USAGE]);

function issuerRefused(
  label: string,
  c: CertInfo,
  position: number,
  rule: string,
  why: string,
  extra: Record<string, unknown> = {},
): never {
  throw evidenceError(
    'CHAIN_ISSUER_CONSTRAINT',
    `${label}: certificate ${position} "${c.subject}" ${why}`,
    { details: { subject: c.subject, position, rule, ...extra } },
  );
}

/**
 * RFC 5280 section 6.1.4 (k), (l), (m), (n) and (o) on a path (leaf first, signatures verified):
 * every certificate that issues the one before it must have basicConstraints with cA TRUE, a
 * keyUsage (when present) with keyCertSign, and a pathLenConstraint (when present) of at least
 * the number of intermediates below it; and no certificate may carry a critical extension
 * other than those two (sections 6.1.4 (o) and 6.1.5 (f): a critical extension that is not
 * processed must refuse the certificate, and none of the vendor chains marks any other one
 * critical). Stops a certificate that is not a CA, such as an Intel PCK certificate (CA:FALSE)
 * or an AMD VCEK whose key was extracted from a chip, from issuing certificates that chain to
 * the pinned root, also on paths no chain-shape rule pins (verifyChain).
 *
 * The builder ends a path at its first self-issued certificate, so every intermediate counts
 * towards a pathLenConstraint (section 6.1.4 (l) skips only self-issued ones).
 *
 * The self-signed top is held to the same rules, although RFC 5280 takes a trust anchor as a
 * name and a key and leaves its extensions unchecked (RFC 5937 makes that optional). Our
 * anchors are certificates pinned by key, and the top of a path may be a copy carried with the
 * evidence (Intel quotes carry the root) rather than the pinned bytes: the certificate actually
 * on the path must say it is a CA. Every root pinned here (Intel SGX Root CA, AMD ARKs, the sim
 * root) has cA TRUE and keyCertSign, and the Intel root's pathLenConstraint 1 is honoured by its
 * PCK CAs, so this costs nothing and refuses a self-signed end-entity certificate pinned as a
 * root by mistake.
 */
function checkIssuers(certs: readonly CertInfo[], label: string): void {
  certs.forEach((c, i) => {
    const unknown = c.criticalExtensions.find((oid) => !PROCESSED_EXTENSIONS.has(oid));
    if (unknown !== undefined) {
      throw evidenceError(
        'CHAIN_CRITICAL_EXTENSION',
        `${label}: certificate ${i} "${c.subject}" has critical extension ${unknown}, which is not processed`,
        { details: { subject: c.subject, position: i, extension: unknown } },
      );
    }
    if (i === 0) return;
    const bc = c.basicConstraints;
    if (bc === undefined || !bc.ca) {
      issuerRefused(
        label,
        c,
        i,
        'basicConstraints.cA',
        `issues certificate ${i - 1} but is not a CA (${bc === undefined ? 'no basicConstraints' : 'cA FALSE'})`,
      );
    }
    if (c.keyUsage !== undefined && (c.keyUsage & KEY_USAGE.keyCertSign) === 0) {
      issuerRefused(
        label,
        c,
        i,
        'keyUsage.keyCertSign',
        `issues certificate ${i - 1} but its keyUsage lacks keyCertSign`,
      );
    }
    // certs[1 .. i-1] are the intermediates below c.
    if (bc.pathLen !== undefined && i - 1 > bc.pathLen) {
      issuerRefused(
        label,
        c,
        i,
        'pathLenConstraint',
        `allows ${bc.pathLen} intermediate(s) below it, the path has ${i - 1}`,
        { pathLenConstraint: bc.pathLen, intermediatesBelow: i - 1 },
      );
    }
  });
}

/**
 * Throws CHAIN_ISSUER_CONSTRAINT when `issuer` has a keyUsage without cRLSign (RFC 5280 section
 * 6.3.3 (f)). Stops a CRL signed by a key that its certificate does not allow to sign CRLs
 * (AMD's ASK may sign only certificates) from standing in for the issuer's real CRL.
 */
export function checkCrlSigner(issuer: CertInfo, label: string): void {
  if (issuer.keyUsage !== undefined && (issuer.keyUsage & KEY_USAGE.cRLSign) === 0) {
    throw evidenceError(
      'CHAIN_ISSUER_CONSTRAINT',
      `${label}: CRL issuer "${issuer.subject}" signs a CRL but its keyUsage lacks cRLSign`,
      { details: { subject: issuer.subject, rule: 'keyUsage.cRLSign' } },
    );
  }
}

/**
 * Throws CHAIN_ISSUER_CONSTRAINT when `leaf`, whose key signs evidence or collateral (the Intel
 * PCK certificate a QE report, the TCB Signing certificate TCB Info and QE Identity, an AMD VCEK
 * or VLEK an SNP report, the sim platform certificate a sim report), has a keyUsage without
 * digitalSignature (RFC 5280 section 4.2.1.3). Stops a key that its certificate allows only
 * other uses (key agreement, encipherment, certificate signing) from vouching for evidence. A
 * leaf without keyUsage is accepted: AMD's VCEKs and VLEKs carry none.
 */
export function checkLeafSigner(leaf: CertInfo, label: string): void {
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KEY_USAGE.digitalSignature) === 0) {
    throw evidenceError(
      'CHAIN_ISSUER_CONSTRAINT',
      `${label}: the signing certificate "${leaf.subject}" has a keyUsage without digitalSignature`,
      { details: { subject: leaf.subject, position: 0, rule: 'keyUsage.digitalSignature' } },
    );
  }
}

/**
 * Throws CHAIN_UNTRUSTED_ROOT unless the path's self-signed top has a pinned root's key; returns
 * that root.
 */
export function checkPinned(
  path: SignedPath,
  roots: readonly TrustAnchor[],
  label: string,
): TrustAnchor {
  // Compared by key, never by name: Intel's test root has the production root's name.
  for (const r of roots) if (anchorCert(r).spkiKey === path.top.spkiKey) return r;
  throw evidenceError(
    'CHAIN_UNTRUSTED_ROOT',
    `${label}: chain ends in "${path.top.subject}", whose key is not a pinned root`,
    { details: { subject: path.top.subject } },
  );
}

/**
 * The verification time in milliseconds. An invalid or missing Date is a caller error
 * (POLICY_INVALID), never "valid at every time": every comparison with NaN is false.
 */
export function verificationTime(now: unknown, label: string): number {
  const t = now instanceof Date ? now.getTime() : NaN;
  if (!Number.isFinite(t))
    throw evidenceError('POLICY_INVALID', `${label}: the verification time is not a valid Date`);
  return t;
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
function checkCrlWindow(crl: CrlInfo, now: number, label: string): void {
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
function checkNotRevoked(crl: CrlInfo, cert: CertInfo, now: number, label: string): void {
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

/**
 * Throws COLLATERAL_CRL_CRITICAL when `crl` or one of its entries has a critical extension (RFC
 * 5280 sections 5.2 and 5.3: such a CRL must not be used to determine the status of any
 * certificate). The verifier reads a CRL's issuer, window and serials only, so it processes
 * none: a critical extension says the CRL means something those do not show. Stops a partial
 * CRL (issuingDistributionPoint scoped to some certificates or reasons), a delta CRL
 * (deltaCRLIndicator) or an indirect CRL (an entry's certificateIssuer naming another CA) from
 * being read as the complete CRL of its issuer, on which an unlisted certificate is not
 * revoked. The real Intel CRLs carry cRLNumber, authorityKeyIdentifier and entry reasonCodes,
 * none of them critical.
 */
function checkCrlExtensions(crl: CrlInfo, label: string): void {
  const inCrl = crl.criticalExtensions[0];
  const oid = inCrl ?? crl.criticalEntryExtensions[0];
  if (oid === undefined) return;
  const scope = inCrl === undefined ? 'entry' : 'crl';
  throw evidenceError(
    'COLLATERAL_CRL_CRITICAL',
    `${label}: CRL of "${crl.issuer}" has critical ${scope === 'crl' ? '' : 'entry '}extension ${oid}, which is not processed`,
    { details: { crlIssuer: crl.issuer, extension: oid, scope } },
  );
}

/**
 * Checks `cert` against `crl` of its issuer `issuer`: the issuer must be allowed to sign CRLs
 * ({@link checkCrlSigner}), the CRL must be signed by the issuer's key
 * (COLLATERAL_SIGNATURE_INVALID; verified over the exact TBSCertList like a certificate, so an
 * unsupported or inconsistent signature algorithm is CERT_MALFORMED), have no critical
 * extension ({@link checkCrlExtensions}), be current at `now` (COLLATERAL_EXPIRED), and must
 * not list `cert` (CHAIN_REVOKED). Stops use of a revoked intermediate or leaf key, replay of
 * an expired CRL, and a partial, delta or indirect CRL read as a complete one.
 */
export async function checkCrl(
  crl: CrlInfo,
  issuer: CertInfo,
  cert: CertInfo,
  now: number,
  label: string,
): Promise<void> {
  checkCrlSigner(issuer, label);
  if (!(await crlSignedBy(crl, issuer, `${label} CRL of "${crl.issuer}"`))) {
    throw evidenceError(
      'COLLATERAL_SIGNATURE_INVALID',
      `${label}: CRL of "${crl.issuer}" is not signed by its issuer`,
      { details: { crlIssuer: crl.issuer } },
    );
  }
  checkCrlExtensions(crl, label);
  checkCrlWindow(crl, now, label);
  checkNotRevoked(crl, cert, now, label);
}

/**
 * Applies each CRL to the certificates of `path` whose issuer it names (the self-signed top is
 * not checked against a CRL of its own), with {@link checkCrl}: a CRL naming an issuer on the
 * path must verify under that issuer's key, so it revokes only certificates that issuer signed.
 * Returns the CRLs that named no issuer on the path (the caller decides whether that is an error).
 */
export async function checkPathCrls(
  path: SignedPath,
  crls: readonly CrlInfo[],
  now: number,
  label: string,
): Promise<CrlInfo[]> {
  const unused: CrlInfo[] = [];
  for (const crl of crls) {
    let applied = false;
    for (let i = 0; i + 1 < path.certs.length; i++) {
      const issuer = path.certs[i + 1] as CertInfo;
      if (crl.issuer !== issuer.subject) continue;
      applied = true;
      await checkCrl(crl, issuer, path.certs[i] as CertInfo, now, label);
    }
    if (!applied) unused.push(crl);
  }
  return unused;
}
