export { EVIDENCE_ERRORS, evidenceError } from './error-codes.js';
export type { EvidenceErrorCode } from './error-codes.js';
export { toHex, fromHex, fromBase64, toBase64, bytesEqual } from './bytes.js';
export { sha256, sha384, sha512 } from './crypto.js';
export {
  parseCertificate,
  parseCertificates,
  parsePemCertificates,
  parseCrl,
  trustAnchor,
  verifyChain,
  checkCrl,
} from './pki/chain.js';
export type { Certificate, Crl, TrustAnchor, ChainOptions, VerifiedChain } from './pki/chain.js';
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
