/**
 * X.509 chain verification for callers holding parsed certificates (the package's public
 * `verifyChain` and `checkCrl`, and the sim verifier): a thin layer over the one path builder of
 * path.ts, which the DCAP, SNP and sim verifiers use directly. The rules are the builder's: the
 * path is built leaf to root by issuer name and signature (certificates given but not needed are
 * ignored, never trusted), the last certificate must be a pinned root compared by its public key
 * (never by its name: Intel's test root has the production root's name), every certificate on
 * the path must be valid at the injected time, and every certificate is checked against the CRL
 * its issuer signed, when one is given.
 *
 * Signature checks are pure functions of the certificate bytes, so they are memoised (by exact
 * bytes, cert-cache.ts); the pinning, time and CRL checks run every time.
 */
import { isCloisterError } from '@cloister/errors';
import { evidenceError } from '../error-codes.js';
import { certInfo, crlInfo, rawCert } from './cert-cache.js';
import {
  anchorRawCert,
  buildSignedPath,
  checkCrl as checkCrlInfo,
  checkPathCrls,
  checkPinned,
  checkValidity,
  offeredCerts,
  verificationTime,
} from './path.js';
import type { Certificate, Crl, TrustAnchor } from './x509.js';

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

const der = (c: Certificate | Crl): Uint8Array => new Uint8Array(c.rawData);

/**
 * The X.509 library parses keys and extensions lazily: a malformed certificate can surface as a
 * library exception deep in a check. It is still malformed input, never a crash.
 */
async function asMalformed<T>(label: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (isCloisterError(e)) throw e;
    throw evidenceError('CERT_MALFORMED', `${label}: a certificate cannot be parsed`, {
      cause: e,
    });
  }
}

/**
 * Verifies `chain` (leaf first; intermediates in any order, unused ones ignored; the root may be
 * included or not). Throws a CHAIN error naming the failing step, or a COLLATERAL error for a
 * CRL that is forged or not current.
 */
export async function verifyChain(
  chain: readonly Certificate[],
  opts: ChainOptions,
): Promise<VerifiedChain> {
  const { label } = opts;
  return asMalformed(label, async () => {
    const now = verificationTime(opts.now, label);
    const [leaf, ...rest] = chain;
    if (leaf === undefined) throw evidenceError('CHAIN_INCOMPLETE', `${label}: no certificate`);
    // The pinned roots first, then the intermediates given, which are used only if needed.
    const path = await buildSignedPath(
      rawCert(der(leaf), `${label}[0]`),
      [],
      [...opts.roots.map(anchorRawCert), ...offeredCerts(rest.map(der), `${label} intermediates`)],
      label,
    );
    const root = checkPinned(path, opts.roots, label);
    checkValidity(path, now, label);
    // A CRL of an issuer that is not on this path says nothing about it, and is ignored.
    await checkPathCrls(
      path,
      (opts.crls ?? []).map((c, i) => crlInfo(der(c), `${label} crls[${i}]`)),
      now,
      label,
    );
    return { path: path.certs.map((c) => c.cert), root };
  });
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
  return asMalformed(label, () =>
    checkCrlInfo(
      crlInfo(der(crl), `${label} CRL`),
      certInfo(der(issuer), `${label} CRL issuer`),
      certInfo(der(cert), `${label} certificate`),
      verificationTime(now, label),
      label,
    ),
  );
}
