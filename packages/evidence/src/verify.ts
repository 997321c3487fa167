/**
 * One entry point for every TEE type (DESIGN §5): `verifyEvidence(type, bytes, options)` parses
 * and cryptographically verifies evidence (signatures, chain to the pinned vendor root,
 * collateral, TCB level) and returns its claims. Appraisal against reference values is a
 * separate step (`appraise`). Clock, roots and collateral are injected; nothing here reaches the
 * network unless the caller passes a `CollateralSource` that does.
 */
import type { Claims, IntelTcbStatus } from './claims.js';
import type { CollateralSource, IntelCollateralJson } from './collateral/types.js';
import type { ParsedIntelCollateral } from './dcap/collateral.js';
import { parseDcapQuote } from './dcap/quote.js';
import { pckCollateralQuery, verifyDcapQuote } from './dcap/verify.js';
import type { DcapVerifiedQuote } from './dcap/verify.js';
import { evidenceError } from './error-codes.js';
import { parseCertificates } from './pki/x509.js';
import type { TrustAnchor } from './pki/x509.js';
import type { SnpProductRoots } from './snp/products.js';
import { verifySnpReport } from './snp/verify.js';
import { verifySimReport } from './sim/verify.js';
import type { SnpVerification } from './snp/verify.js';
import type { SnpProduct } from './claims.js';

/** Evidence types `verifyEvidence` handles. */
export const EVIDENCE_TYPES = ['sgx', 'tdx', 'sev-snp', 'sim'] as const;
export type EvidenceType = (typeof EVIDENCE_TYPES)[number];

export interface VerifyEvidenceOptions {
  /** The verification time. */
  readonly now: Date;
  /** Intel collateral for this quote (dcap-qvl JSON form, or parsed). */
  readonly collateral?: IntelCollateralJson | ParsedIntelCollateral;
  /** Where to get collateral the caller did not pass (an offline bundle or a caching fetcher). */
  readonly collateralSource?: CollateralSource;
  /** Certificates that travel beside the evidence (SNP: VCEK/VLEK, ASK/ASVK; DER or PEM). */
  readonly certs?: readonly Uint8Array[];
  /** Pinned Intel roots (default: the production Intel SGX Root CA). */
  readonly intelRoots?: readonly TrustAnchor[];
  /** Pinned AMD roots per product (default: AMD's production ARKs). */
  readonly snpRoots?: Partial<Readonly<Record<SnpProduct, SnpProductRoots>>>;
  /** SNP product, needed only for v2 reports whose certificate does not name it. */
  readonly snpProduct?: SnpProduct;
  /** Simulation roots; sim evidence is refused unless given and `allowSimulation` is true. */
  readonly simRoots?: readonly TrustAnchor[];
  /** Accept simulation evidence (development only). Default false. */
  readonly allowSimulation?: boolean;
}

/** Verified evidence of any type. */
export interface EvidenceVerdict {
  readonly type: EvidenceType;
  readonly claims: Claims;
  readonly tcbStatus?: IntelTcbStatus;
  readonly advisoryIds?: readonly string[];
  /** The type-specific result (PCK and QE facts for Intel, chain and product for SNP). */
  readonly detail?: DcapVerifiedQuote | SnpVerification;
}

async function verifyIntel(
  type: 'sgx' | 'tdx',
  bytes: Uint8Array,
  opts: VerifyEvidenceOptions,
): Promise<EvidenceVerdict> {
  let collateral = opts.collateral;
  if (collateral === undefined && opts.collateralSource !== undefined) {
    const quote = parseDcapQuote(bytes);
    const pck = pckCollateralQuery(quote);
    collateral = await opts.collateralSource.intel({ tee: type, fmspc: pck.fmspc, ca: pck.ca });
  }
  const r = await verifyDcapQuote(bytes, {
    now: opts.now,
    ...(collateral === undefined ? {} : { collateral }),
    ...(opts.intelRoots === undefined ? {} : { roots: opts.intelRoots }),
  });
  if (r.tee !== type) {
    // An SGX quote offered where a TDX quote is expected (or the reverse) is refused as such,
    // so a policy written for one TEE is never applied to the other.
    throw evidenceError('POLICY_MISMATCH', `expected ${type} evidence, got a ${r.tee} quote`, {
      details: { rule: 'tee', expected: type, actual: r.tee },
    });
  }
  return { type, claims: r.claims, tcbStatus: r.tcbStatus, advisoryIds: r.advisoryIds, detail: r };
}

async function verifySnp(bytes: Uint8Array, opts: VerifyEvidenceOptions): Promise<EvidenceVerdict> {
  // Certificates beside the evidence, each DER or PEM (a PEM file may hold several): the first
  // is the VCEK or VLEK, the rest are intermediates. Only a chain to a pinned ARK is trusted.
  const ders = (opts.certs ?? []).flatMap((c, i) =>
    parseCertificates(c, `certs[${i}]`).map((cert) => new Uint8Array(cert.rawData)),
  );
  const [vcek, ...chain] = ders;
  const r = await verifySnpReport(bytes, {
    now: opts.now,
    ...(vcek === undefined ? {} : { vcek }),
    ...(chain.length === 0 ? {} : { collateral: { chain } }),
    ...(opts.snpRoots === undefined ? {} : { roots: opts.snpRoots }),
    ...(opts.snpProduct === undefined ? {} : { product: opts.snpProduct }),
  });
  return { type: 'sev-snp', claims: r.claims, detail: r };
}

/** Verifies evidence of the given type; throws a VerificationError naming the failing layer. */
export async function verifyEvidence(
  type: EvidenceType,
  bytes: Uint8Array,
  opts: VerifyEvidenceOptions,
): Promise<EvidenceVerdict> {
  switch (type) {
    case 'sgx':
    case 'tdx':
      return verifyIntel(type, bytes, opts);
    case 'sev-snp':
      return verifySnp(bytes, opts);
    case 'sim': {
      const claims = await verifySimReport(bytes, {
        now: opts.now,
        roots: opts.simRoots ?? [],
        allowSimulation: opts.allowSimulation === true,
      });
      return { type: 'sim', claims };
    }
  }
}
