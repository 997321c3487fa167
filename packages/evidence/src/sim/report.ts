/**
 * The Cloister simulation TEE report, format version 2 (docs/sim.md). All integers are
 * little-endian, like the hardware reports this stands in for.
 *
 *   offset  size  field
 *   0x00      8   magic "CLSIMRPT"
 *   0x08      2   version (2; version 1 used P-384 and is refused)
 *   0x0A      2   flags: bit 0 debug; all other bits must be zero
 *   0x0C      4   svn
 *   0x10     16   platform id = first 16 bytes of SHA-256(platform certificate SPKI DER)
 *   0x20     48   measurement (simMeasurement: SHA-384)
 *   0x50     32   host data
 *   0x70     64   report data
 *   0xB0      4   platform certificate length n (1..8192)
 *   0xB4      n   platform certificate, DER
 *   0xB4+n   64   ECDSA P-256 / SHA-256 signature, raw r||s, over bytes [0, 0xB4+n)
 *
 * A report is exactly 0xB4 + n + 64 bytes: no trailing bytes.
 */
import { bytesAt, concatBytes, toHex, u16le, u32le, utf8 } from '../bytes.js';
import { sha256 } from '../crypto.js';
import { evidenceError } from '../error-codes.js';

export const SIM_MAGIC = 'CLSIMRPT';
export const SIM_REPORT_VERSION = 2;
export const SIM_FLAG_DEBUG = 1;
export const SIM_CERT_OFFSET = 0xb4;
export const SIM_SIGNATURE_SIZE = 64;
export const SIM_MAX_CERT_SIZE = 8192;

const OFF = {
  magic: 0x00,
  version: 0x08,
  flags: 0x0a,
  svn: 0x0c,
  platformId: 0x10,
  measurement: 0x20,
  hostData: 0x50,
  reportData: 0x70,
  certLength: 0xb0,
} as const;

/** A parsed simulation report: views into the input bytes. */
export interface SimReport {
  readonly version: number;
  readonly flags: number;
  readonly debug: boolean;
  readonly svn: number;
  readonly platformId: Uint8Array;
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly reportData: Uint8Array;
  readonly platformCertDer: Uint8Array;
  /** The exact bytes the signature covers. */
  readonly signed: Uint8Array;
  /** Raw r||s. */
  readonly signature: Uint8Array;
}

function bad(field: string, message: string): never {
  throw evidenceError('EVIDENCE_BAD_FIELD', `sim report ${field}: ${message}`, {
    details: { field },
  });
}

/** Parses a simulation report strictly (PARSE errors: truncation, trailing bytes, bad fields). */
export function parseSimReport(bytes: Uint8Array): SimReport {
  const magic = bytesAt(bytes, OFF.magic, 8, 'sim.magic');
  if (toHex(magic) !== toHex(utf8(SIM_MAGIC))) bad('magic', 'not a Cloister simulation report');
  const version = u16le(bytes, OFF.version, 'sim.version');
  if (version !== SIM_REPORT_VERSION) {
    throw evidenceError('EVIDENCE_UNSUPPORTED_VERSION', `sim report version ${version}`, {
      details: { field: 'sim.version', actual: version, expected: SIM_REPORT_VERSION },
    });
  }
  const flags = u16le(bytes, OFF.flags, 'sim.flags');
  // Unknown flag bits could carry meaning a later version gives them: refuse, don't ignore.
  if ((flags & ~SIM_FLAG_DEBUG) !== 0) bad('flags', 'reserved bits set');
  const certLen = u32le(bytes, OFF.certLength, 'sim.certLength');
  if (certLen === 0 || certLen > SIM_MAX_CERT_SIZE) bad('certLength', `${certLen} out of range`);
  const platformCertDer = bytesAt(bytes, SIM_CERT_OFFSET, certLen, 'sim.platformCert');
  const sigOff = SIM_CERT_OFFSET + certLen;
  const signature = bytesAt(bytes, sigOff, SIM_SIGNATURE_SIZE, 'sim.signature');
  if (bytes.length !== sigOff + SIM_SIGNATURE_SIZE) {
    throw evidenceError(
      'EVIDENCE_TRAILING_BYTES',
      `sim report: ${bytes.length - sigOff - SIM_SIGNATURE_SIZE} bytes after the signature`,
      { details: { field: 'sim', length: bytes.length } },
    );
  }
  return {
    version,
    flags,
    debug: (flags & SIM_FLAG_DEBUG) !== 0,
    svn: u32le(bytes, OFF.svn, 'sim.svn'),
    platformId: bytesAt(bytes, OFF.platformId, 16, 'sim.platformId'),
    measurement: bytesAt(bytes, OFF.measurement, 48, 'sim.measurement'),
    hostData: bytesAt(bytes, OFF.hostData, 32, 'sim.hostData'),
    reportData: bytesAt(bytes, OFF.reportData, 64, 'sim.reportData'),
    platformCertDer,
    signed: bytes.subarray(0, sigOff),
    signature,
  };
}

/** The platform id of a platform key: the first 16 bytes of SHA-256(SPKI DER). */
export async function simPlatformId(spkiDer: Uint8Array): Promise<Uint8Array> {
  return (await sha256(spkiDer)).subarray(0, 16);
}

export interface CreateSimReportInput {
  /** The platform's ECDSA P-256 private key (from the sim hardware). */
  readonly platformKey: CryptoKey;
  /** The platform certificate (DER), certified by the sim root. */
  readonly platformCertDer: Uint8Array;
  /** SPKI DER of the platform key (for the platform id). */
  readonly platformSpkiDer: Uint8Array;
  /** 48 bytes (simMeasurement). */
  readonly measurement: Uint8Array;
  /** 64 bytes. */
  readonly reportData: Uint8Array;
  /** 32 bytes; zero when absent. */
  readonly hostData?: Uint8Array;
  readonly svn?: number;
  readonly debug?: boolean;
}

function u16(v: number): Uint8Array {
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff);
}
function u32(v: number): Uint8Array {
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
}

function len(b: Uint8Array, n: number, field: string): Uint8Array {
  if (b.length !== n) bad(field, `must be ${n} bytes, got ${b.length}`);
  return b;
}

/** Produces a signed simulation report (what the sim "hardware" does for a guest). */
export async function createSimReport(input: CreateSimReportInput): Promise<Uint8Array> {
  const svn = input.svn ?? 0;
  if (!Number.isInteger(svn) || svn < 0 || svn > 0xffffffff) bad('svn', 'not a u32');
  const cert = input.platformCertDer;
  if (cert.length === 0 || cert.length > SIM_MAX_CERT_SIZE)
    bad('platformCert', 'size out of range');
  const hostData = input.hostData ?? new Uint8Array(32);
  const signed = concatBytes(
    utf8(SIM_MAGIC),
    u16(SIM_REPORT_VERSION),
    u16(input.debug === true ? SIM_FLAG_DEBUG : 0),
    u32(svn),
    await simPlatformId(input.platformSpkiDer),
    len(input.measurement, 48, 'measurement'),
    len(hostData, 32, 'hostData'),
    len(input.reportData, 64, 'reportData'),
    u32(cert.length),
    cert,
  );
  const sig = new Uint8Array(
    await globalThis.crypto.subtle.sign(
      { name: 'ECDSA', hash: 'SHA-256' },
      input.platformKey,
      new Uint8Array(signed),
    ),
  );
  return concatBytes(signed, sig);
}

/** True when a 64-byte field is all zero (helps callers spot unbound report data). */
