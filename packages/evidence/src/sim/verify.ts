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
import { parseCertificate, verifyChain } from '../pki/chain.js';
import type { TrustAnchor } from '../pki/chain.js';
import { parseSimReport, simPlatformId } from './report.js';

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
  const r = parseSimReport(bytes);
  let spki: Uint8Array;
  let key: CryptoKey;
  try {
    const cert = parseCertificate(r.platformCertDer, 'sim platform certificate');
    await verifyChain([cert], {
      roots: options.roots,
      now: options.now,
      label: 'sim platform chain',
    });
    spki = new Uint8Array(cert.publicKey.rawData);
    key = await importEcSpki('P-384', spki, 'sim platform key');
  } catch (cause) {
    if (isCloisterError(cause)) throw cause;
    // The X.509 library parses lazily: a malformed field can surface as its own error type here.
    throw evidenceError('CERT_MALFORMED', 'sim platform certificate cannot be parsed', { cause });
  }
  if (!(await ecdsaVerify('P-384', key, r.signature, r.signed))) {
    throw evidenceError(
      'SIGNATURE_INVALID',
      'sim report signature does not verify with the platform key',
    );
  }
  // The platform id is derived from the certified key, so a report cannot claim another
  // platform's identity (hardware-id allowlists rely on it).
  if (!bytesEqual(r.platformId, await simPlatformId(spki))) {
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
