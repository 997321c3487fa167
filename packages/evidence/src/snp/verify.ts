/**
 * SEV-SNP report verification: AMD SEV-SNP ABI spec 56860 section 7.3 (report and signature)
 * and AMD spec 57230 (VCEK/VLEK certificates; chains ARK -> ASK -> VCEK and ARK -> ASVK ->
 * VLEK). Order: parse -> product -> chain to the pinned ARK (validity at `now`, CRL) -> the
 * report's signing-key flag matches the certificate type -> VCEK/VLEK extensions match the
 * report (product, hwID, SPLs) -> report signature (ECDSA P-384 / SHA-384).
 *
 * Debug mode and VMPL are returned as claims: whether they are acceptable is policy, decided
 * by appraisal, not here.
 *
 * The chain is built and validated by the shared path builder (pki/path.ts), as for Intel and
 * the sim. Its signatures and pinning depend only on the certificate bytes and the roots, so
 * they are memoised by exact bytes (with the imported VCEK key); only the validity-at-`now`
 * checks, CRL checks, extension comparisons and the report signature run on every call.
 */
import { bytesEqual, toHex } from '../bytes.js';
import { ecdsaVerify, importEcSpki } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import type { SnpClaims, SnpProduct } from '../claims.js';
import type { CollateralSource, SnpCollateral } from '../collateral/types.js';
import { crlInfo, rawCert, type CertInfo, type RawCert } from '../pki/cert-cache.js';
import type { VerifiedChain } from '../pki/chain.js';
import {
  anchorRawCert,
  buildSignedPath,
  checkLeafSigner,
  checkPathCrls,
  checkPinned,
  checkValidity,
  offeredCerts,
  verificationTime,
  type SignedPath,
} from '../pki/path.js';
import { parseCertificate, parseCertificates, type Certificate } from '../pki/x509.js';
import { SNP_ROOTS } from './products.js';
import type { SnpProductRoots } from './products.js';
import { checkSnpProductLayout, decodeSnpTcb, parseSnpReport } from './report.js';
import type { SnpReport, SnpSigningKey } from './report.js';
import { readAmdKeyCert } from './vcek-cert.js';
import type { AmdKeyCertInfo } from './vcek-cert.js';

export interface VerifySnpOptions {
  /** The verification time: certificates and CRLs must be valid at this instant. */
  readonly now: Date;
  /**
   * The VCEK or VLEK certificate, DER or PEM. PEM may also carry the ASK/ASVK and ARK (as in a
   * KDS bundle or an Azure VCEK chain); the ARK is still only trusted if it is pinned.
   */
  readonly vcek?: Uint8Array;
  /** VCEK/VLEK, extra intermediates and the ARK-signed CRL, for example from a CollateralSource. */
  readonly collateral?: SnpCollateral;
  /**
   * Asked for the VCEK/VLEK collateral when neither `vcek` nor `collateral.endorsementKeyCert`
   * is given (an offline bundle, or a caching fetcher the caller configured). A version 2 report
   * needs `product` for this lookup.
   */
  readonly source?: CollateralSource;
  /** Roots per product; AMD's production roots (`SNP_ROOTS`) by default. */
  readonly roots?: Partial<Readonly<Record<SnpProduct, SnpProductRoots>>>;
  /**
   * The expected product. Required knowledge for version 2 reports when the certificate does not
   * say it; for v3+ a different CPUID product is rejected.
   */
  readonly product?: SnpProduct;
}

export interface SnpVerification {
  readonly claims: SnpClaims;
  readonly report: SnpReport;
  readonly product: SnpProduct;
  readonly signingKey: SnpSigningKey;
  /** Leaf (VCEK/VLEK) first, pinned ARK last. */
  readonly chain: VerifiedChain;
}

/** A chain whose signatures verify up to the pinned ARK (validity and CRLs are per call). */
interface SnpChain {
  readonly path: SignedPath;
  readonly verified: VerifiedChain;
}

/** One distinct set of certificate bytes: parsed once, key imported once, chains memoised. */
interface CertEntry {
  readonly ders: readonly Uint8Array[];
  readonly leaf: Certificate;
  readonly leafRaw: RawCert;
  /** The other certificates that came with the leaf: candidate issuers, never trusted. */
  readonly beside: readonly RawCert[];
  readonly info: AmdKeyCertInfo;
  readonly key: CryptoKey;
  /** Signed chains, per roots object and key type. */
  readonly chains: WeakMap<SnpProductRoots, Map<SnpSigningKey, SnpChain>>;
}

const MAX_ENTRIES = 1024;
const entries = new Map<number, CertEntry[]>();
let entryCount = 0;

/** FNV-1a over the certificate bytes: a bucket index, confirmed by a full byte comparison. */
function fnv(parts: readonly Uint8Array[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) h = Math.imul(h ^ (p[i] as number), 0x01000193);
    h = Math.imul(h ^ 0xff, 0x01000193);
  }
  return h >>> 0;
}

function sameDers(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  return a.length === b.length && a.every((x, i) => bytesEqual(x, b[i] as Uint8Array));
}

function commonName(c: Certificate): string | undefined {
  const cn = c.subjectName.getField('CN');
  return cn.length === 1 ? cn[0] : undefined;
}

async function certEntry(ders: readonly Uint8Array[]): Promise<CertEntry> {
  const h = fnv(ders);
  const bucket = entries.get(h);
  const hit = bucket?.find((e) => sameDers(e.ders, ders));
  if (hit !== undefined) return hit;

  const [first, ...rest] = ders;
  if (first === undefined) throw evidenceError('CHAIN_INCOMPLETE', 'SNP: no VCEK/VLEK given');
  const certs = [...parseCertificates(first, 'VCEK/VLEK'), ...rest.map((d) => parseCertificate(d))];
  // The leaf is the endorsement key certificate, wherever the bundle put it.
  const leafIndex = certs.findIndex((c) => {
    const cn = commonName(c);
    return cn === 'SEV-VCEK' || cn === 'SEV-VLEK';
  });
  const leaf = certs[leafIndex === -1 ? 0 : leafIndex] as Certificate;
  const extra = certs.filter((_, i) => i !== (leafIndex === -1 ? 0 : leafIndex));
  const leafRaw = rawCert(new Uint8Array(leaf.rawData), 'VCEK/VLEK');
  const beside = offeredCerts(
    extra.map((c) => new Uint8Array(c.rawData)),
    'SNP chain',
  );
  const info = readAmdKeyCert(leaf);
  let key: CryptoKey;
  try {
    key = await importEcSpki('P-384', new Uint8Array(leaf.publicKey.rawData), 'VCEK public key');
  } catch (cause) {
    throw evidenceError('CHAIN_BAD_EXTENSION', 'SNP: the VCEK/VLEK key is not ECDSA P-384', {
      cause,
      details: { subject: leaf.subject },
    });
  }
  const entry: CertEntry = {
    ders: ders.map((d) => new Uint8Array(d)),
    leaf,
    leafRaw,
    beside,
    info,
    key,
    chains: new WeakMap(),
  };
  if (entryCount >= MAX_ENTRIES) {
    entries.clear();
    entryCount = 0;
  }
  entries.set(h, [...(bucket ?? []), entry]);
  entryCount++;
  return entry;
}

function extMismatch(field: string, expected: unknown, actual: unknown): never {
  throw evidenceError(
    'CHAIN_BAD_EXTENSION',
    `SNP: certificate ${field} does not match the report`,
    { details: { field, certificate: expected, report: actual } },
  );
}

function claimsOf(r: SnpReport, product: SnpProduct): SnpClaims {
  return {
    tee: 'sev-snp',
    reportData: toHex(r.reportData),
    debug: r.debug,
    version: r.version,
    product,
    measurement: toHex(r.measurement),
    hostData: toHex(r.hostData),
    chipId: toHex(product === 'Turin' ? r.chipId.subarray(0, 8) : r.chipId),
    reportedTcb: decodeSnpTcb(r.rawTcb.reported, product, 'reported_tcb'),
    currentTcb: decodeSnpTcb(r.rawTcb.current, product, 'current_tcb'),
    committedTcb: decodeSnpTcb(r.rawTcb.committed, product, 'committed_tcb'),
    launchTcb: decodeSnpTcb(r.rawTcb.launch, product, 'launch_tcb'),
    policy: `0x${r.policy.toString(16)}`,
    vmpl: r.vmpl,
    guestSvn: r.guestSvn,
    familyId: toHex(r.familyId),
    imageId: toHex(r.imageId),
    idKeyDigest: toHex(r.idKeyDigest),
    authorKeyDigest: toHex(r.authorKeyDigest),
    reportId: toHex(r.reportId),
    platformInfo: `0x${r.platformInfo.toString(16)}`,
    signingKey: r.signingKey,
    firmware: { ...r.currentVersion },
  };
}

/**
 * Verifies a SEV-SNP attestation report and returns its claims. Throws a VerificationError whose
 * layer names the failing step: PARSE, CHAIN (untrusted root, bad signature, expired, revoked,
 * wrong product, extension mismatch), SIGNATURE (report signature).
 */
export async function verifySnpReport(
  bytes: Uint8Array,
  opts: VerifySnpOptions,
): Promise<SnpVerification> {
  const now = verificationTime(opts.now, 'SNP');
  const report = parseSnpReport(bytes, opts.product === undefined ? {} : { product: opts.product });

  let collateral = opts.collateral;
  if (opts.vcek === undefined && collateral?.endorsementKeyCert === undefined && opts.source) {
    if (report.product === undefined) {
      throw evidenceError(
        'CHAIN_INCOMPLETE',
        'SNP: a version 2 report needs `product` to look up its VCEK',
        { details: { version: report.version } },
      );
    }
    const fetched = await opts.source.snp({
      product: report.product,
      signingKey: report.signingKey,
      hwid: toHex(report.chipId),
      reportedTcb: decodeSnpTcb(report.rawTcb.reported, report.product, 'reported_tcb'),
    });
    collateral = {
      ...fetched,
      ...(opts.collateral?.crl === undefined ? {} : { crl: opts.collateral.crl }),
    };
  }
  const leafDer = opts.vcek ?? collateral?.endorsementKeyCert;
  if (leafDer === undefined) {
    throw evidenceError('CHAIN_INCOMPLETE', 'SNP: no VCEK or VLEK certificate was supplied', {
      details: { signingKey: report.signingKey },
    });
  }
  const entry = await certEntry([leafDer, ...(collateral?.chain ?? [])]);
  const { info } = entry;

  // Product: CPUID (v3+) or the caller, else the certificate (v2). A certificate for another
  // product line must not vouch for this report (stops cross-product key confusion).
  const product = report.product ?? info.product;
  if (report.product === undefined) checkSnpProductLayout(report, product);
  const productRoots = (opts.roots ?? SNP_ROOTS)[product];
  if (productRoots === undefined) {
    throw evidenceError('CHAIN_UNTRUSTED_ROOT', `SNP: no pinned roots for ${product}`, {
      details: { product },
    });
  }

  // Chain: ARK (pinned by key, self-signed) -> ASK (VCEK) or ASVK (VLEK) -> leaf. Of the pinned
  // intermediates only the one for the key type the report names is offered, and the leaf's own
  // type is checked against the report's flag below, so a VLEK cannot pass as a VCEK or the
  // reverse.
  let byKind = entry.chains.get(productRoots);
  let chain = byKind?.get(report.signingKey);
  if (chain === undefined) {
    const intermediate = report.signingKey === 'vcek' ? productRoots.ask : productRoots.asvk;
    const label = `SNP ${report.signingKey.toUpperCase()} chain (${product})`;
    // The pinned intermediate and ARK first; certificates beside the evidence are used only
    // where those do not fit, and otherwise ignored (a bundle may hold other products' ASKs).
    const path = await buildSignedPath(
      entry.leafRaw,
      [],
      [
        rawCert(new Uint8Array(intermediate.rawData), `${label} intermediate`),
        anchorRawCert(productRoots.ark),
        ...entry.beside,
      ],
      label,
    );
    // Exactly leaf, ASK/ASVK, ARK: the ARK issues only the intermediates, so this stops a key
    // certificate whose key lives on a chip (a VCEK extracted from one part, at one TCB)
    // certifying "VCEKs" for other chips or newer TCBs one level further down.
    if (path.certs.length !== 3) {
      throw evidenceError('CHAIN_INCOMPLETE', `${label}: not VCEK/VLEK, ASK/ASVK and ARK`, {
        details: { certificates: path.certs.length },
      });
    }
    // The VCEK/VLEK key signs the report (AMD's carry no keyUsage; one that does must allow it).
    checkLeafSigner(path.certs[0] as CertInfo, label);
    const root = checkPinned(path, [productRoots.ark], label);
    chain = { path, verified: { path: path.certs.map((c) => c.cert), root } };
    if (byKind === undefined) {
      byKind = new Map();
      entry.chains.set(productRoots, byKind);
    }
    byKind.set(report.signingKey, chain);
  }
  checkValidity(chain.path, now, 'SNP chain');

  // Revocation: the ARK-signed KDS CRL lists revoked ASKs/ASVKs (stops a leaked intermediate).
  if (collateral?.crl !== undefined) {
    const crl = crlInfo(collateral.crl, 'AMD CRL');
    const unused = await checkPathCrls(chain.path, [crl], now, 'SNP chain');
    // A CRL from another product's ARK is the wrong collateral, not a clean bill of health.
    if (unused.length > 0) {
      throw evidenceError('COLLATERAL_MISMATCH', 'SNP: the CRL is not issued by this chain', {
        details: { crlIssuer: crl.issuer, product },
      });
    }
  }

  // Key type: the report says which key signed it; the certificate must be that kind.
  if (info.kind !== report.signingKey) extMismatch('key type', info.kind, report.signingKey);
  if (info.product !== product) extMismatch('productName1', info.productName, product);

  // hwID binds a VCEK to one chip: stops a VCEK of another chip vouching for this report.
  if (info.kind === 'vcek') {
    const chip = product === 'Turin' ? report.chipId.subarray(0, 8) : report.chipId;
    if (info.hwId === undefined || !bytesEqual(info.hwId, chip)) {
      extMismatch('hwID', info.hwId === undefined ? null : toHex(info.hwId), toHex(chip));
    }
  }
  // SPLs: the key was derived for exactly this reported TCB; stops a rolled-back TCB posing as
  // a newer one under an old key, or the reverse.
  const tcb = decodeSnpTcb(report.rawTcb.reported, product, 'reported_tcb');
  const spl = info.spl;
  if (
    spl.bootloader !== tcb.bootloader ||
    spl.tee !== tcb.tee ||
    spl.snp !== tcb.snp ||
    spl.microcode !== tcb.microcode ||
    spl.fmc !== tcb.fmc
  ) {
    extMismatch('SPLs', spl, tcb);
  }

  // The report signature: the only check that depends on the report bytes themselves.
  const ok = await ecdsaVerify('P-384', entry.key, report.signature, report.signedRegion);
  if (!ok) {
    throw evidenceError(
      'SIGNATURE_INVALID',
      'SNP: the report signature does not verify with the VCEK/VLEK',
      {
        details: { signingKey: report.signingKey, product },
      },
    );
  }

  return {
    claims: claimsOf(report, product),
    report,
    product,
    signingKey: report.signingKey,
    chain: chain.verified,
  };
}
