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
