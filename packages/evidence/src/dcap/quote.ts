/**
 * Intel DCAP quote layouts: SGX quote v3 ("Intel SGX ECDSA Quote Library Reference", appendix
 * "Quote Format", sgx_quote_3_t), SGX/TDX quote v4 and TDX quote v5 ("Intel TDX DCAP Quoting
 * Library API", sections A.3 "Version 4 Quote Format" and A.4 "Version 5 Quote Format").
 *
 * Layouts: header(48) || [v5: u16 body_type || u32 body_size] || body || u32 sig_data_len ||
 * signature data. Signature data = quote signature(64) || attestation key(64) || then either
 * (v3) QE report(384) || QE report signature(64) || u16 auth_len || auth data || u16 type(5) ||
 * u32 len || PCK chain, or (v4/v5) u16 type(6) || u32 len || that same QE report certification
 * data. The quote signature covers header || [descriptor] || body: {@link DcapQuote.signedRegion}.
 *
 * Fail closed: unknown versions, key types, TEE types, body types and certification data types
 * are refused; every length must be consistent; zero padding after the signature data (common
 * with the TDX quote service) is tolerated, anything else after it is refused.
 */
import { bytesAt, isAllZero, u16le, u32le } from '../bytes.js';
import { evidenceError } from '../error-codes.js';
import { DER_SEQUENCE, readDer } from '../pki/der.js';

export const DCAP_HEADER_SIZE = 0x30;
export const SGX_REPORT_SIZE = 384;
export const TD_REPORT10_SIZE = 584;
export const TD_REPORT15_SIZE = 648;
export const TEE_TYPE_SGX = 0x00000000;
export const TEE_TYPE_TDX = 0x00000081;
export const ATT_KEY_ECDSA_P256 = 2;
/** Certification data: PCK certificate chain (PEM, or DER as Intel's samples carry). */
export const CERT_DATA_PCK_CHAIN = 5;
/** Certification data: QE report certification data (nested, v4 and v5). */
export const CERT_DATA_QE_REPORT = 6;
const MAX_CHAIN_CERTS = 8;

export interface DcapQuoteHeader {
  readonly version: 3 | 4 | 5;
  /** 2 = ECDSA-256-with-P-256. */
  readonly attestationKeyType: number;
  readonly teeType: 'sgx' | 'tdx';
  /** v3 only (reserved in v4+): informational, TCB matching uses the PCK certificate. */
  readonly qeSvn: number;
  readonly pceSvn: number;
  readonly qeVendorId: Uint8Array;
  readonly userData: Uint8Array;
}

/** sgx_report_body_t (384 bytes): the ISV enclave report, and the QE report. */
export interface SgxReportBody {
  readonly kind: 'sgx';
  readonly raw: Uint8Array;
  readonly cpuSvn: Uint8Array;
  readonly miscSelect: Uint8Array;
  readonly isvExtProdId: Uint8Array;
  readonly attributes: Uint8Array;
  readonly mrEnclave: Uint8Array;
  readonly mrSigner: Uint8Array;
  readonly configId: Uint8Array;
  readonly isvProdId: number;
  readonly isvSvn: number;
  readonly configSvn: number;
  readonly isvFamilyId: Uint8Array;
  readonly reportData: Uint8Array;
}

/** TD report body 1.0 (584 bytes) or 1.5 (648 bytes). */
export interface TdReportBody {
  readonly kind: 'td10' | 'td15';
  readonly raw: Uint8Array;
  readonly teeTcbSvn: Uint8Array;
  readonly mrSeam: Uint8Array;
  readonly mrSignerSeam: Uint8Array;
  readonly seamAttributes: Uint8Array;
  readonly tdAttributes: Uint8Array;
  readonly xfam: Uint8Array;
  readonly mrTd: Uint8Array;
  readonly mrConfigId: Uint8Array;
  readonly mrOwner: Uint8Array;
  readonly mrOwnerConfig: Uint8Array;
  readonly rtmrs: readonly [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  readonly reportData: Uint8Array;
  /** TD report 1.5 only. */
  readonly teeTcbSvn2?: Uint8Array;
  readonly mrServiceTd?: Uint8Array;
}

/** The PCK chain carried by certification data type 5. */
export interface PckChainData {
  /** The certification data bytes as carried (PEM text, possibly NUL-terminated, or DER). */
  readonly raw: Uint8Array;
  readonly encoding: 'pem' | 'der';
  /** DER certificates in the order carried. */
  readonly certificates: readonly Uint8Array[];
}

/** A parsed DCAP quote: typed views over the input bytes (no copies). */
export interface DcapQuote {
  readonly header: DcapQuoteHeader;
  /** v5 only: 1 = SGX report, 2 = TD report 1.0, 3 = TD report 1.5. */
  readonly bodyType?: number;
  readonly body: SgxReportBody | TdReportBody;
  /** Exactly the bytes the attestation key signs: header || [v5 descriptor] || body. */
  readonly signedRegion: Uint8Array;
  /** ECDSA P-256 r||s (big-endian) by the attestation key over {@link signedRegion}. */
  readonly signature: Uint8Array;
  /** The attestation public key, x||y (big-endian, no 0x04 prefix). */
  readonly attestationKey: Uint8Array;
  readonly qeReport: SgxReportBody;
  /** ECDSA P-256 r||s by the PCK key over the 384-byte QE report. */
  readonly qeReportSignature: Uint8Array;
  readonly qeAuthData: Uint8Array;
  readonly pckChain: PckChainData;
  /** The bytes from the QE report to the end of the PCK chain data (contiguous in every version). */
  readonly qeCertificationRegion: Uint8Array;
  /** Length of the quote without trailing zero padding. */
  readonly length: number;
}

function badField(field: string, why: string, details: Record<string, unknown> = {}): never {
  throw evidenceError('EVIDENCE_BAD_FIELD', `${field}: ${why}`, { details: { field, ...details } });
}

function unsupported(field: string, value: number): never {
  throw evidenceError(
    'EVIDENCE_UNSUPPORTED_VERSION',
    `${field}: unsupported value ${value} (0x${value.toString(16)})`,
    { details: { field, value } },
  );
}

/** Parses an sgx_report_body_t at `off`. */
export function parseSgxReportBody(b: Uint8Array, off: number, field: string): SgxReportBody {
  const raw = bytesAt(b, off, SGX_REPORT_SIZE, field);
  const at = (o: number, n: number, f: string): Uint8Array => bytesAt(raw, o, n, `${field}.${f}`);
  return {
    kind: 'sgx',
    raw,
    cpuSvn: at(0x00, 16, 'cpu_svn'),
    miscSelect: at(0x10, 4, 'misc_select'),
    isvExtProdId: at(0x20, 16, 'isv_ext_prod_id'),
    attributes: at(0x30, 16, 'attributes'),
    mrEnclave: at(0x40, 32, 'mr_enclave'),
    mrSigner: at(0x80, 32, 'mr_signer'),
    configId: at(0xc0, 64, 'config_id'),
    isvProdId: u16le(raw, 0x100, `${field}.isv_prod_id`),
    isvSvn: u16le(raw, 0x102, `${field}.isv_svn`),
    configSvn: u16le(raw, 0x104, `${field}.config_svn`),
    isvFamilyId: at(0x130, 16, 'isv_family_id'),
    reportData: at(0x140, 64, 'report_data'),
  };
}

function parseTdReportBody(b: Uint8Array, off: number, v15: boolean): TdReportBody {
  const field = 'td_report';
  const raw = bytesAt(b, off, v15 ? TD_REPORT15_SIZE : TD_REPORT10_SIZE, field);
  const at = (o: number, n: number, f: string): Uint8Array => bytesAt(raw, o, n, `${field}.${f}`);
  const body: TdReportBody = {
    kind: v15 ? 'td15' : 'td10',
    raw,
    teeTcbSvn: at(0x000, 16, 'tee_tcb_svn'),
    mrSeam: at(0x010, 48, 'mr_seam'),
    mrSignerSeam: at(0x040, 48, 'mr_signer_seam'),
    seamAttributes: at(0x070, 8, 'seam_attributes'),
    tdAttributes: at(0x078, 8, 'td_attributes'),
    xfam: at(0x080, 8, 'xfam'),
    mrTd: at(0x088, 48, 'mr_td'),
    mrConfigId: at(0x0b8, 48, 'mr_config_id'),
    mrOwner: at(0x0e8, 48, 'mr_owner'),
    mrOwnerConfig: at(0x118, 48, 'mr_owner_config'),
    rtmrs: [
      at(0x148, 48, 'rtmr0'),
      at(0x178, 48, 'rtmr1'),
      at(0x1a8, 48, 'rtmr2'),
      at(0x1d8, 48, 'rtmr3'),
    ],
    reportData: at(0x208, 64, 'report_data'),
  };
  if (!v15) return body;
  return {
    ...body,
    teeTcbSvn2: at(0x248, 16, 'tee_tcb_svn2'),
    mrServiceTd: at(0x258, 48, 'mr_servicetd'),
  };
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\r\n\t ]*)-----END CERTIFICATE-----/y;
const WS = /[\r\n\t ]*/y;

/**
 * Decodes type-5 certification data into DER certificates. PEM: concatenated blocks separated
 * by whitespace, then optional whitespace and NUL terminators (real quotes end the PEM with a
 * NUL). DER: concatenated certificates (Intel's synthetic samples), then optional NULs.
 */
export function decodePckChainData(raw: Uint8Array): PckChainData {
  let end = raw.length;
  while (end > 0 && raw[end - 1] === 0) end--;
  const body = raw.subarray(0, end);
  if (body.length === 0) badField('pck_chain', 'empty certification data');
  const certificates: Uint8Array[] = [];
  if (body[0] === DER_SEQUENCE) {
    let off = 0;
    while (off < body.length) {
      if (certificates.length >= MAX_CHAIN_CERTS) badField('pck_chain', 'too many certificates');
      const node = readDer(body, off, `pck_chain[${certificates.length}]`);
      if (node.tag !== DER_SEQUENCE) badField('pck_chain', 'DER certificate expected');
      certificates.push(body.subarray(off, node.end));
      off = node.end;
    }
    return { raw, encoding: 'der', certificates };
  }
  let text = '';
  for (const x of body) {
    if (x >= 0x80 || x === 0) badField('pck_chain', 'PEM chain is not ASCII text');
    text += String.fromCharCode(x);
  }
  let pos = 0;
  WS.lastIndex = 0;
  WS.exec(text);
  pos = WS.lastIndex;
  while (pos < text.length) {
    if (certificates.length >= MAX_CHAIN_CERTS) badField('pck_chain', 'too many certificates');
    PEM_BLOCK.lastIndex = pos;
    const m = PEM_BLOCK.exec(text);
    if (m === null) badField('pck_chain', 'not a sequence of PEM certificates', { offset: pos });
    certificates.push(fromBase64Strict(m[1] ?? '', `pck_chain[${certificates.length}]`));
    WS.lastIndex = PEM_BLOCK.lastIndex;
    WS.exec(text);
    pos = WS.lastIndex;
  }
  return { raw, encoding: 'pem', certificates };
}

/** Base64 with whitespace between characters, canonical padding, no stray characters. */
function fromBase64Strict(s: string, field: string): Uint8Array {
  const t = s.replace(/[\r\n\t ]+/g, '');
  if (t.length === 0 || t.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(t)) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not base64`, { details: { field } });
  }
  let bin: string;
  try {
    bin = atob(t);
  } catch (cause) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not base64`, {
      cause,
      details: { field },
    });
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

interface Layout extends Omit<DcapQuote, 'pckChain'> {
  readonly pckChainRaw: Uint8Array;
}

/**
 * Parses the quote structure without decoding the PCK chain (the verifier decodes it only when
 * it has not seen these exact bytes before).
 */
export function parseDcapQuoteLayout(bytes: Uint8Array): Layout {
  if (!(bytes instanceof Uint8Array)) badField('quote', 'expected bytes');
  const version = u16le(bytes, 0x00, 'header.version');
  if (version !== 3 && version !== 4 && version !== 5) unsupported('header.version', version);
  const attestationKeyType = u16le(bytes, 0x02, 'header.att_key_type');
  if (attestationKeyType !== ATT_KEY_ECDSA_P256)
    unsupported('header.att_key_type', attestationKeyType);
  const teeRaw = u32le(bytes, 0x04, 'header.tee_type');
  let teeType: 'sgx' | 'tdx';
  if (teeRaw === TEE_TYPE_SGX) teeType = 'sgx';
  else if (teeRaw === TEE_TYPE_TDX && version >= 4) teeType = 'tdx';
  else unsupported('header.tee_type', teeRaw);
  const header: DcapQuoteHeader = {
    version,
    attestationKeyType,
    teeType,
    qeSvn: u16le(bytes, 0x08, 'header.qe_svn'),
    pceSvn: u16le(bytes, 0x0a, 'header.pce_svn'),
    qeVendorId: bytesAt(bytes, 0x0c, 16, 'header.qe_vendor_id'),
    userData: bytesAt(bytes, 0x1c, 20, 'header.user_data'),
  };

  let off = DCAP_HEADER_SIZE;
  let bodyType: number | undefined;
  let body: SgxReportBody | TdReportBody;
  if (version === 5) {
    bodyType = u16le(bytes, off, 'body.type');
    const size = u32le(bytes, off + 2, 'body.size');
    const expected =
      bodyType === 1
        ? SGX_REPORT_SIZE
        : bodyType === 2
          ? TD_REPORT10_SIZE
          : bodyType === 3
            ? TD_REPORT15_SIZE
            : -1;
    if (expected < 0) unsupported('body.type', bodyType);
    if ((bodyType === 1) !== (teeType === 'sgx'))
      badField('body.type', 'does not match tee_type', { bodyType });
    if (size !== expected)
      badField('body.size', `expected ${expected} for body type ${bodyType}`, { size });
    off += 6;
    body =
      bodyType === 1
        ? parseSgxReportBody(bytes, off, 'isv_report')
        : parseTdReportBody(bytes, off, bodyType === 3);
  } else {
    body =
      teeType === 'sgx'
        ? parseSgxReportBody(bytes, off, 'isv_report')
        : parseTdReportBody(bytes, off, false);
  }
  off += body.raw.length;
  const signedRegion = bytes.subarray(0, off);

  const sigLen = u32le(bytes, off, 'signature_data_len');
  off += 4;
  const sig = bytesAt(bytes, off, sigLen, 'signature_data');
  const sigEnd = off + sigLen;
  // From here on, reads are bounded by the signature data, not by the whole input: a length
  // that points into the padding is malformed.
  let p = 0;
  const signature = bytesAt(sig, p, 64, 'signature_data.quote_signature');
  p += 64;
  const attestationKey = bytesAt(sig, p, 64, 'signature_data.attestation_key');
  p += 64;
  let qe: Uint8Array = sig;
  let qeBase = p;
  if (version >= 4) {
    const t = u16le(sig, p, 'signature_data.cert_type');
    if (t !== CERT_DATA_QE_REPORT) unsupported('signature_data.cert_type', t);
    const len = u32le(sig, p + 2, 'signature_data.cert_size');
    qe = bytesAt(sig, p + 6, len, 'signature_data.qe_report_certification_data');
    if (p + 6 + len !== sig.length)
      badField('signature_data', 'length does not match its contents');
    qeBase = 0;
  }
  let q = qeBase;
  const qeReport = parseSgxReportBody(qe, q, 'qe_report');
  q += SGX_REPORT_SIZE;
  const qeReportSignature = bytesAt(qe, q, 64, 'qe_report_signature');
  q += 64;
  const authLen = u16le(qe, q, 'qe_auth_data.size');
  const qeAuthData = bytesAt(qe, q + 2, authLen, 'qe_auth_data');
  q += 2 + authLen;
  const certType = u16le(qe, q, 'pck_cert_data.type');
  if (certType !== CERT_DATA_PCK_CHAIN) unsupported('pck_cert_data.type', certType);
  const certLen = u32le(qe, q + 2, 'pck_cert_data.size');
  const pckChainRaw = bytesAt(qe, q + 6, certLen, 'pck_cert_data');
  q += 6 + certLen;
  if (q !== qe.length)
    badField('qe_report_certification_data', 'length does not match its contents');

  // Trailing padding: tolerated only when it is all zero (it is outside every signature, so a
  // non-zero tail could smuggle data a careless consumer might read as part of the quote).
  if (!isAllZero(bytes.subarray(sigEnd))) {
    throw evidenceError('EVIDENCE_TRAILING_BYTES', 'non-zero bytes after the signature data', {
      details: { offset: sigEnd, trailing: bytes.length - sigEnd },
    });
  }
  const regionStart = qeReport.raw.byteOffset - bytes.byteOffset;
  const regionEnd = pckChainRaw.byteOffset - bytes.byteOffset + pckChainRaw.length;
  return {
    header,
    ...(bodyType === undefined ? {} : { bodyType }),
    body,
    signedRegion,
    signature,
    attestationKey,
    qeReport,
    qeReportSignature,
    qeAuthData,
    pckChainRaw,
    qeCertificationRegion: bytes.subarray(regionStart, regionEnd),
    length: sigEnd,
  };
}

/**
 * Parses a DCAP quote (SGX v3/v4/v5, TDX v4/v5). Throws a PARSE-layer `VerificationError` on any
 * malformed, truncated or unsupported input. Parsing verifies nothing: use `verifyDcapQuote`.
 */
export function parseDcapQuote(bytes: Uint8Array): DcapQuote {
  const { pckChainRaw, ...rest } = parseDcapQuoteLayout(bytes);
  return { ...rest, pckChain: decodePckChainData(pckChainRaw) };
}
