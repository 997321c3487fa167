/**
 * AMD SEV-SNP ATTESTATION_REPORT parser: AMD "SEV Secure Nested Paging Firmware ABI
 * Specification" (publication 56860), section 7.3 "Attestation" (the ATTESTATION_REPORT
 * structure), the TCB_VERSION structure, section 4.3 "Guest Policy", and the appendix on
 * digital signatures (ECDSA P-384 with SHA-384; r and s little-endian, zero-extended to 72
 * bytes).
 *
 * The report is exactly 0x4A0 bytes. Versions 2, 3 (adds CPUID fields) and 5 (adds mitigation
 * vectors) are parsed; version 4 uses the version 3 layout. Every reserved region the
 * specification marks must-be-zero is checked, so no byte of the report can change without the
 * parser or the signature noticing.
 */
import { bytesAt, isAllZero, u32le, u64le, u8 } from '../bytes.js';
import { evidenceError } from '../error-codes.js';
import type { SnpProduct, SnpTcb } from '../claims.js';

/** Size of the whole report. */
export const SNP_REPORT_SIZE = 0x4a0;
/** The report signature covers bytes [0, SNP_SIGNED_END). */
export const SNP_SIGNED_END = 0x2a0;

const OFF = {
  version: 0x000,
  guestSvn: 0x004,
  policy: 0x008,
  familyId: 0x010,
  imageId: 0x020,
  vmpl: 0x030,
  signatureAlgo: 0x034,
  currentTcb: 0x038,
  platformInfo: 0x040,
  flags: 0x048,
  reserved0: 0x04c,
  reportData: 0x050,
  measurement: 0x090,
  hostData: 0x0c0,
  idKeyDigest: 0x0e0,
  authorKeyDigest: 0x110,
  reportId: 0x140,
  reportIdMa: 0x160,
  reportedTcb: 0x180,
  cpuidFamily: 0x188,
  cpuidModel: 0x189,
  cpuidStepping: 0x18a,
  reserved1: 0x18b,
  chipId: 0x1a0,
  committedTcb: 0x1e0,
  currentBuild: 0x1e8,
  currentMinor: 0x1e9,
  currentMajor: 0x1ea,
  reserved2: 0x1eb,
  committedBuild: 0x1ec,
  committedMinor: 0x1ed,
  committedMajor: 0x1ee,
  reserved3: 0x1ef,
  launchTcb: 0x1f0,
  launchMitVector: 0x1f8,
  currentMitVector: 0x200,
  reserved4v5: 0x208,
  reserved4: 0x1f8,
  sigR: 0x2a0,
  sigS: 0x2e8,
  sigReserved: 0x330,
} as const;

/** Guest policy bits (ABI 56860 section 4.3). */
export const SNP_POLICY = {
  SMT: 1n << 16n,
  /** Reserved, must be one. */
  RESERVED_1: 1n << 17n,
  MIGRATE_MA: 1n << 18n,
  DEBUG: 1n << 19n,
  SINGLE_SOCKET: 1n << 20n,
  /** Bits 26-63 must be zero. */
  MBZ_MASK: ~((1n << 26n) - 1n) & 0xffff_ffff_ffff_ffffn,
} as const;

/** Signature algorithm 1: ECDSA P-384 with SHA-384. */
const SIG_ALGO_ECDSA_P384_SHA384 = 1;
/** flags bits 5-31 are reserved. */
const FLAGS_RESERVED_MASK = 0xffff_ffe0;

export type SnpSigningKey = 'vcek' | 'vlek';

export interface SnpCpuid {
  readonly family: number;
  readonly model: number;
  readonly stepping: number;
}

export interface SnpFirmwareVersion {
  readonly major: number;
  readonly minor: number;
  readonly build: number;
}

/** A parsed report: typed fields and views (not copies) into the input. */
export interface SnpReport {
  /** The whole 1184-byte report (a view of the input). */
  readonly bytes: Uint8Array;
  /** Bytes [0, 0x2A0): exactly what the VCEK/VLEK signed. */
  readonly signedRegion: Uint8Array;
  readonly version: number;
  readonly guestSvn: number;
  readonly policy: bigint;
  readonly debug: boolean;
  readonly familyId: Uint8Array;
  readonly imageId: Uint8Array;
  readonly vmpl: number;
  readonly signatureAlgo: number;
  readonly platformInfo: bigint;
  readonly flags: number;
  readonly authorKeyEn: boolean;
  readonly maskChipKey: boolean;
  readonly signingKey: SnpSigningKey;
  readonly reportData: Uint8Array;
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly idKeyDigest: Uint8Array;
  readonly authorKeyDigest: Uint8Array;
  readonly reportId: Uint8Array;
  readonly reportIdMa: Uint8Array;
  /** The raw 8-byte TCB_VERSION values; decode with `decodeSnpTcb` for the product. */
  readonly rawTcb: {
    readonly current: Uint8Array;
    readonly reported: Uint8Array;
    readonly committed: Uint8Array;
    readonly launch: Uint8Array;
  };
  /** Version 3 and later. */
  readonly cpuid?: SnpCpuid;
  /** 64 bytes; Turin uses the first 8. Zero when MASK_CHIP_KEY is set. */
  readonly chipId: Uint8Array;
  readonly currentVersion: SnpFirmwareVersion;
  readonly committedVersion: SnpFirmwareVersion;
  /** Version 5 and later. */
  readonly launchMitVector?: bigint;
  readonly currentMitVector?: bigint;
  /** The product read from CPUID (v3+), or given by the caller (v2); undefined if unknown. */
  readonly product: SnpProduct | undefined;
  /** r || s, each 48 bytes big-endian: the WebCrypto raw ECDSA P-384 signature. */
  readonly signature: Uint8Array;
}

export interface ParseSnpOptions {
  /**
   * The product, for version 2 reports that carry no CPUID. For v3+ it must agree with CPUID.
   */
  readonly product?: SnpProduct;
}

function bad(field: string, message: string, details: Record<string, unknown> = {}): never {
  throw evidenceError('EVIDENCE_BAD_FIELD', `SNP report ${field}: ${message}`, {
    details: { field, ...details },
  });
}

/** Reserved bytes must be zero: stops hiding data in unsigned-looking places and format drift. */
function mbz(b: Uint8Array, off: number, len: number, field: string): void {
  if (!isAllZero(bytesAt(b, off, len, field))) bad(field, 'reserved bytes are not zero');
}

/**
 * The product line of a CPUID family/model (ABI 56860 report fields CPUID_FAM_ID and
 * CPUID_MOD_ID).
 * Genoa-family certificates also serve Bergamo (0xA0-0xAF) and Siena. Unknown values are
 * unsupported: a guessed product would pick the wrong root.
 */
export function snpProductFromCpuid(family: number, model: number): SnpProduct | undefined {
  if (family === 0x19) {
    if (model <= 0x0f) return 'Milan';
    if ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf)) return 'Genoa';
    return undefined;
  }
  if (family === 0x1a) return 'Turin';
  return undefined;
}

/**
 * Decodes a TCB_VERSION for a product. Milan and Genoa: byte 0 boot loader, 1 TEE, 2-5
 * reserved, 6 SNP, 7 microcode. Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 4-6 reserved,
 * 7 microcode. Reading a Turin TCB with the Milan layout gives wrong SPLs, so the product must be
 * known first.
 */
export function decodeSnpTcb(raw: Uint8Array, product: SnpProduct, field = 'tcb'): SnpTcb {
  if (product === 'Turin') {
    return {
      fmc: u8(raw, 0, `${field}.fmc`),
      bootloader: u8(raw, 1, `${field}.bootloader`),
      tee: u8(raw, 2, `${field}.tee`),
      snp: u8(raw, 3, `${field}.snp`),
      microcode: u8(raw, 7, `${field}.microcode`),
    };
  }
  return {
    bootloader: u8(raw, 0, `${field}.bootloader`),
    tee: u8(raw, 1, `${field}.tee`),
    snp: u8(raw, 6, `${field}.snp`),
    microcode: u8(raw, 7, `${field}.microcode`),
  };
}

/** Reserved TCB_VERSION bytes must be zero (they are part of the signed TCB the KDS keys on). */
function checkTcbReserved(raw: Uint8Array, product: SnpProduct, field: string): void {
  const reserved = product === 'Turin' ? [4, 5, 6] : [2, 3, 4, 5];
  for (const i of reserved) if (raw[i] !== 0) bad(field, `reserved TCB byte ${i} is not zero`);
}

/**
 * Converts one 72-byte little-endian signature component to 48 bytes big-endian. The high 24
 * bytes must be zero: a P-384 scalar never needs them, and accepting junk there would let the
 * same signature exist in many byte forms.
 */
function sigComponent(b: Uint8Array, off: number, field: string): Uint8Array {
  const le = bytesAt(b, off, 72, field);
  if (!isAllZero(le.subarray(48))) bad(field, 'bytes above the P-384 scalar size are not zero');
  const be = new Uint8Array(48);
  for (let i = 0; i < 48; i++) be[i] = le[47 - i] as number;
  return be;
}

/**
 * Parses a 1184-byte SEV-SNP attestation report. Throws PARSE errors (EVIDENCE_TRUNCATED,
 * EVIDENCE_TRAILING_BYTES, EVIDENCE_BAD_FIELD, EVIDENCE_UNSUPPORTED_VERSION); never verifies a
 * signature (see `verifySnpReport`).
 */
export function parseSnpReport(input: Uint8Array, opts: ParseSnpOptions = {}): SnpReport {
  if (!(input instanceof Uint8Array)) bad('input', 'not a byte array');
  if (input.length < SNP_REPORT_SIZE) {
    throw evidenceError(
      'EVIDENCE_TRUNCATED',
      `SNP report: ${input.length} bytes, expected ${SNP_REPORT_SIZE}`,
      { details: { length: input.length, expected: SNP_REPORT_SIZE } },
    );
  }
  if (input.length > SNP_REPORT_SIZE) {
    throw evidenceError(
      'EVIDENCE_TRAILING_BYTES',
      `SNP report: ${input.length} bytes, expected ${SNP_REPORT_SIZE}`,
      { details: { length: input.length, expected: SNP_REPORT_SIZE } },
    );
  }
  const b = input;

  // Version gate first: an unknown layout must not be read with a guessed one.
  const version = u32le(b, OFF.version, 'version');
  if (version < 2 || version > 5) {
    throw evidenceError('EVIDENCE_UNSUPPORTED_VERSION', `SNP report version ${version}`, {
      details: { version, supported: [2, 3, 4, 5] },
    });
  }
  const hasCpuid = version >= 3;
  const hasMitVectors = version >= 5;

  const signatureAlgo = u32le(b, OFF.signatureAlgo, 'signature_algo');
  if (signatureAlgo !== SIG_ALGO_ECDSA_P384_SHA384) {
    throw evidenceError(
      'EVIDENCE_UNSUPPORTED_VERSION',
      `SNP report signature_algo ${signatureAlgo}`,
      { details: { signatureAlgo, supported: [SIG_ALGO_ECDSA_P384_SHA384] } },
    );
  }

  // Policy: MBZ bits set or bit 17 clear means a report the firmware cannot have produced.
  const policy = u64le(b, OFF.policy, 'policy');
  if ((policy & SNP_POLICY.MBZ_MASK) !== 0n)
    bad('policy', 'must-be-zero bits 26-63 are set', { policy: `0x${policy.toString(16)}` });
  if ((policy & SNP_POLICY.RESERVED_1) === 0n)
    bad('policy', 'reserved bit 17 must be one', { policy: `0x${policy.toString(16)}` });

  const vmpl = u32le(b, OFF.vmpl, 'vmpl');
  if (vmpl > 3) bad('vmpl', 'not in 0..3', { vmpl });

  // Flags: which key signed. 7 ("none") and other values cannot be verified.
  const flags = u32le(b, OFF.flags, 'flags');
  if ((flags & FLAGS_RESERVED_MASK) !== 0) bad('flags', 'reserved bits 5-31 are set', { flags });
  const keySel = (flags >>> 2) & 0x7;
  let signingKey: SnpSigningKey;
  if (keySel === 0) signingKey = 'vcek';
  else if (keySel === 1) signingKey = 'vlek';
  else
    bad('flags.signing_key', `signing key ${keySel} is neither VCEK (0) nor VLEK (1)`, { flags });

  mbz(b, OFF.reserved0, 4, 'reserved@0x4c');

  let cpuid: SnpCpuid | undefined;
  let product: SnpProduct | undefined = opts.product;
  if (hasCpuid) {
    cpuid = {
      family: u8(b, OFF.cpuidFamily, 'cpuid_fam_id'),
      model: u8(b, OFF.cpuidModel, 'cpuid_mod_id'),
      stepping: u8(b, OFF.cpuidStepping, 'cpuid_step'),
    };
    mbz(b, OFF.reserved1, 0x1a0 - OFF.reserved1, 'reserved@0x18b');
    const fromCpuid = snpProductFromCpuid(cpuid.family, cpuid.model);
    if (fromCpuid === undefined) {
      throw evidenceError(
        'EVIDENCE_UNSUPPORTED_VERSION',
        `SNP report CPUID family 0x${cpuid.family.toString(16)} model 0x${cpuid.model.toString(16)} is not a known product`,
        { details: { family: cpuid.family, model: cpuid.model } },
      );
    }
    if (opts.product !== undefined && opts.product !== fromCpuid) {
      throw evidenceError(
        'POLICY_MISMATCH',
        `SNP report is from a ${fromCpuid} processor, expected ${opts.product}`,
        { details: { rule: 'product', expected: opts.product, actual: fromCpuid } },
      );
    }
    product = fromCpuid;
  } else {
    mbz(b, OFF.cpuidFamily, 0x1a0 - OFF.cpuidFamily, 'reserved@0x188');
  }

  mbz(b, OFF.reserved2, 1, 'reserved@0x1eb');
  mbz(b, OFF.reserved3, 1, 'reserved@0x1ef');
  let launchMitVector: bigint | undefined;
  let currentMitVector: bigint | undefined;
  if (hasMitVectors) {
    launchMitVector = u64le(b, OFF.launchMitVector, 'launch_mit_vector');
    currentMitVector = u64le(b, OFF.currentMitVector, 'current_mit_vector');
    mbz(b, OFF.reserved4v5, SNP_SIGNED_END - OFF.reserved4v5, 'reserved@0x208');
  } else {
    mbz(b, OFF.reserved4, SNP_SIGNED_END - OFF.reserved4, 'reserved@0x1f8');
  }

  const rawTcb = {
    current: bytesAt(b, OFF.currentTcb, 8, 'current_tcb'),
    reported: bytesAt(b, OFF.reportedTcb, 8, 'reported_tcb'),
    committed: bytesAt(b, OFF.committedTcb, 8, 'committed_tcb'),
    launch: bytesAt(b, OFF.launchTcb, 8, 'launch_tcb'),
  };

  // Signature: r and s, then reserved zeros to the end of the report.
  const r = sigComponent(b, OFF.sigR, 'signature.r');
  const s = sigComponent(b, OFF.sigS, 'signature.s');
  mbz(b, OFF.sigReserved, SNP_REPORT_SIZE - OFF.sigReserved, 'signature.reserved');
  const signature = new Uint8Array(96);
  signature.set(r, 0);
  signature.set(s, 48);

  const report: SnpReport = {
    bytes: b,
    signedRegion: b.subarray(0, SNP_SIGNED_END),
    version,
    guestSvn: u32le(b, OFF.guestSvn, 'guest_svn'),
    policy,
    debug: (policy & SNP_POLICY.DEBUG) !== 0n,
    familyId: bytesAt(b, OFF.familyId, 16, 'family_id'),
    imageId: bytesAt(b, OFF.imageId, 16, 'image_id'),
    vmpl,
    signatureAlgo,
    platformInfo: u64le(b, OFF.platformInfo, 'platform_info'),
    flags,
    authorKeyEn: (flags & 1) !== 0,
    maskChipKey: (flags & 2) !== 0,
    signingKey,
    reportData: bytesAt(b, OFF.reportData, 64, 'report_data'),
    measurement: bytesAt(b, OFF.measurement, 48, 'measurement'),
    hostData: bytesAt(b, OFF.hostData, 32, 'host_data'),
    idKeyDigest: bytesAt(b, OFF.idKeyDigest, 48, 'id_key_digest'),
    authorKeyDigest: bytesAt(b, OFF.authorKeyDigest, 48, 'author_key_digest'),
    reportId: bytesAt(b, OFF.reportId, 32, 'report_id'),
    reportIdMa: bytesAt(b, OFF.reportIdMa, 32, 'report_id_ma'),
    rawTcb,
    chipId: bytesAt(b, OFF.chipId, 64, 'chip_id'),
    currentVersion: {
      major: u8(b, OFF.currentMajor, 'current_major'),
      minor: u8(b, OFF.currentMinor, 'current_minor'),
      build: u8(b, OFF.currentBuild, 'current_build'),
    },
    committedVersion: {
      major: u8(b, OFF.committedMajor, 'committed_major'),
      minor: u8(b, OFF.committedMinor, 'committed_minor'),
      build: u8(b, OFF.committedBuild, 'committed_build'),
    },
    product,
    signature,
    ...(cpuid === undefined ? {} : { cpuid }),
    ...(launchMitVector === undefined ? {} : { launchMitVector }),
    ...(currentMitVector === undefined ? {} : { currentMitVector }),
  };
  if (product !== undefined) checkSnpProductLayout(report, product);
  return report;
}

/**
 * Checks the parts of the layout that depend on the product: reserved TCB_VERSION bytes, and on
 * Turin the unused chip_id bytes 8-63. Runs in `parseSnpReport` when the product is known there,
 * and again by the verifier once a version 2 report's product is learnt from its certificate.
 */
export function checkSnpProductLayout(report: SnpReport, product: SnpProduct): void {
  checkTcbReserved(report.rawTcb.current, product, 'current_tcb');
  checkTcbReserved(report.rawTcb.reported, product, 'reported_tcb');
  checkTcbReserved(report.rawTcb.committed, product, 'committed_tcb');
  checkTcbReserved(report.rawTcb.launch, product, 'launch_tcb');
  if (product === 'Turin' && !isAllZero(report.chipId.subarray(8))) {
    bad('chip_id', 'Turin chip IDs are 8 bytes; bytes 8-63 must be zero');
  }
}
