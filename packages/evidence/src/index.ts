export { EVIDENCE_ERRORS, evidenceError } from './error-codes.js';
export type { EvidenceErrorCode } from './error-codes.js';
export { toHex, fromHex, fromBase64, toBase64, bytesEqual } from './bytes.js';
export { sha256, sha384, sha512 } from './crypto.js';
export type { EcCurve } from './crypto.js';
export {
  parseCertificate,
  parseCertificates,
  parsePemCertificates,
  parseCrl,
  trustAnchor,
} from './pki/x509.js';
export type { Certificate, Crl, TrustAnchor } from './pki/x509.js';
export { verifyChain, checkCrl } from './pki/chain.js';
export type { ChainOptions, VerifiedChain } from './pki/chain.js';
export type {
  Claims,
  SgxClaims,
  TdxClaims,
  SnpClaims,
  SimClaims,
  SnpTcb,
  SnpProduct,
  IntelTcbStatus,
  TeeType,
} from './claims.js';
export { INTEL_TCB_STATUSES, ACCEPTABLE_TCB_STATUSES } from './claims.js';
export type {
  IntelCollateralJson,
  SnpCollateral,
  IntelCollateralQuery,
  SnpCollateralQuery,
  CollateralSource,
} from './collateral/types.js';
export { appraise, assertAffirmed } from './appraisal/appraise.js';
export type { Appraisal, AppraisalCheck, VerifiedEvidence } from './appraisal/appraise.js';
export type {
  ReferenceValues,
  SgxReferenceValues,
  TdxReferenceValues,
  SnpReferenceValues,
  SimReferenceValues,
} from './appraisal/reference-values.js';
export { earResult, statusOf, tierOf, TRUST_CLAIMS, AR4SI } from './appraisal/ear.js';
export type {
  EarAppraisal,
  EarResult,
  EarStatus,
  TrustClaim,
  TrustVector,
} from './appraisal/ear.js';
export {
  parseSnpReport,
  decodeSnpTcb,
  snpProductFromCpuid,
  SNP_REPORT_SIZE,
  SNP_SIGNED_END,
} from './snp/report.js';
export type {
  SnpReport,
  SnpSigningKey,
  SnpCpuid,
  SnpFirmwareVersion,
  ParseSnpOptions,
} from './snp/report.js';
export { verifySnpReport } from './snp/verify.js';
export type { VerifySnpOptions, SnpVerification } from './snp/verify.js';
export { SNP_ROOTS, snpProductRoots } from './snp/products.js';
export type { SnpProductRoots, SnpRootSet } from './snp/products.js';
export { readAmdKeyCert } from './snp/vcek-cert.js';
export type { AmdKeyCertInfo } from './snp/vcek-cert.js';
export { offlineCollateral } from './collateral/offline.js';
export type { OfflineBundle, OfflineSnpEntry } from './collateral/offline.js';
export {
  cachingFetcher,
  INTEL_PCS_URL,
  INTEL_ROOT_CA_CRL_URL,
  AMD_KDS_URL,
} from './collateral/fetcher.js';
export type { CachingFetcherOptions } from './collateral/fetcher.js';
export { parseDcapQuote } from './dcap/quote.js';
export type {
  DcapQuote,
  DcapQuoteHeader,
  SgxReportBody,
  TdReportBody,
  PckChainData,
} from './dcap/quote.js';
export { parsePckExtension, SGX_EXTENSION_OID } from './dcap/pck-extension.js';
export type { PckExtension, SgxType } from './dcap/pck-extension.js';
export { parseIntelCollateral, intelCollateralFromPcs } from './dcap/collateral.js';
export type {
  ParsedIntelCollateral,
  IntelPcsResponses,
  TcbInfo,
  QeIdentity,
  PlatformTcbLevel,
  IsvTcbLevel,
  TdxModuleIdentity,
  TcbLevelStatus,
} from './dcap/collateral.js';
export { verifyDcapQuote } from './dcap/verify.js';
export type {
  DcapVerifyOptions,
  DcapVerifiedQuote,
  DcapSgxResult,
  DcapTdxResult,
  DcapPckInfo,
  DcapQeInfo,
} from './dcap/verify.js';
export {
  INTEL_SGX_ROOT_CA,
  INTEL_SGX_ROOT_CA_DER,
  INTEL_SGX_ROOT_CA_SHA256,
} from './dcap/intel-root.js';
export { verifyEvidence, EVIDENCE_TYPES } from './verify.js';
export type { EvidenceType, EvidenceVerdict, VerifyEvidenceOptions } from './verify.js';
export {
  parseSimReport,
  createSimReport,
  verifySimReport,
  simMeasurement,
  simMeasurementFraming,
  simPlatformId,
  generateSimHardware,
  exportSimHardware,
  importSimHardware,
  simRootAnchor,
  simReportFrom,
  SIM_HARDWARE_FILES,
  SIM_MAGIC,
  SIM_REPORT_VERSION,
  SIM_MEASURE_LABEL,
} from './sim/index.js';
export type {
  SimReport,
  CreateSimReportInput,
  VerifySimOptions,
  SimHardware,
  SimHardwareFiles,
} from './sim/index.js';
