/**
 * Error codes of the coordinator client, `cloister verify` and `cloister up`. Codes with a
 * `layer` are verification failures of the coordinator's own evidence and exit with 10.
 */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const CLIENT_ERRORS = defineErrorCodes({
  CLIENT_COORDINATOR_UNREACHABLE: {
    kind: 'unavailable',
    summary:
      'The coordinator could not be reached (connection refused, reset, timed out): check the URL and that it runs.',
  },
  CLIENT_COORDINATOR_UNTRUSTED: {
    kind: 'rejected',
    summary:
      'The TLS certificate of the coordinator is not signed by the saved root CA itself (a mesh certificate under it is not the coordinator) or does not name the host: run `cloister verify` again.',
  },
  CLIENT_BAD_RESPONSE: {
    kind: 'malformed',
    summary:
      'The coordinator answered with a body that is not JSON, too large, or violates the API schema.',
  },
  CLIENT_REMOTE_ERROR: {
    kind: 'internal',
    summary:
      'The coordinator refused without a usable problem+json document; `details.status` has the HTTP status.',
  },
  VERIFY_SIMULATION_REFUSED: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      'The coordinator runs on the simulation TEE; pass --allow-simulation (and --sim-root) only for development.',
  },
  VERIFY_EVIDENCE_UNSUPPORTED: {
    kind: 'unsupported',
    summary: 'The coordinator sent evidence of a TEE type this release cannot verify.',
  },
  VERIFY_MEASUREMENT_MISMATCH: {
    kind: 'rejected',
    layer: 'POLICY',
    summary:
      "The coordinator's measured code is not this release's coordinator (`details.expected` vs `details.actual`).",
  },
  VERIFY_BINDING_MISMATCH: {
    kind: 'rejected',
    layer: 'BINDING',
    summary:
      "The evidence's report data does not commit to our nonce, the root CA, the history head and the TLS key the coordinator sent.",
  },
  VERIFY_TLS_KEY_MISMATCH: {
    kind: 'rejected',
    layer: 'BINDING',
    summary:
      'The TLS key of the connection is not the key the evidence attests: someone else terminated the connection.',
  },
  VERIFY_HISTORY_MISMATCH: {
    kind: 'rejected',
    summary:
      'The current manifest or the full history the coordinator serves does not match the attested history head.',
  },
  VERIFY_MANIFEST_MISMATCH: {
    kind: 'rejected',
    summary:
      'The coordinator enforces a different manifest than the one given with --manifest (canonical hashes differ).',
  },
  VERIFY_HISTORY_ROLLBACK: {
    kind: 'rejected',
    summary:
      "The coordinator's attested history is shorter than, or forks from, the one this client saw before (--history-file): its state was rolled back or replaced.",
  },
  VERIFY_OWNER_MISMATCH: {
    kind: 'rejected',
    summary:
      'The first manifest of the attested history carries no valid signature by the owner key given with --owner-key: the coordinator was installed with another owner.',
  },
  VERIFY_NO_MANIFEST: {
    kind: 'rejected',
    summary: '--manifest was given but the coordinator has no manifest set yet.',
  },
  UP_RUNFILE_INVALID: {
    kind: 'malformed',
    summary:
      '`workloads.json` of `cloister up` is missing, not JSON, or violates its schema (`details.problems`).',
  },
  UP_START_FAILED: {
    kind: 'unavailable',
    summary:
      'A process `cloister up` starts (coordinator, agent) exited or did not become ready in time; its output says why.',
  },
});

export type ClientErrorCode = keyof typeof CLIENT_ERRORS;

/** Builds a typed client error. */
export const clientError = errorFactory(CLIENT_ERRORS);
