/**
 * Error codes of the in-TEE agent. Callers and tests switch on `code`; the kind decides the exit
 * code of `cloister agent` (so a Kubernetes init container fails with a meaningful status).
 */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const AGENT_ERRORS = defineErrorCodes({
  AGENT_USAGE: {
    kind: 'usage',
    summary:
      'The agent was started wrongly: missing or contradictory options, no program to run, or a bad --peer map.',
  },
  AGENT_TEE_UNAVAILABLE: {
    kind: 'unavailable',
    summary:
      'The TEE interface (configfs-tsm, /dev/attestation, sim key directory) is absent or refused the request; check the device and the kernel version.',
  },
  AGENT_TEE_UNSUPPORTED: {
    kind: 'unsupported',
    summary:
      'The TEE interface reports a provider or attestation type the agent cannot use (for example Gramine without DCAP).',
  },
  AGENT_TEE_MALFORMED: {
    kind: 'malformed',
    summary:
      'The TEE interface returned bytes the agent cannot parse (empty report, bad certificate table).',
  },
  AGENT_TEE_RACE: {
    kind: 'unavailable',
    summary:
      'Another process kept changing the configfs-tsm report while the agent read it; the agent gave up after retrying.',
  },
  AGENT_COORDINATOR_UNREACHABLE: {
    kind: 'unavailable',
    summary: 'The coordinator could not be reached or its TLS handshake failed.',
  },
  AGENT_COORDINATOR_REFUSED: {
    kind: 'rejected',
    summary:
      'The coordinator refused the activation; its problem details (code, rule, expected and actual) are attached.',
  },
  AGENT_COORDINATOR_BAD_RESPONSE: {
    kind: 'malformed',
    summary: 'The coordinator answered with a body that does not match the activation API schema.',
  },
  AGENT_BUNDLE_INVALID: {
    kind: 'malformed',
    summary:
      'The decrypted activation bundle does not match the bundle schema or its certificate does not belong to the agent key.',
  },
  AGENT_COORDINATOR_IDENTITY_MISMATCH: {
    kind: 'rejected',
    summary:
      "The coordinator's TLS certificate does not chain to the root CA in the bundle (or to --root-ca): possible interception, nothing was written.",
  },
  AGENT_PATH_ESCAPE: {
    kind: 'rejected',
    summary:
      'A file path in the bundle is relative, contains "..", NUL, lies under another file of the bundle, or would leave the files root (also through a symlinked directory already there); nothing was written.',
  },
  AGENT_FILES_WRITE_FAILED: {
    kind: 'internal',
    summary: 'The agent could not create the in-memory files directory or write a file into it.',
  },
  AGENT_SPAWN_FAILED: {
    kind: 'usage',
    summary: 'The program could not be started (not found or not executable).',
  },
  AGENT_MESH_CONFIG_INVALID: {
    kind: 'malformed',
    summary:
      'The mesh section (ingress ports, egress listen addresses, peer host map) is invalid or names an unknown peer.',
  },
  AGENT_MESH_LISTEN_FAILED: {
    kind: 'unavailable',
    summary: 'A mesh proxy listener could not bind its port.',
  },
  AGENT_RENEWAL_FAILED: {
    kind: 'unavailable',
    summary:
      'Renewing the mesh certificate failed; the agent keeps the current certificate and retries until it expires.',
  },
});

export type AgentErrorCode = keyof typeof AGENT_ERRORS;

/** Builds a typed agent error. */
export const agentError = errorFactory(AGENT_ERRORS);
