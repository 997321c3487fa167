/**
 * Error codes of the coordinator. Each becomes an RFC 9457 problem+json `code` on the wire; the
 * kind decides the HTTP status. Refusals of an activation carry `details: {rule, expected,
 * actual}` and never a secret value.
 */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const COORDINATOR_ERRORS = defineErrorCodes({
  // Requests
  COORDINATOR_MALFORMED_REQUEST: {
    kind: 'malformed',
    summary:
      'The request body is not valid JSON or violates the route schema; `details.path` names the field.',
  },
  COORDINATOR_UNSUPPORTED_MEDIA_TYPE: {
    kind: 'unsupported',
    summary: 'The request body has a content type other than application/json.',
  },
  COORDINATOR_BODY_TOO_LARGE: {
    kind: 'limit',
    summary:
      'The request body exceeds the size limit (1 MiB by default); the HTTP status is 413 Content Too Large.',
  },
  COORDINATOR_NOT_FOUND: {
    kind: 'not-found',
    summary: 'No route, workload, secret or manifest with that name exists.',
  },
  // Manifest and governance
  COORDINATOR_NO_MANIFEST: {
    kind: 'conflict',
    summary: 'No manifest has been set yet; run `cloister manifest set` first.',
  },
  COORDINATOR_MANIFEST_INVALID: {
    kind: 'malformed',
    summary:
      'The manifest violates its schema or a template does not render; `details` names the field.',
  },
  COORDINATOR_SIGNATURE_INVALID: {
    kind: 'unauthorized',
    summary:
      "A detached signature does not verify: an owner's (unknown owner, or a different transition), or an instance release or renewal not signed by the instance's current mesh key (`details.rule`).",
  },
  COORDINATOR_THRESHOLD_NOT_MET: {
    kind: 'unauthorized',
    summary: 'Too few valid owner signatures with the needed role to meet the update threshold.',
  },
  COORDINATOR_MANIFEST_IMMUTABLE: {
    kind: 'conflict',
    summary: 'The current manifest has no owners, so it can never be updated.',
  },
  COORDINATOR_HISTORY_CONFLICT: {
    kind: 'conflict',
    summary:
      'The update names a previous transition that is not the current history head (fetch the head and sign again), or the manifest or the instance changed while the request was checked (retry).',
  },
  COORDINATOR_HISTORY_BROKEN: {
    kind: 'internal',
    summary:
      'The stored manifest history does not verify as a hash chain; the state was tampered with.',
  },
  COORDINATOR_TRANSITION_INVALID: {
    kind: 'rejected',
    summary:
      'The update is not a valid transition of its kind (e.g. a package update that changes more than minimum SVN/TCB, or lowers one).',
  },
  COORDINATOR_SECRET_MISSING: {
    kind: 'conflict',
    summary:
      'A template of the workload needs a user-defined secret that has not been uploaded yet; upload it with `cloister secret set`.',
  },
  COORDINATOR_SECRET_NOT_USER_DEFINED: {
    kind: 'conflict',
    summary: 'Only secrets declared `userDefined` in the manifest can be uploaded.',
  },
  COORDINATOR_SECRET_INVALID: {
    kind: 'malformed',
    summary: 'The uploaded secret value does not fit its declared type.',
  },
  // Activation
  COORDINATOR_NONCE_INVALID: {
    kind: 'rejected',
    layer: 'BINDING',
    summary:
      'The activation nonce is unknown, already used or expired; ask for a new challenge (replay protection).',
  },
  COORDINATOR_BINDING_MISMATCH: {
    kind: 'rejected',
    layer: 'BINDING',
    summary:
      'The evidence report data does not bind this nonce and this agent key (relayed or stolen evidence).',
  },
  COORDINATOR_UNKNOWN_WORKLOAD: {
    kind: 'rejected',
    layer: 'POLICY',
    summary: 'The manifest has no workload with that name.',
  },
  COORDINATOR_TEE_MISMATCH: {
    kind: 'rejected',
    layer: 'POLICY',
    summary: "The evidence comes from a TEE type other than the workload package's.",
  },
  COORDINATOR_SIMULATION_REFUSED: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      'Simulation evidence is refused unless the manifest sets policy.allowSimulation and the coordinator runs with --simulation.',
  },
  COORDINATOR_APPRAISAL_FAILED: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      "The evidence does not match the workload's package (measurement, host data, SVN, debug...); `details` says which rule.",
  },
  COORDINATOR_TOO_MANY_INSTANCES: {
    kind: 'limit',
    summary: 'The workload already has maxInstances live instances.',
  },
  COORDINATOR_EVIDENCE_UNSUPPORTED: {
    kind: 'unsupported',
    layer: 'PARSE',
    summary: 'No verifier for this evidence type is available in this build.',
  },
  COORDINATOR_IMAGE_MISMATCH: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      'Image key release refused: the workload names no pinned image, or the image manifest sent is not the one its `image.manifestDigest` pins; `details` says which.',
  },
  COORDINATOR_IMAGE_KEY_UNAVAILABLE: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      "An encrypted layer of the workload's image is not wrapped to this coordinator's image key (convert it with `cloister image convert --coordinator URL`).",
  },
  COORDINATOR_KEY_INVALID: {
    kind: 'malformed',
    summary: 'The agent public key or CSR is not a valid P-256 key, or the CSR signature fails.',
  },
  // Start-up and state
  COORDINATOR_NO_TEE: {
    kind: 'unsupported',
    summary:
      'No TEE sealing or evidence provider is available; run on TEE hardware or pass --simulation --sim-root DIR for development.',
  },
  COORDINATOR_UNSEAL_FAILED: {
    kind: 'rejected',
    summary:
      'The sealed data key cannot be unsealed by this TEE (other hardware, other code, or tampered file).',
  },
  COORDINATOR_STATE_CORRUPT: {
    kind: 'internal',
    summary: 'A stored value fails authenticated decryption (tampered or moved between rows).',
  },
  COORDINATOR_BAD_CONFIG: {
    kind: 'usage',
    summary: 'A start-up option is invalid (listen address, owner key, data directory).',
  },
  COORDINATOR_NOT_READY: {
    kind: 'unavailable',
    summary: 'The coordinator is starting or closing.',
  },
  COORDINATOR_CA_EXPIRED: {
    kind: 'unavailable',
    summary:
      'The mesh CA (or the root above it) has expired, so no certificate can be issued; a manifest update makes a new mesh CA, a new root needs a new deployment.',
  },
  COORDINATOR_BUSY: {
    kind: 'unavailable',
    summary:
      'Too many activation nonces are outstanding (issued but not used within their TTL); retry later.',
  },
});

export type CoordinatorErrorCode = keyof typeof COORDINATOR_ERRORS;

/** Throw helper: `throw coordinatorError('COORDINATOR_NOT_FOUND', '...')`. */
export const coordinatorError = errorFactory(COORDINATOR_ERRORS);
