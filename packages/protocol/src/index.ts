// Public surface of @cloister/protocol: wire contracts shared by every side (engine-neutral).
export { PROTOCOL_ERRORS, protocolError } from './error-codes.js';
export type { ProtocolErrorCode } from './error-codes.js';

// Manifest: schema, types, validation, canonical hash.
export {
  MANIFEST_SCHEMA,
  ManifestSchema,
  PackageSchema,
  PACKAGE_SCHEMAS,
  SgxPackageSchema,
  TdxPackageSchema,
  SnpPackageSchema,
  SimPackageSchema,
  SnpTcbSchema,
  WorkloadSchema,
  ImageSchema,
  SecretSchema,
  SECRET_SCHEMAS,
  OwnerSchema,
  IntelTcbStatusSchema,
  NAME_PATTERN,
} from './manifest/schema.js';
export type {
  Manifest,
  Package,
  PackageTee,
  SgxPackage,
  TdxPackage,
  SnpPackage,
  SimPackage,
  Workload,
  FileValue,
  MeshConfig,
  Ingress,
  Egress,
  Volume,
  ImageRef,
  Secret,
  SymmetricSecret,
  CertEcdsaSecret,
  PlainSecret,
  Owner,
  Recovery,
  ManifestPolicy,
} from './manifest/schema.js';
export { validateManifest, listManifestProblems, parseManifestText } from './manifest/validate.js';
export { parseStrictJson } from './manifest/strict-json.js';
export type { StrictJsonOptions } from './manifest/strict-json.js';
export {
  dryRunManifestTemplates,
  renderWorkload,
  workloadTemplatePaths,
} from './manifest/workload.js';
export type { ManifestProblem, RenderedWorkload } from './manifest/workload.js';
export {
  canonicalJson,
  canonicalJsonBytes,
  canonicalManifestBytes,
  manifestHash,
} from './canonical.js';

// Templates.
export {
  TEMPLATE_ENCODERS,
  parseTemplate,
  renderTemplate,
  renderTemplateText,
  templatePaths,
} from './template.js';
export type {
  TemplateEncoder,
  TemplateTarget,
  TemplateContext,
  SecretValue,
  ParsedTemplate,
  TemplateAction,
  TemplateText,
} from './template.js';

// Report-data binding and nonces.
export {
  activationReportData,
  coordinatorReportData,
  newNonce,
  nonceFromBytes,
  nonceFromBase64Url,
  nonceToBase64Url,
  NONCE_BYTES,
  ACTIVATION_LABEL,
  COORDINATOR_LABEL,
  COORDINATOR_CERT_URI,
  EMPTY_HISTORY_HEAD,
  namesCoordinator,
} from './binding.js';
export type { Nonce } from './binding.js';

// Owner keys and signatures.
export { ownerKeyType, recoveryKeyType, importOwnerKey, spkiKeyType } from './keys.js';
export type { OwnerKeyType, RecoveryKeyType } from './keys.js';
export {
  ownerSignedBytes,
  transitionSignedBytes,
  secretDigest,
  signAsOwner,
  verifyOwnerSignature,
  verifyOwnerApprovals,
  OWNER_SIGNATURE_LABEL,
  SECRET_DIGEST_LABEL,
} from './signatures.js';
export type { OwnerSignature, OwnerSignatureAlg, SignaturePurpose } from './signatures.js';

// Manifest history.
export {
  transitionHash,
  verifyHistory,
  verifyTransitionApproval,
  packageUpdateChanges,
  TRANSITION_KINDS,
  TRANSITION_LABEL,
  ZERO_HASH,
} from './history.js';
export type { Transition, TransitionKind, HistoryEntry, VerifiedHistory } from './history.js';

// HTTP API.
export {
  ROUTES,
  checkBody,
  EvidenceSchema,
  EvidenceTypeSchema,
  ChallengeResponseSchema,
  ActivateRequestSchema,
  ActivateResponseSchema,
  ActivationBundleSchema,
  AttestRequestSchema,
  AttestResponseSchema,
  ManifestResponseSchema,
  SetManifestRequestSchema,
  SetManifestResponseSchema,
  HistoryEntrySchema,
  HistoryResponseSchema,
  OwnerSignatureSchema,
  SetSecretRequestSchema,
  SetSecretResponseSchema,
  StatusResponseSchema,
  CoordinatorStateSchema,
  ReleaseInstanceRequestSchema,
  ReleaseInstanceResponseSchema,
  ImageKeyRequestSchema,
  ImageKeyResponseSchema,
  InstanceIdPattern,
  releaseSignedBytes,
  renewalSignedBytes,
} from './api.js';
export type {
  EvidenceType,
  WireEvidence,
  ChallengeResponse,
  ActivateRequest,
  ActivateResponse,
  ActivationBundle,
  AttestRequest,
  AttestResponse,
  ManifestResponse,
  SetManifestRequest,
  SetManifestResponse,
  HistoryResponse,
  SetSecretRequest,
  SetSecretResponse,
  StatusResponse,
  CoordinatorState,
  ReleaseInstanceRequest,
  ReleaseInstanceResponse,
  ImageKeyRequest,
  ImageKeyResponse,
} from './api.js';
export { encryptBundle, decryptBundle, BUNDLE_CONTENT_TYPE } from './bundle.js';
export { problemFromError, ProblemSchema, PROBLEM_CONTENT_TYPE } from './problem.js';
export type { Problem } from './problem.js';

// Encoding helpers (base64url is the wire encoding of binary fields).
export { toHex, fromHex, toBase64Url, fromBase64Url, toPem, fromPem, fromPemAll } from './bytes.js';
export { jsonPointer } from './pointer.js';
