/**
 * Intel DCAP quote verification (SGX quote v3/v4/v5, TDX quote v4/v5), in the order of Intel's
 * Quote Verification Library (`QuoteVerifier.cpp`) and dcap-qvl `verify_impl`:
 *   1. root CA CRL signed by the pinned Intel SGX Root CA and current;
 *   2. TCB Info: issuer chain, window, signature over the exact text;
 *   3. QE Identity: the same;
 *   4. PCK chain from the quote to the pinned root, validity, PCK CRL of the issuing CA and root
 *      CA CRL (both applied with the one CRL rule of pki/path.ts);
 *   5. QE report signature by the PCK key;
 *   6. QE report data = SHA-256(attestation key || QE auth data) || 32 zero bytes;
 *   7. QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT / ATTRIBUTES, QE TCB level);
 *   8. quote signature by the attestation key over the signed region;
 *   9. FMSPC / PCE-ID of the PCK equal the TCB Info's; platform TCB level (+ TDX module), merged
 *      with the QE status; advisory IDs.
 * Revoked and "no matching level" are refused; every other status is returned for policy. Debug
 * is a claim, judged by policy, not here.
 *
 * Speed: checks that depend only on bytes repeated across quotes (collateral signatures, the PCK
 * chain's signatures and extension, the QE report signature) are memoised by those exact bytes
 * (successes only). Checks that depend on the quote itself or on the time (quote signature,
 * binding, TCB matching, validity windows, revocation, root pinning) run on every call.
 */
import { bytesEqual, concatBytes, isAllZero, toHex } from '../bytes.js';
import type { IntelTcbStatus, SgxClaims, TdxClaims } from '../claims.js';
import type { IntelCollateralJson } from '../collateral/types.js';
import { ecdsaVerify, importEcRawXY, importEcSpki, sha256 } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import { BoundedMemo, bytesKey } from '../memo.js';
import { certInfo, extensionValue, type CertInfo, type RawCert } from '../pki/cert-cache.js';
import {
  anchorRawCert,
  buildSignedPath,
  checkLeafSigner,
  checkPathCrls,
  checkPinned,
  checkValidity,
  verificationTime,
  type SignedPath,
} from '../pki/path.js';
import type { TrustAnchor } from '../pki/x509.js';
import {
  checkCollateral,
  checkRootCaCrl,
  parseIntelCollateral,
  verifyCollateralSignatures,
  type ParsedIntelCollateral,
} from './collateral.js';
import { INTEL_SGX_ROOT_CA, intelRawCert } from './intel-root.js';
import { parsePckExtension, SGX_EXTENSION_OID, type PckExtension } from './pck-extension.js';
import {
  decodePckChainData,
  parseDcapQuoteLayout,
  type DcapQuote,
  type SgxReportBody,
  type TdReportBody,
} from './quote.js';
import { evaluateTcb, matchQeIdentity } from './tcb.js';

export type { ParsedIntelCollateral };

/** Options of {@link verifyDcapQuote}. */
export interface DcapVerifyOptions {
  /** Intel collateral for the quote's FMSPC and TEE type; without it the result is COLLATERAL_MISSING. */
  readonly collateral?: IntelCollateralJson | ParsedIntelCollateral | undefined;
  /** The verification time (certificates, CRLs and collateral must be valid then). */
  readonly now: Date;
  /** Pinned roots (by key). Default: the production Intel SGX Root CA. */
  readonly roots?: readonly TrustAnchor[];
}

/** What the PCK certificate says about the platform. */
export interface DcapPckInfo extends PckExtension {
  /** Which Intel CA issued the PCK certificate (selects the PCK CRL). */
  readonly ca: 'processor' | 'platform';
  readonly subject: string;
  readonly issuer: string;
}

/** The quoting enclave that signed the attestation key. */
export interface DcapQeInfo {
  readonly mrEnclave: string;
  readonly mrSigner: string;
  readonly isvProdId: number;
  readonly isvSvn: number;
  /** The QE's own TCB level status. */
  readonly tcbStatus: IntelTcbStatus;
}

interface DcapResultBase {
  readonly version: 3 | 4 | 5;
  readonly tcbStatus: IntelTcbStatus;
  readonly advisoryIds: readonly string[];
  /** tcbDate of the matched platform TCB level. */
  readonly tcbDate: string;
  readonly pck: DcapPckInfo;
  readonly qe: DcapQeInfo;
  /** The instant range in which every certificate, CRL and collateral item used is valid. */
  readonly collateralWindow: { readonly notBefore: Date; readonly notAfter: Date };
}

export interface DcapSgxResult extends DcapResultBase {
  readonly tee: 'sgx';
  readonly claims: SgxClaims;
}

export interface DcapTdxResult extends DcapResultBase {
  readonly tee: 'tdx';
  readonly claims: TdxClaims;
  /** The TDX module identity used ("TDX_01"...), absent when the base module identity applied. */
  readonly tdxModule: { readonly id?: string; readonly tcbStatus?: IntelTcbStatus };
}

/** A verified DCAP quote. */
export type DcapVerifiedQuote = DcapSgxResult | DcapTdxResult;

/** What the PCK part of a quote established; memoised by the exact certification bytes. */
interface PckEntry {
  readonly path: SignedPath;
  readonly leaf: CertInfo;
  readonly pck: DcapPckInfo;
}

const keyMemo = new BoundedMemo<CryptoKey>(1024);

/**
 * What has been established about one exact QE certification region (QE report, its signature,
 * the QE auth data and the PCK chain): the verified PCK path, whether the QE report signature
 * verified, and which attestation keys it binds. Found by the QE report signature (short, and
 * unique per QE report), then confirmed against the exact bytes: a region that differs in any
 * byte starts from nothing. Only successes are recorded.
 */
interface RegionState {
  readonly bytes: Uint8Array;
  pck?: PckEntry;
  qeSignatureVerified?: boolean;
  readonly boundKeys: Set<string>;
}
const regions = new BoundedMemo<RegionState>(1024);

function regionState(region: Uint8Array, qeSignature: Uint8Array): RegionState {
  const k = bytesKey(qeSignature);
  const hit = regions.get(k);
  if (hit !== undefined && bytesEqual(hit.bytes, region)) return hit;
  return regions.set(k, { bytes: region.slice(), boundKeys: new Set() });
}

const CA_PROCESSOR = 'Intel SGX PCK Processor CA';
const CA_PLATFORM = 'Intel SGX PCK Platform CA';

/** The leaf of a carried PCK chain: the one certificate that issued none of the others (Intel's
 * samples carry the chain root first, real quotes leaf first). */
function pckLeaf(raws: readonly RawCert[]): RawCert {
  const leaves = raws.filter((c) => !raws.some((o) => o !== c && o.issuerKey === c.subjectKey));
  const leaf = leaves[0];
  if (leaf === undefined || leaves.length !== 1) {
    throw evidenceError('CHAIN_INCOMPLETE', 'PCK chain has no single leaf certificate', {
      details: { leaves: leaves.length },
    });
  }
  return leaf;
}

/** The SGX extension of a PCK certificate and which Intel CA issued it (selects the PCK CRL). */
function pckFacts(leaf: CertInfo): { ext: PckExtension; ca: 'processor' | 'platform' } {
  const value = extensionValue(leaf, SGX_EXTENSION_OID);
  if (value === undefined) {
    throw evidenceError('CHAIN_BAD_EXTENSION', 'PCK certificate has no SGX extension');
  }
  const issuerCn = /(?:^|,\s*)CN=([^,]+)/.exec(leaf.issuer)?.[1]?.trim();
  const ca =
    issuerCn === CA_PROCESSOR ? 'processor' : issuerCn === CA_PLATFORM ? 'platform' : undefined;
  if (ca === undefined) {
    throw evidenceError(
      'CHAIN_BAD_EXTENSION',
      `PCK certificate issued by an unknown CA "${leaf.issuer}"`,
      {
        details: { issuer: leaf.issuer },
      },
    );
  }
  return { ext: parsePckExtension(value), ca };
}

function pckRawCerts(chainRaw: Uint8Array): RawCert[] {
  return decodePckChainData(chainRaw).certificates.map((d, i) =>
    intelRawCert(d, `pck_chain[${i}]`),
  );
}

/**
 * Which Intel collateral a quote needs (FMSPC and issuing CA of its PCK certificate), read
 * without verifying anything: the quote is verified afterwards against what is fetched.
 */
export function pckCollateralQuery(quote: DcapQuote): {
  fmspc: string;
  ca: 'processor' | 'platform';
} {
  const leaf = certInfo(pckLeaf(pckRawCerts(quote.pckChain.raw)).der, 'PCK certificate');
  const { ext, ca } = pckFacts(leaf);
  return { fmspc: ext.fmspc, ca };
}

async function pckEntry(chainRaw: Uint8Array, anchors: readonly TrustAnchor[]): Promise<PckEntry> {
  const raws = pckRawCerts(chainRaw);
  const leafRaw = pckLeaf(raws);
  const path = await buildSignedPath(
    leafRaw,
    raws.filter((c) => c !== leafRaw),
    anchors.map(anchorRawCert),
    'PCK chain',
  );
  // Intel's hierarchy is PCK, PCK CA, root: the PCK CA is needed for its CRL, so a PCK that a
  // pinned root signed directly (or one pinned itself) is refused here, not met as a gap later.
  if (path.certs.length !== 3) {
    throw evidenceError('CHAIN_INCOMPLETE', 'PCK chain is not PCK, PCK CA and root', {
      details: { certificates: path.certs.length },
    });
  }
  const leaf = path.certs[0] as CertInfo;
  // The PCK key signs the QE report.
  checkLeafSigner(leaf, 'PCK chain');
  const { ext, ca } = pckFacts(leaf);
  return { path, leaf, pck: { ...ext, ca, subject: leaf.subject, issuer: leaf.issuer } };
}

async function verifyQeReportSignature(
  leaf: CertInfo,
  qeReport: Uint8Array,
  sig: Uint8Array,
  state: RegionState,
): Promise<void> {
  if (state.qeSignatureVerified === true) return;
  const key =
    keyMemo.get(leaf.spkiKey) ??
    keyMemo.set(
      leaf.spkiKey,
      await importEcSpki('P-256', new Uint8Array(leaf.cert.publicKey.rawData), 'PCK public key'),
    );
  // Stops a QE report (and so an attestation key) that no genuine, certified platform produced.
  if (!(await ecdsaVerify('P-256', key, sig, qeReport))) {
    throw evidenceError(
      'SIGNATURE_INVALID',
      'QE report signature does not verify with the PCK key',
      {
        details: { signature: 'qe_report' },
      },
    );
  }
  state.qeSignatureVerified = true;
}

async function attestationKey(xy: Uint8Array): Promise<CryptoKey> {
  const k = bytesKey(xy);
  return keyMemo.get(k) ?? keyMemo.set(k, await importEcRawXY('P-256', xy, 'attestation_key'));
}

function sgxClaims(b: SgxReportBody): SgxClaims {
  return {
    tee: 'sgx',
    reportData: toHex(b.reportData),
    debug: ((b.attributes[0] as number) & 0x02) !== 0,
    mrEnclave: toHex(b.mrEnclave),
    mrSigner: toHex(b.mrSigner),
    isvProdId: b.isvProdId,
    isvSvn: b.isvSvn,
    attributes: toHex(b.attributes),
    miscSelect: toHex(b.miscSelect),
    cpuSvn: toHex(b.cpuSvn),
    configId: toHex(b.configId),
    configSvn: b.configSvn,
    isvExtProdId: toHex(b.isvExtProdId),
    isvFamilyId: toHex(b.isvFamilyId),
  };
}

function tdxClaims(b: TdReportBody): TdxClaims {
  const base: TdxClaims = {
    tee: 'tdx',
    reportData: toHex(b.reportData),
    debug: ((b.tdAttributes[0] as number) & 0x01) !== 0,
    mrTd: toHex(b.mrTd),
    rtmrs: [toHex(b.rtmrs[0]), toHex(b.rtmrs[1]), toHex(b.rtmrs[2]), toHex(b.rtmrs[3])],
    mrSeam: toHex(b.mrSeam),
    mrSignerSeam: toHex(b.mrSignerSeam),
    mrConfigId: toHex(b.mrConfigId),
    mrOwner: toHex(b.mrOwner),
    mrOwnerConfig: toHex(b.mrOwnerConfig),
    teeTcbSvn: toHex(b.teeTcbSvn),
    tdAttributes: toHex(b.tdAttributes),
    seamAttributes: toHex(b.seamAttributes),
    xfam: toHex(b.xfam),
  };
  if (b.teeTcbSvn2 === undefined || b.mrServiceTd === undefined) return base;
  return { ...base, teeTcbSvn2: toHex(b.teeTcbSvn2), mrServiceTd: toHex(b.mrServiceTd) };
}

/**
 * Verifies a DCAP quote against Intel collateral at `now`, with the Intel SGX Root CA (or the
 * given roots) pinned by key. Throws a `VerificationError` naming the layer that rejected it.
 */
export async function verifyDcapQuote(
  bytes: Uint8Array,
  opts: DcapVerifyOptions,
): Promise<DcapVerifiedQuote> {
  const now = verificationTime(opts.now, 'DCAP');
  const roots = opts.roots ?? [INTEL_SGX_ROOT_CA];
  const q = parseDcapQuoteLayout(bytes);
  const region = regionState(q.qeCertificationRegion, q.qeReportSignature);
  const tee = q.header.teeType;

  // 1-3: collateral (signatures memoised; pinning and windows checked now).
  let coll: ParsedIntelCollateral | undefined;
  let window: { notBefore: number; notAfter: number } | undefined;
  let pckCrlIssuerKey: string | undefined;
  if (opts.collateral !== undefined) {
    coll = 'kind' in opts.collateral ? opts.collateral : parseIntelCollateral(opts.collateral);
    const signed = await verifyCollateralSignatures(coll);
    window = await checkCollateral(coll, signed, roots, now);
    pckCrlIssuerKey = (signed.pckCrlPath.certs[0] as CertInfo).spkiKey;
    // Stops verifying a TDX quote against SGX rules (or the reverse) with collateral of another kind.
    const wantQe = tee === 'tdx' ? 'TD_QE' : 'QE';
    if (coll.tcbInfo.id !== (tee === 'tdx' ? 'TDX' : 'SGX') || coll.qeIdentity.id !== wantQe) {
      throw evidenceError(
        'COLLATERAL_MISMATCH',
        `collateral is for ${coll.tcbInfo.id}/${coll.qeIdentity.id}, the quote is ${tee}`,
        {
          details: { tee, tcbInfoId: coll.tcbInfo.id, qeIdentityId: coll.qeIdentity.id },
        },
      );
    }
  }

  // 4: PCK chain (signatures and extension memoised by the exact bytes) to a pinned root.
  const entry = region.pck ?? (region.pck = await pckEntry(q.pckChainRaw, roots));
  checkPinned(entry.path, roots, 'PCK chain');
  checkValidity(entry.path, now, 'PCK chain');
  const pckCa = entry.path.certs[1] as CertInfo;
  if (coll !== undefined) {
    // The PCK CRL must come from the CA that issued this PCK (Processor vs Platform CA): a CRL
    // of the other CA would never list this certificate.
    const { pckCrl, rootCaCrl } = coll.parts;
    if (pckCrlIssuerKey !== pckCa.spkiKey || pckCrl.issuer !== pckCa.subject) {
      throw evidenceError(
        'COLLATERAL_MISMATCH',
        `PCK CRL is not from the PCK issuer "${entry.leaf.issuer}"`,
        {
          details: { ca: entry.pck.ca, crlIssuer: pckCrl.issuer },
        },
      );
    }
    // The PCK CRL revokes PCKs, the root CA CRL the PCK CAs: both under the one CRL rule.
    await checkPathCrls(entry.path, [pckCrl], now, 'PCK chain');
    await checkRootCaCrl(rootCaCrl, entry.path, now, 'PCK chain');
  }

  // 5: QE report signed by the PCK key.
  await verifyQeReportSignature(entry.leaf, q.qeReport.raw, q.qeReportSignature, region);

  // 8 starts now; 6 is judged first. The binding is a pure function of the attestation key and
  // the QE certification bytes, so an exact repeat of a binding that held is not hashed again.
  const attKey = await attestationKey(q.attestationKey);
  const quoteSig = ecdsaVerify('P-256', attKey, q.signature, q.signedRegion);
  const bindKey = bytesKey(q.attestationKey);
  let bound = region.boundKeys.has(bindKey);
  if (!bound) {
    const digest = await sha256(concatBytes(q.attestationKey, q.qeAuthData));
    bound =
      bytesEqual(digest, q.qeReport.reportData.subarray(0, 32)) &&
      isAllZero(q.qeReport.reportData.subarray(32));
    if (bound) region.boundKeys.add(bindKey);
  }
  const quoteSigOk = await quoteSig;
  // Stops an attestation key the QE never certified: its hash must be in the signed QE report.
  if (!bound) {
    throw evidenceError('BINDING_MISMATCH', 'QE report data does not bind the attestation key', {
      details: { binding: 'qe_report_data' },
    });
  }
  const tdBody = q.body.kind === 'sgx' ? undefined : q.body;

  // 7: the QE's identity and TCB level.
  const qeLevel = coll === undefined ? undefined : matchQeIdentity(coll.qeIdentity, q.qeReport);
  // 8: the quote itself. Stops any change to the header or report body.
  if (!quoteSigOk) {
    throw evidenceError(
      'SIGNATURE_INVALID',
      'quote signature does not verify with the attestation key',
      {
        details: { signature: 'quote' },
      },
    );
  }
  if (coll === undefined || qeLevel === undefined || window === undefined) {
    throw evidenceError(
      'COLLATERAL_MISSING',
      `no Intel collateral for ${tee} FMSPC ${entry.pck.fmspc}`,
      {
        details: { tee, fmspc: entry.pck.fmspc, ca: entry.pck.ca, signaturesValid: true },
      },
    );
  }
  // 9: the collateral must describe this platform. Stops judging a platform by another's TCB levels.
  if (coll.tcbInfo.fmspc !== entry.pck.fmspc || coll.tcbInfo.pceId !== entry.pck.pceId) {
    throw evidenceError('COLLATERAL_MISMATCH', 'TCB Info is for another FMSPC or PCE ID', {
      details: {
        fmspc: entry.pck.fmspc,
        pceId: entry.pck.pceId,
        tcbInfoFmspc: coll.tcbInfo.fmspc,
        tcbInfoPceId: coll.tcbInfo.pceId,
      },
    });
  }
  const verdict = evaluateTcb(coll.tcbInfo, qeLevel, entry.pck, tdBody);
  if (verdict.status === 'Revoked') {
    throw evidenceError('TCB_REVOKED', 'the TCB level is revoked', {
      details: { fmspc: entry.pck.fmspc },
    });
  }
  let notBefore = window.notBefore;
  let notAfter = window.notAfter;
  for (const c of entry.path.certs) {
    notBefore = Math.max(notBefore, c.notBefore);
    notAfter = Math.min(notAfter, c.notAfter);
  }
  const base = {
    version: q.header.version,
    tcbStatus: verdict.status,
    advisoryIds: verdict.advisoryIds,
    tcbDate: verdict.platformLevel.tcbDate,
    pck: entry.pck,
    qe: {
      mrEnclave: toHex(q.qeReport.mrEnclave),
      mrSigner: toHex(q.qeReport.mrSigner),
      isvProdId: q.qeReport.isvProdId,
      isvSvn: q.qeReport.isvSvn,
      tcbStatus: verdict.qeLevel.tcbStatus,
    },
    collateralWindow: { notBefore: new Date(notBefore), notAfter: new Date(notAfter) },
  };
  if (tdBody === undefined) {
    return { ...base, tee: 'sgx', claims: sgxClaims(q.body as SgxReportBody) };
  }
  const m = verdict.module;
  return {
    ...base,
    tee: 'tdx',
    claims: tdxClaims(tdBody),
    tdxModule: {
      ...(m?.id === undefined ? {} : { id: m.id }),
      ...(m?.level === undefined ? {} : { tcbStatus: m.level.tcbStatus }),
    },
  };
}
