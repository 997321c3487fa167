/**
 * What verified evidence says, per TEE type: the claims a verifier returns and appraisal checks
 * against reference values. Byte strings are lowercase hex in file order; integers are numbers
 * (64-bit values that may exceed 2^53 are hex strings).
 */

/** Intel TCB statuses (Intel PCS TCB Info v3), plus the TDX relaunch advice. */
export const INTEL_TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'TDRelaunchAdvised',
  'TDRelaunchAdvisedConfigurationNeeded',
  'Revoked',
] as const;

export type IntelTcbStatus = (typeof INTEL_TCB_STATUSES)[number];

/** The statuses a policy may accept: Revoked is refused whatever a policy lists. */
export const ACCEPTABLE_TCB_STATUSES: readonly IntelTcbStatus[] = INTEL_TCB_STATUSES.filter(
  (s) => s !== 'Revoked',
);

export type TeeType = 'sgx' | 'tdx' | 'sev-snp' | 'sim';

interface ClaimsBase {
  /** 64 bytes the TEE's software chose, as hex: binds a nonce and a key. */
  readonly reportData: string;
  /** True when the TEE runs in debug mode (its memory is readable by the host). */
  readonly debug: boolean;
}

export interface SgxClaims extends ClaimsBase {
  readonly tee: 'sgx';
  readonly mrEnclave: string;
  readonly mrSigner: string;
  readonly isvProdId: number;
  readonly isvSvn: number;
  readonly attributes: string;
  readonly miscSelect: string;
  readonly cpuSvn: string;
  readonly configId: string;
  readonly configSvn: number;
  readonly isvExtProdId: string;
  readonly isvFamilyId: string;
}

export interface TdxClaims extends ClaimsBase {
  readonly tee: 'tdx';
  readonly mrTd: string;
  /** RTMR0..RTMR3. */
  readonly rtmrs: readonly [string, string, string, string];
  readonly mrSeam: string;
  readonly mrSignerSeam: string;
  readonly mrConfigId: string;
  readonly mrOwner: string;
  readonly mrOwnerConfig: string;
  readonly teeTcbSvn: string;
  readonly tdAttributes: string;
  readonly seamAttributes: string;
  readonly xfam: string;
  /** TD report 1.5 only. */
  readonly teeTcbSvn2?: string;
  readonly mrServiceTd?: string;
}

/** An AMD TCB_VERSION decoded for the report's product (Turin adds the FMC field). */
export interface SnpTcb {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  readonly fmc?: number;
}

export type SnpProduct = 'Milan' | 'Genoa' | 'Turin';

export interface SnpClaims extends ClaimsBase {
  readonly tee: 'sev-snp';
  readonly version: number;
  readonly product: SnpProduct;
  readonly measurement: string;
  readonly hostData: string;
  readonly chipId: string;
  readonly reportedTcb: SnpTcb;
  readonly currentTcb: SnpTcb;
  readonly committedTcb: SnpTcb;
  readonly launchTcb: SnpTcb;
  /** Guest policy as a hex u64 (e.g. "0x30000"). */
  readonly policy: string;
  readonly vmpl: number;
  readonly guestSvn: number;
  readonly familyId: string;
  readonly imageId: string;
  readonly idKeyDigest: string;
  readonly authorKeyDigest: string;
  readonly reportId: string;
  readonly platformInfo: string;
  readonly signingKey: 'vcek' | 'vlek';
  readonly firmware: { readonly major: number; readonly minor: number; readonly build: number };
}

export interface SimClaims extends ClaimsBase {
  readonly tee: 'sim';
  readonly measurement: string;
  readonly hostData: string;
  readonly svn: number;
  readonly platformId: string;
}

export type Claims = SgxClaims | TdxClaims | SnpClaims | SimClaims;
