/**
 * Error codes of the evidence library. Every code names the verification layer that rejects
 * (PARSE, SIGNATURE, CHAIN, COLLATERAL, TCB, BINDING, POLICY); callers switch on `code`.
 */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const EVIDENCE_ERRORS = defineErrorCodes({
  // PARSE: the bytes are not a well-formed piece of evidence.
  EVIDENCE_TRUNCATED: {
    kind: 'malformed',
    layer: 'PARSE',
    summary: 'The evidence ends before a field it must contain.',
  },
  EVIDENCE_TRAILING_BYTES: {
    kind: 'malformed',
    layer: 'PARSE',
    summary: 'Non-zero bytes follow the end of the evidence structure.',
  },
  EVIDENCE_BAD_FIELD: {
    kind: 'malformed',
    layer: 'PARSE',
    summary:
      'A field has a value the format forbids (reserved bits set, wrong length, out of range).',
  },
  EVIDENCE_UNSUPPORTED_VERSION: {
    kind: 'unsupported',
    layer: 'PARSE',
    summary: 'The evidence version, key type or body type is not one this release verifies.',
  },
  EVIDENCE_BAD_ENCODING: {
    kind: 'malformed',
    layer: 'PARSE',
    summary: 'The evidence is not valid hex, base64, PEM or DER where that encoding is expected.',
  },
  CERT_MALFORMED: {
    kind: 'malformed',
    layer: 'PARSE',
    summary: 'A certificate or CRL carried with the evidence or collateral cannot be parsed.',
  },
  // SIGNATURE: a signature over the evidence does not verify.
  SIGNATURE_INVALID: {
    kind: 'rejected',
    layer: 'SIGNATURE',
    summary: 'A signature over the evidence does not verify with the key that must have made it.',
  },
  // CHAIN: the signing key does not chain to a pinned vendor root.
  CHAIN_UNTRUSTED_ROOT: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary:
      'The certificate chain ends in a root that is not pinned (compared by key, never by name).',
  },
  CHAIN_SIGNATURE_INVALID: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary: 'A certificate in the chain is not signed by its issuer.',
  },
  CHAIN_EXPIRED: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary: 'A certificate in the chain is not valid at the verification time.',
  },
  CHAIN_REVOKED: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary: "A certificate in the chain is listed on its issuer's CRL.",
  },
  CHAIN_INCOMPLETE: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary:
      'The chain lacks a certificate needed to reach the root (for example no VCEK or ASK was given).',
  },
  CHAIN_ISSUER_CONSTRAINT: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary:
      'A certificate signs what its extensions do not allow: certificates without basicConstraints cA, without keyCertSign in its keyUsage or beyond its pathLenConstraint; a CRL without cRLSign in its keyUsage; evidence or collateral without digitalSignature in its keyUsage.',
  },
  CHAIN_CRITICAL_EXTENSION: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary:
      'A certificate in the chain carries a critical extension that the verifier does not recognise.',
  },
  CHAIN_BAD_EXTENSION: {
    kind: 'rejected',
    layer: 'CHAIN',
    summary:
      'A vendor certificate extension is missing or contradicts the evidence (PCK FMSPC, VCEK hwID or SPLs).',
  },
  // COLLATERAL: TCB info, QE identity or CRLs are missing, invalid or outside their window.
  COLLATERAL_MISSING: {
    kind: 'rejected',
    layer: 'COLLATERAL',
    summary:
      'Collateral needed to judge the evidence was not supplied and no source could provide it.',
  },
  COLLATERAL_MALFORMED: {
    kind: 'malformed',
    layer: 'COLLATERAL',
    summary: 'Collateral (TCB info, QE identity, CRL) cannot be parsed.',
  },
  COLLATERAL_SIGNATURE_INVALID: {
    kind: 'rejected',
    layer: 'COLLATERAL',
    summary: 'The signature over TCB info, QE identity or a CRL does not verify.',
  },
  COLLATERAL_EXPIRED: {
    kind: 'rejected',
    layer: 'COLLATERAL',
    summary: 'TCB info, QE identity or a CRL is not valid at the verification time.',
  },
  COLLATERAL_CRL_CRITICAL: {
    kind: 'rejected',
    layer: 'COLLATERAL',
    summary:
      'A CRL or one of its entries carries a critical extension the verifier does not process (a partial, delta or indirect CRL), so the CRL cannot be used.',
  },
  COLLATERAL_MISMATCH: {
    kind: 'rejected',
    layer: 'COLLATERAL',
    summary:
      'Collateral does not belong to this evidence (FMSPC, PCE ID, TEE type or QE identity id differ).',
  },
  COLLATERAL_FETCH_FAILED: {
    kind: 'unavailable',
    layer: 'COLLATERAL',
    summary:
      'A collateral service (Intel PCS, AMD KDS) could not be reached or answered with an error.',
  },
  // TCB: the platform's trusted computing base is not acceptable.
  TCB_NOT_SUPPORTED: {
    kind: 'rejected',
    layer: 'TCB',
    summary: 'No TCB level in the collateral matches the platform: it is below every known level.',
  },
  TCB_REVOKED: {
    kind: 'rejected',
    layer: 'TCB',
    summary: 'The matched TCB level or the QE / TDX module level is revoked.',
  },
  TCB_STATUS_NOT_ACCEPTED: {
    kind: 'rejected',
    layer: 'TCB',
    summary:
      'The TCB status is not among the statuses the policy accepts (by default only UpToDate).',
  },
  TCB_BELOW_MINIMUM: {
    kind: 'rejected',
    layer: 'TCB',
    summary:
      'A TCB component (SVN, SPL, firmware version) is below the minimum the policy requires.',
  },
  TCB_IDENTITY_MISMATCH: {
    kind: 'rejected',
    layer: 'TCB',
    summary:
      'The quoting enclave or TDX module identity (MRSIGNER, product, attributes) differs from the collateral.',
  },
  // BINDING: the evidence is not bound to what it must be bound to.
  BINDING_MISMATCH: {
    kind: 'rejected',
    layer: 'BINDING',
    summary:
      'A hash that binds two pieces of evidence together does not match (QE report data, HCL variable data, report data).',
  },
  // POLICY: valid evidence that the reference values do not accept.
  POLICY_MISMATCH: {
    kind: 'rejected',
    layer: 'POLICY',
    summary: 'A claim differs from the reference value (measurement, signer, product, host data).',
  },
  POLICY_DEBUG: {
    kind: 'rejected',
    layer: 'POLICY',
    summary: 'The TEE runs in debug mode and the policy does not allow debug.',
  },
  POLICY_SIMULATION: {
    kind: 'rejected',
    layer: 'POLICY',
    summary: 'The evidence comes from the simulation TEE and simulation is not allowed.',
  },
  POLICY_INVALID: {
    kind: 'malformed',
    layer: 'POLICY',
    summary: 'The reference values themselves are malformed.',
  },
});

export type EvidenceErrorCode = keyof typeof EVIDENCE_ERRORS;

/** Builds a typed evidence error; always a VerificationError since every code names a layer. */
export const evidenceError = errorFactory(EVIDENCE_ERRORS);
