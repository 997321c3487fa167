/**
 * Verification of simulation TEE reports (DESIGN §1, §5): the same pipeline as hardware
 * evidence (parse, chain to a pinned root, signature, claims) so every caller exercises the
 * real plumbing, but refused with POLICY_SIMULATION unless the caller explicitly allows
 * simulation AND pins a sim root. The sim root is a software key anyone can make, so accepting
 * it by default would let anyone forge "attested" workloads.
 */
import { isCloisterError } from '@cloister/errors';
import { toHex, bytesEqual } from '../bytes.js';
import type { SimClaims } from '../claims.js';
import { ecdsaVerify, importEcSpki } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import { BoundedMemo, bytesKey } from '../memo.js';
import { rawCert, type CertInfo } from '../pki/cert-cache.js';
import {
  anchorRawCert,
  buildSignedPath,
  checkLeafSigner,
  checkPinned,
  checkValidity,
  verificationTime,
} from '../pki/path.js';
import type { TrustAnchor } from '../pki/x509.js';
import { parseSimReport, simPlatformId } from './report.js';

/**
 * A platform certificate that chained to a pinned root, with what the report check needs: its
 * imported key, its platform id, and the time window in which the whole path is valid.
 */
interface VerifiedPlatform {
  readonly key: CryptoKey;
  readonly platformId: Uint8Array;
  readonly validFrom: number;
  readonly validTo: number;
}

/**
 * Chain results by the exact bytes of the platform certificate and the identity of the pinned
 * roots (the pattern of pki/cert-cache.ts): every report of a platform carries the same
 * certificate, so parsing it, walking its chain and importing its key once per platform is
 * enough. The key is the certificate's full DER, never a digest or a part of it, so an altered
 * certificate never hits. Only successes are cached, the memo is bounded, and a hit still
 * checks `now` against the path's validity window.
 */
const platformMemo = new BoundedMemo<VerifiedPlatform>(256);
const anchorIds = new WeakMap<TrustAnchor, number>();
let nextAnchorId = 0;
function rootsKey(roots: readonly TrustAnchor[]): string {
  return roots
    .map((r) => {
      let id = anchorIds.get(r);
      if (id === undefined) {
        id = nextAnchorId++;
        anchorIds.set(r, id);
      }
      return id;
    })
    .join(',');
}

export interface VerifySimOptions {
  /** The verification time. */
  readonly now: Date;
  /** The pinned sim root certificate(s). Empty: refused. */
  readonly roots: readonly TrustAnchor[];
  /** Must be true, or the report is refused (POLICY_SIMULATION) before it is even parsed. */
  readonly allowSimulation: boolean;
}

/** Verifies a simulation report and returns its claims. */
export async function verifySimReport(
  bytes: Uint8Array,
  options: VerifySimOptions,
): Promise<SimClaims> {
  if (options.allowSimulation !== true || options.roots.length === 0) {
    throw evidenceError(
      'POLICY_SIMULATION',
      options.allowSimulation !== true
        ? 'simulation evidence is refused: simulation is not allowed'
        : 'simulation evidence is refused: no sim root is pinned',
      { details: { rule: 'allowSimulation' } },
    );
  }
  const t = verificationTime(options.now, 'sim');
  const r = parseSimReport(bytes);
  const memoKey = `${rootsKey(options.roots)}|${bytesKey(r.platformCertDer)}`;
  let platform = platformMemo.get(memoKey);
  if (platform === undefined || t < platform.validFrom || t > platform.validTo) {
    platform = await verifyPlatform(r.platformCertDer, options.roots, t);
    platformMemo.set(memoKey, platform);
  }
  if (!(await ecdsaVerify('P-256', platform.key, r.signature, r.signed))) {
    throw evidenceError(
      'SIGNATURE_INVALID',
      'sim report signature does not verify with the platform key',
    );
  }
  // The platform id is derived from the certified key, so a report cannot claim another
  // platform's identity (hardware-id allowlists rely on it).
  if (!bytesEqual(r.platformId, platform.platformId)) {
    throw evidenceError('BINDING_MISMATCH', 'sim platform id does not match the platform key', {
      details: { field: 'platformId', actual: toHex(r.platformId) },
    });
  }
  return {
    tee: 'sim',
    reportData: toHex(r.reportData),
    debug: r.debug,
    measurement: toHex(r.measurement),
    hostData: toHex(r.hostData),
    svn: r.svn,
    platformId: toHex(r.platformId),
  };
}

/**
 * Chains the platform certificate to a pinned root at `now` (the shared path builder: signature
 * over the raw bytes first, root pinned by key, validity of every certificate) and imports its
 * key.
 */
async function verifyPlatform(
  certDer: Uint8Array,
  roots: readonly TrustAnchor[],
  now: number,
): Promise<VerifiedPlatform> {
  const label = 'sim platform chain';
  try {
    const path = await buildSignedPath(
      rawCert(certDer, 'sim platform certificate'),
      [],
      roots.map(anchorRawCert),
      label,
    );
    checkPinned(path, roots, label);
    checkValidity(path, now, label);
    const leaf = path.certs[0] as CertInfo;
    // The platform key signs the reports.
    checkLeafSigner(leaf, label);
    const spki = new Uint8Array(leaf.cert.publicKey.rawData);
    return {
      key: await importEcSpki('P-256', spki, 'sim platform key'),
      platformId: await simPlatformId(spki),
      validFrom: Math.max(...path.certs.map((c) => c.notBefore)),
      validTo: Math.min(...path.certs.map((c) => c.notAfter)),
    };
  } catch (cause) {
    if (isCloisterError(cause)) throw cause;
    // The X.509 library parses lazily: a malformed field can surface as its own error type here.
    throw evidenceError('CERT_MALFORMED', 'sim platform certificate cannot be parsed', { cause });
  }
}
