/**
 * Intel DCAP collateral: TCB Info v2/v3 and Enclave (QE) Identity v2 as served by the Intel
 * Provisioning Certification Service v4 ("Intel SGX and Intel TDX PCS API", sections "Get TCB
 * Info" and "Get Intel's QE Identity"; TCB Info and Enclave Identity JSON schemas), with their
 * issuer chains and the PCK and Root CA CRLs, in the `QuoteCollateralV3` JSON form of dcap-qvl.
 *
 * The signature covers the exact bytes of the `tcbInfo` / `enclaveIdentity` JSON text, so the
 * text is kept as given and never re-serialised. The JSON is read strictly (duplicate members
 * rejected). Everything here depends only on the collateral, so parsing and signature checks are
 * memoised by the exact collateral strings; time windows, root pinning and revocation are checked
 * per verification (`checkCollateral`). Both CRLs are applied by the one CRL rule of pki/path.ts
 * (`checkPathCrls`): the root CA CRL to every Intel chain, the PCK CRL to the PCK chain.
 */
import { INTEL_TCB_STATUSES, type IntelTcbStatus } from '../claims.js';
import { fromHex, utf8 } from '../bytes.js';
import type { IntelCollateralJson } from '../collateral/types.js';
import { ecdsaVerify, importEcSpki } from '../crypto.js';
import { evidenceError } from '../error-codes.js';
import { BoundedMemo } from '../memo.js';
import { certInfo, crlInfo, crlSignedBy, type CertInfo, type CrlInfo } from '../pki/cert-cache.js';
import {
  buildSignedPath,
  checkCrlSigner,
  checkLeafSigner,
  checkPathCrls,
  checkPinned,
  checkValidity,
  type SignedPath,
} from '../pki/path.js';
import type { TrustAnchor } from '../pki/x509.js';
import { intelRawCert } from './intel-root.js';
import { decodePckChainData } from './quote.js';
import { parseStrictJson, type JsonValue } from './strict-json.js';

/** Status values a TCB level may carry (TCB Info v3 schema): all but the TDX relaunch advice. */
export type TcbLevelStatus = Exclude<IntelTcbStatus, `TDRelaunchAdvised${string}`>;
const STATUSES: readonly TcbLevelStatus[] = INTEL_TCB_STATUSES.filter(
  (s): s is TcbLevelStatus => !s.startsWith('TDRelaunchAdvised'),
);

export interface PlatformTcbLevel {
  /** SGX TCB component SVNs 1..16. */
  readonly sgxComponents: readonly number[];
  readonly pceSvn: number;
  /** TDX TCB Info only: TEE TCB SVN components 0..15. */
  readonly tdxComponents?: readonly number[];
  readonly tcbDate: string;
  readonly tcbStatus: TcbLevelStatus;
  readonly advisoryIds: readonly string[];
}

export interface IsvTcbLevel {
  readonly isvSvn: number;
  readonly tcbDate: string;
  readonly tcbStatus: TcbLevelStatus;
  readonly advisoryIds: readonly string[];
}

export interface TdxModuleIdentity {
  readonly id: string;
  readonly mrSigner: Uint8Array;
  readonly attributes: Uint8Array;
  readonly attributesMask: Uint8Array;
  readonly tcbLevels: readonly IsvTcbLevel[];
}

export interface TcbInfo {
  readonly id: 'SGX' | 'TDX';
  readonly version: 2 | 3;
  readonly issueDate: Date;
  readonly nextUpdate: Date;
  /** Lowercase hex. */
  readonly fmspc: string;
  readonly pceId: string;
  readonly tcbType: number;
  readonly tcbEvaluationDataNumber: number;
  readonly tcbLevels: readonly PlatformTcbLevel[];
  readonly tdxModule?: {
    readonly mrSigner: Uint8Array;
    readonly attributes: Uint8Array;
    readonly attributesMask: Uint8Array;
  };
  readonly tdxModuleIdentities?: readonly TdxModuleIdentity[];
}

export interface QeIdentity {
  readonly id: 'QE' | 'TD_QE' | 'QVE';
  readonly version: 2;
  readonly issueDate: Date;
  readonly nextUpdate: Date;
  readonly tcbEvaluationDataNumber: number;
  readonly miscselect: Uint8Array;
  readonly miscselectMask: Uint8Array;
  readonly attributes: Uint8Array;
  readonly attributesMask: Uint8Array;
  readonly mrSigner: Uint8Array;
  readonly isvProdId: number;
  readonly tcbLevels: readonly IsvTcbLevel[];
}

/** Collateral parsed once; pass it to `verifyDcapQuote` in place of the JSON to skip even the lookup. */
export interface ParsedIntelCollateral {
  readonly kind: 'intel-collateral';
  readonly tcbInfo: TcbInfo;
  /** The exact signed text of the `tcbInfo` object. */
  readonly tcbInfoText: string;
  readonly qeIdentity: QeIdentity;
  readonly qeIdentityText: string;
  /** @internal */
  readonly parts: CollateralParts;
}

/** @internal Parsed certificates, CRLs and signatures. */
export interface CollateralParts {
  readonly tcbInfoSignature: Uint8Array;
  readonly tcbInfoChain: readonly CertInfo[];
  readonly qeIdentitySignature: Uint8Array;
  readonly qeIdentityChain: readonly CertInfo[];
  readonly pckCrl: CrlInfo;
  readonly pckCrlChain: readonly CertInfo[];
  readonly rootCaCrl: CrlInfo;
}

function malformed(field: string, why: string): never {
  throw evidenceError('COLLATERAL_MALFORMED', `${field}: ${why}`, { details: { field } });
}

type Obj = { [k: string]: JsonValue };
function obj(v: JsonValue | undefined, field: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    malformed(field, 'expected an object');
  return v;
}
function arr(v: JsonValue | undefined, field: string, max = 1024): JsonValue[] {
  if (!Array.isArray(v)) malformed(field, 'expected an array');
  if (v.length > max) malformed(field, 'array too long');
  return v;
}
function str(v: JsonValue | undefined, field: string): string {
  if (typeof v !== 'string') malformed(field, 'expected a string');
  return v;
}
function uint(v: JsonValue | undefined, field: string, max = 0xffff): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    malformed(field, 'expected a small non-negative integer');
  return v;
}
function hexBytes(v: JsonValue | undefined, len: number, field: string): Uint8Array {
  const s = str(v, field);
  if (s.length !== 2 * len || !/^[0-9a-fA-F]*$/.test(s))
    malformed(field, `expected ${len} bytes of hex`);
  return fromHex(s, field);
}
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;
function date(v: JsonValue | undefined, field: string): Date {
  const s = str(v, field);
  const t = ISO.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(t)) malformed(field, 'expected an ISO 8601 UTC date');
  return new Date(t);
}
function status(v: JsonValue | undefined, field: string): TcbLevelStatus {
  const s = str(v, field);
  const found = STATUSES.find((x) => x === s);
  if (found === undefined) malformed(field, `unknown TCB status "${s}"`);
  return found;
}
function advisories(v: JsonValue | undefined, field: string): string[] {
  if (v === undefined) return [];
  return arr(v, field).map((a, i) => str(a, `${field}[${i}]`));
}
function isvLevels(v: JsonValue | undefined, field: string): IsvTcbLevel[] {
  const levels = arr(v, field).map((l, i) => {
    const o = obj(l, `${field}[${i}]`);
    return {
      isvSvn: uint(obj(o['tcb'], `${field}[${i}].tcb`)['isvsvn'], `${field}[${i}].tcb.isvsvn`),
      tcbDate: date(o['tcbDate'], `${field}[${i}].tcbDate`).toISOString(),
      tcbStatus: status(o['tcbStatus'], `${field}[${i}].tcbStatus`),
      advisoryIds: advisories(o['advisoryIDs'], `${field}[${i}].advisoryIDs`),
    };
  });
  if (levels.length === 0) malformed(field, 'no TCB levels');
  return levels;
}
function components(v: JsonValue | undefined, field: string): number[] {
  const a = arr(v, field);
  if (a.length !== 16) malformed(field, 'expected 16 components');
  return a.map((c, i) => uint(obj(c, `${field}[${i}]`)['svn'], `${field}[${i}].svn`, 255));
}

/** Parses TCB Info v2 (SGX) or v3 (SGX, TDX) from its exact signed text. */
export function parseTcbInfo(text: string): TcbInfo {
  const o = obj(parseStrictJson(text, 'tcbInfo').value, 'tcbInfo');
  const version = uint(o['version'], 'tcbInfo.version');
  if (version !== 2 && version !== 3) {
    throw evidenceError(
      'EVIDENCE_UNSUPPORTED_VERSION',
      `tcbInfo.version ${version} is not supported`,
      {
        details: { field: 'tcbInfo.version', value: version },
      },
    );
  }
  const id =
    version === 2
      ? o['id'] === undefined
        ? 'SGX'
        : str(o['id'], 'tcbInfo.id')
      : str(o['id'], 'tcbInfo.id');
  if (id !== 'SGX' && id !== 'TDX') malformed('tcbInfo.id', `unknown id "${id}"`);
  if (id === 'TDX' && version < 3) malformed('tcbInfo.version', 'TDX needs TCB Info v3');
  const tcbType = uint(o['tcbType'], 'tcbInfo.tcbType');
  // Only TCB type 0 (component SVN comparison) is defined; another type would need other rules.
  if (tcbType !== 0) malformed('tcbInfo.tcbType', `unsupported TCB type ${tcbType}`);
  const tcbLevels = arr(o['tcbLevels'], 'tcbInfo.tcbLevels').map((l, i): PlatformTcbLevel => {
    const f = `tcbInfo.tcbLevels[${i}]`;
    const lo = obj(l, f);
    const tcb = obj(lo['tcb'], `${f}.tcb`);
    let sgxComponents: number[];
    if (version === 2) {
      sgxComponents = [];
      for (let c = 1; c <= 16; c++) {
        const k = `sgxtcbcomp${String(c).padStart(2, '0')}svn`;
        sgxComponents.push(uint(tcb[k], `${f}.tcb.${k}`, 255));
      }
    } else sgxComponents = components(tcb['sgxtcbcomponents'], `${f}.tcb.sgxtcbcomponents`);
    const base = {
      sgxComponents,
      pceSvn: uint(tcb['pcesvn'], `${f}.tcb.pcesvn`),
      tcbDate: date(lo['tcbDate'], `${f}.tcbDate`).toISOString(),
      tcbStatus: status(lo['tcbStatus'], `${f}.tcbStatus`),
      advisoryIds: advisories(lo['advisoryIDs'], `${f}.advisoryIDs`),
    };
    if (id !== 'TDX') return base;
    return {
      ...base,
      tdxComponents: components(tcb['tdxtcbcomponents'], `${f}.tcb.tdxtcbcomponents`),
    };
  });
  if (tcbLevels.length === 0) malformed('tcbInfo.tcbLevels', 'no TCB levels');
  const info: TcbInfo = {
    id,
    version,
    issueDate: date(o['issueDate'], 'tcbInfo.issueDate'),
    nextUpdate: date(o['nextUpdate'], 'tcbInfo.nextUpdate'),
    fmspc: toLowerHex(hexBytes(o['fmspc'], 6, 'tcbInfo.fmspc')),
    pceId: toLowerHex(hexBytes(o['pceId'], 2, 'tcbInfo.pceId')),
    tcbType,
    tcbEvaluationDataNumber: uint(
      o['tcbEvaluationDataNumber'] ?? 0,
      'tcbInfo.tcbEvaluationDataNumber',
      0xffffffff,
    ),
    tcbLevels,
  };
  if (id !== 'TDX') return info;
  const m = obj(o['tdxModule'], 'tcbInfo.tdxModule');
  const tdxModule = {
    mrSigner: hexBytes(m['mrsigner'], 48, 'tcbInfo.tdxModule.mrsigner'),
    attributes: hexBytes(m['attributes'], 8, 'tcbInfo.tdxModule.attributes'),
    attributesMask: hexBytes(m['attributesMask'], 8, 'tcbInfo.tdxModule.attributesMask'),
  };
  const ids = o['tdxModuleIdentities'];
  const tdxModuleIdentities =
    ids === undefined
      ? undefined
      : arr(ids, 'tcbInfo.tdxModuleIdentities').map((x, i): TdxModuleIdentity => {
          const f = `tcbInfo.tdxModuleIdentities[${i}]`;
          const mo = obj(x, f);
          return {
            id: str(mo['id'], `${f}.id`),
            mrSigner: hexBytes(mo['mrsigner'], 48, `${f}.mrsigner`),
            attributes: hexBytes(mo['attributes'], 8, `${f}.attributes`),
            attributesMask: hexBytes(mo['attributesMask'], 8, `${f}.attributesMask`),
            tcbLevels: isvLevels(mo['tcbLevels'], `${f}.tcbLevels`),
          };
        });
  return {
    ...info,
    tdxModule,
    ...(tdxModuleIdentities === undefined ? {} : { tdxModuleIdentities }),
  };
}

function toLowerHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** Parses Enclave Identity v2 (QE, TD_QE, QVE) from its exact signed text. */
export function parseQeIdentity(text: string): QeIdentity {
  const o = obj(parseStrictJson(text, 'enclaveIdentity').value, 'enclaveIdentity');
  const version = uint(o['version'], 'enclaveIdentity.version');
  if (version !== 2) {
    throw evidenceError(
      'EVIDENCE_UNSUPPORTED_VERSION',
      `enclaveIdentity.version ${version} is not supported`,
      {
        details: { field: 'enclaveIdentity.version', value: version },
      },
    );
  }
  const id = str(o['id'], 'enclaveIdentity.id');
  if (id !== 'QE' && id !== 'TD_QE' && id !== 'QVE')
    malformed('enclaveIdentity.id', `unknown id "${id}"`);
  return {
    id,
    version,
    issueDate: date(o['issueDate'], 'enclaveIdentity.issueDate'),
    nextUpdate: date(o['nextUpdate'], 'enclaveIdentity.nextUpdate'),
    tcbEvaluationDataNumber: uint(
      o['tcbEvaluationDataNumber'] ?? 0,
      'enclaveIdentity.tcbEvaluationDataNumber',
      0xffffffff,
    ),
    miscselect: hexBytes(o['miscselect'], 4, 'enclaveIdentity.miscselect'),
    miscselectMask: hexBytes(o['miscselectMask'], 4, 'enclaveIdentity.miscselectMask'),
    attributes: hexBytes(o['attributes'], 16, 'enclaveIdentity.attributes'),
    attributesMask: hexBytes(o['attributesMask'], 16, 'enclaveIdentity.attributesMask'),
    mrSigner: hexBytes(o['mrsigner'], 32, 'enclaveIdentity.mrsigner'),
    isvProdId: uint(o['isvprodid'], 'enclaveIdentity.isvprodid'),
    tcbLevels: isvLevels(o['tcbLevels'], 'enclaveIdentity.tcbLevels'),
  };
}

function pemChain(text: unknown, field: string): CertInfo[] {
  if (typeof text !== 'string') malformed(field, 'expected PEM text');
  const chain = decodePckChainData(utf8(text)).certificates;
  return chain.map((der, i) => certInfo(der, `${field}[${i}]`));
}

function hexField(v: unknown, field: string): Uint8Array {
  if (typeof v !== 'string') malformed(field, 'expected hex text');
  return fromHex(v, field);
}

const KEYS = [
  'pck_crl_issuer_chain',
  'root_ca_crl',
  'pck_crl',
  'tcb_info_issuer_chain',
  'tcb_info',
  'tcb_info_signature',
  'qe_identity_issuer_chain',
  'qe_identity',
  'qe_identity_signature',
] as const;

const byObject = new WeakMap<object, ParsedIntelCollateral>();
const byText = new BoundedMemo<ParsedIntelCollateral>(64);

/**
 * Parses Intel collateral in the dcap-qvl JSON form (an object, or its JSON text). Memoised by
 * the exact strings, so repeated calls with the same collateral cost a lookup.
 */
export function parseIntelCollateral(json: IntelCollateralJson | string): ParsedIntelCollateral {
  if (typeof json === 'object' && json !== null) {
    const hit = byObject.get(json);
    if (hit !== undefined) return hit;
  }
  let o: Record<string, unknown>;
  if (typeof json === 'string') {
    o = obj(parseStrictJson(json, 'collateral').value, 'collateral');
  } else if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
    o = json as unknown as Record<string, unknown>;
  } else malformed('collateral', 'expected an object');
  const parts: string[] = [];
  for (const k of KEYS) {
    const v = o[k];
    if (typeof v !== 'string') malformed(`collateral.${k}`, 'missing or not a string');
    parts.push(v);
  }
  const textKey = parts.join('\u0000');
  let parsed = byText.get(textKey);
  if (parsed === undefined) {
    const tcbInfoText = o['tcb_info'] as string;
    const qeIdentityText = o['qe_identity'] as string;
    parsed = {
      kind: 'intel-collateral',
      tcbInfo: parseTcbInfo(tcbInfoText),
      tcbInfoText,
      qeIdentity: parseQeIdentity(qeIdentityText),
      qeIdentityText,
      parts: {
        tcbInfoSignature: signature64(o['tcb_info_signature'], 'collateral.tcb_info_signature'),
        tcbInfoChain: pemChain(o['tcb_info_issuer_chain'], 'collateral.tcb_info_issuer_chain'),
        qeIdentitySignature: signature64(
          o['qe_identity_signature'],
          'collateral.qe_identity_signature',
        ),
        qeIdentityChain: pemChain(
          o['qe_identity_issuer_chain'],
          'collateral.qe_identity_issuer_chain',
        ),
        pckCrl: crlInfo(hexField(o['pck_crl'], 'collateral.pck_crl'), 'collateral.pck_crl'),
        pckCrlChain: pemChain(o['pck_crl_issuer_chain'], 'collateral.pck_crl_issuer_chain'),
        rootCaCrl: crlInfo(
          hexField(o['root_ca_crl'], 'collateral.root_ca_crl'),
          'collateral.root_ca_crl',
        ),
      },
    };
    byText.set(textKey, parsed);
  }
  if (typeof json === 'object') byObject.set(json, parsed);
  return parsed;
}

function signature64(v: unknown, field: string): Uint8Array {
  const b = hexField(v, field);
  if (b.length !== 64) malformed(field, 'expected a 64-byte r||s signature');
  return b;
}

/** Raw Intel PCS responses (bodies and issuer-chain headers), as a caching fetcher stores them. */
export interface IntelPcsResponses {
  /** Body of `/tcb`: `{"tcbInfo":{...},"signature":"..."}`. */
  readonly tcbInfoBody: string;
  /** `TCB-Info-Issuer-Chain` header (PEM, URL-encoded or not). */
  readonly tcbInfoIssuerChain: string;
  /** Body of `/qe/identity`: `{"enclaveIdentity":{...},"signature":"..."}`. */
  readonly qeIdentityBody: string;
  /** `SGX-Enclave-Identity-Issuer-Chain` header. */
  readonly qeIdentityIssuerChain: string;
  /** `/pckcrl?...&encoding=der` body. */
  readonly pckCrl: Uint8Array;
  /** `SGX-PCK-CRL-Issuer-Chain` header. */
  readonly pckCrlIssuerChain: string;
  /** The Intel SGX Root CA CRL (DER). */
  readonly rootCaCrl: Uint8Array;
}

function headerPem(s: string, field: string): string {
  if (s.includes('-----BEGIN CERTIFICATE-----')) return s;
  try {
    return decodeURIComponent(s);
  } catch (cause) {
    throw evidenceError('COLLATERAL_MALFORMED', `${field}: not PEM or URL-encoded PEM`, {
      cause,
      details: { field },
    });
  }
}

/** The exact signed substring of `member` in a PCS body, and the body's signature. */
function splitPcsBody(body: string, member: string): { text: string; signature: string } {
  const { value, memberSpans } = parseStrictJson(body, member);
  const o = obj(value, member);
  const span = memberSpans.get(member);
  if (span === undefined) malformed(member, 'missing');
  const sig = str(o['signature'], `${member}.signature`);
  return { text: body.slice(span[0], span[1]), signature: sig };
}

/** Converts raw PCS responses to the dcap-qvl collateral form, keeping the exact signed text. */
export function intelCollateralFromPcs(r: IntelPcsResponses): IntelCollateralJson {
  const tcb = splitPcsBody(r.tcbInfoBody, 'tcbInfo');
  const qe = splitPcsBody(r.qeIdentityBody, 'enclaveIdentity');
  return {
    pck_crl_issuer_chain: headerPem(r.pckCrlIssuerChain, 'pckCrlIssuerChain'),
    root_ca_crl: toLowerHex(r.rootCaCrl),
    pck_crl: toLowerHex(r.pckCrl),
    tcb_info_issuer_chain: headerPem(r.tcbInfoIssuerChain, 'tcbInfoIssuerChain'),
    tcb_info: tcb.text,
    tcb_info_signature: tcb.signature,
    qe_identity_issuer_chain: headerPem(r.qeIdentityIssuerChain, 'qeIdentityIssuerChain'),
    qe_identity: qe.text,
    qe_identity_signature: qe.signature,
  };
}

/** What signature verification of a collateral set established (roots-independent). */
export interface SignedCollateral {
  readonly tcbInfoPath: SignedPath;
  readonly qeIdentityPath: SignedPath;
  /** The path of the certificate that signed the PCK CRL. */
  readonly pckCrlPath: SignedPath;
  /** The self-signed root all three paths end in. */
  readonly root: CertInfo;
}

const signedMemo = new WeakMap<ParsedIntelCollateral, SignedCollateral>();

async function verifyJsonSignature(
  text: string,
  sig: Uint8Array,
  signer: CertInfo,
  label: string,
): Promise<void> {
  const key = await importEcSpki(
    'P-256',
    new Uint8Array(signer.cert.publicKey.rawData),
    `${label} signer`,
  );
  // Stops forged or edited TCB levels / QE identities: Intel's TCB Signing key signs the exact text.
  if (!(await ecdsaVerify('P-256', key, sig, utf8(text)))) {
    throw evidenceError('COLLATERAL_SIGNATURE_INVALID', `${label}: signature does not verify`, {
      details: { collateral: label },
    });
  }
}

/**
 * Verifies the collateral's three issuer chains up to one self-signed root, and what their
 * leaves signed, in the order of Intel QVL (TCB Info, QE Identity, PCK CRL). Memoised per parsed
 * collateral; whether that root is pinned, all time windows and the root CA CRL (signed by the
 * root, applied with the one CRL rule) are checked by {@link checkCollateral} on every call.
 */
export async function verifyCollateralSignatures(
  c: ParsedIntelCollateral,
): Promise<SignedCollateral> {
  const hit = signedMemo.get(c);
  if (hit !== undefined) return hit;
  const p = c.parts;
  const path = async (chain: readonly CertInfo[], label: string): Promise<SignedPath> => {
    const [leaf, ...pool] = chain;
    if (leaf === undefined) throw evidenceError('CHAIN_INCOMPLETE', `${label}: no certificate`);
    return buildSignedPath(
      intelRawCert(leaf.der, label),
      pool.map((c) => intelRawCert(c.der, label)),
      [],
      label,
    );
  };
  // Intel's TCB Signing certificate is issued by the root itself. PCK certificates sit one level
  // further down, under a PCK CA, and their keys live on platforms: a PCK key extracted from an
  // out-of-date platform must not sign TCB levels or QE identities that call it (or any other
  // platform) up to date.
  const signerPath = async (chain: readonly CertInfo[], label: string): Promise<SignedPath> => {
    const sp = await path(chain, label);
    if (sp.certs.length !== 2) {
      throw evidenceError('CHAIN_INCOMPLETE', `${label}: not TCB Signing and root`, {
        details: { certificates: sp.certs.length },
      });
    }
    checkLeafSigner(sp.certs[0] as CertInfo, label);
    return sp;
  };
  const tcbInfoPath = await signerPath(p.tcbInfoChain, 'TCB Info issuer chain');
  const root = tcbInfoPath.top;
  await verifyJsonSignature(
    c.tcbInfoText,
    p.tcbInfoSignature,
    tcbInfoPath.certs[0] as CertInfo,
    'TCB Info',
  );
  const qeIdentityPath = await signerPath(p.qeIdentityChain, 'QE Identity issuer chain');
  await verifyJsonSignature(
    c.qeIdentityText,
    p.qeIdentitySignature,
    qeIdentityPath.certs[0] as CertInfo,
    'QE Identity',
  );
  const pckCrlPath = await path(p.pckCrlChain, 'PCK CRL issuer chain');
  // The PCK CRL is applied to the PCK chain per call (verify.ts); here it must be what the
  // leaf of its own issuer chain signed, as the TCB Info and QE Identity are, and that leaf
  // must be allowed to sign CRLs.
  const pckCrlSigner = pckCrlPath.certs[0] as CertInfo;
  checkCrlSigner(pckCrlSigner, 'PCK CRL issuer chain');
  if (!(await crlSignedBy(p.pckCrl, pckCrlSigner, 'collateral.pck_crl'))) {
    throw evidenceError(
      'COLLATERAL_SIGNATURE_INVALID',
      'PCK CRL is not signed by its issuer chain',
      {
        details: { crlIssuer: p.pckCrl.issuer },
      },
    );
  }
  for (const other of [qeIdentityPath, pckCrlPath]) {
    if (other.top.spkiKey !== root.spkiKey) {
      throw evidenceError('COLLATERAL_MISMATCH', 'collateral issuer chains end in different roots');
    }
  }
  const signed = { tcbInfoPath, qeIdentityPath, pckCrlPath, root };
  signedMemo.set(c, signed);
  return signed;
}

function checkWindow(label: string, issue: Date, next: Date, now: number): void {
  // Stops replay of superseded collateral (for example a TCB Info from before a TCB recovery).
  if (now < issue.getTime() || now > next.getTime()) {
    throw evidenceError(
      'COLLATERAL_EXPIRED',
      `${label} is not current at ${new Date(now).toISOString()}`,
      {
        details: {
          collateral: label,
          issueDate: issue.toISOString(),
          nextUpdate: next.toISOString(),
          now: new Date(now).toISOString(),
        },
      },
    );
  }
}

/**
 * Applies the Intel SGX Root CA CRL to `path`, an Intel chain (a collateral issuer chain or the
 * PCK chain), with the one CRL rule of pki/path.ts `checkPathCrls`: verified under the key of
 * the root, current at `now`, revoking only the certificates the root signed (the PCK Platform
 * and Processor CAs, the TCB Signing certificate). The CRL must name the root `path` ends in:
 * one naming another issuer is not the root's CRL (COLLATERAL_SIGNATURE_INVALID).
 */
export async function checkRootCaCrl(
  crl: CrlInfo,
  path: SignedPath,
  now: number,
  label: string,
): Promise<void> {
  if (crl.issuer !== path.top.subject) {
    throw evidenceError(
      'COLLATERAL_SIGNATURE_INVALID',
      `${label}: the root CA CRL names "${crl.issuer}", not the root`,
      { details: { crlIssuer: crl.issuer, root: path.top.subject } },
    );
  }
  await checkPathCrls(path, [crl], now, label);
}

/**
 * Per-call collateral checks, chain by chain in Intel QVL order (TCB Info, QE Identity, PCK CRL
 * issuer chains): root pinned, certificates valid and checked against the root CA CRL
 * ({@link checkRootCaCrl}: signed by the root, current), then the TCB Info or QE Identity
 * current. The PCK CRL is applied, and so checked to be current, with the PCK chain (verify.ts).
 * Returns the window [notBefore, notAfter] in which all of it, the PCK CRL included, holds.
 */
export async function checkCollateral(
  c: ParsedIntelCollateral,
  s: SignedCollateral,
  roots: readonly TrustAnchor[],
  now: number,
): Promise<{ notBefore: number; notAfter: number }> {
  const p = c.parts;
  const paths: [SignedPath, string][] = [
    [s.tcbInfoPath, 'TCB Info issuer chain'],
    [s.qeIdentityPath, 'QE Identity issuer chain'],
    [s.pckCrlPath, 'PCK CRL issuer chain'],
  ];
  for (const [path, label] of paths) {
    checkPinned(path, roots, label);
    checkValidity(path, now, label);
    await checkRootCaCrl(p.rootCaCrl, path, now, label);
    if (path === s.tcbInfoPath)
      checkWindow('TCB Info', c.tcbInfo.issueDate, c.tcbInfo.nextUpdate, now);
    if (path === s.qeIdentityPath)
      checkWindow('QE Identity', c.qeIdentity.issueDate, c.qeIdentity.nextUpdate, now);
  }
  let notBefore = Math.max(
    c.tcbInfo.issueDate.getTime(),
    c.qeIdentity.issueDate.getTime(),
    p.pckCrl.thisUpdate,
    p.rootCaCrl.thisUpdate,
  );
  let notAfter = Math.min(
    c.tcbInfo.nextUpdate.getTime(),
    c.qeIdentity.nextUpdate.getTime(),
    p.pckCrl.nextUpdate,
    p.rootCaCrl.nextUpdate,
  );
  for (const [path] of paths) {
    for (const cert of path.certs) {
      notBefore = Math.max(notBefore, cert.notBefore);
      notAfter = Math.min(notAfter, cert.notAfter);
    }
  }
  return { notBefore, notAfter };
}
