/**
 * Error codes of the wire protocol package: manifest validation, templates, encodings, owner
 * signatures, the manifest history and activation bundles. Callers switch on `code`.
 */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const PROTOCOL_ERRORS = defineErrorCodes({
  MANIFEST_JSON_INVALID: {
    kind: 'malformed',
    summary:
      'The manifest text is not strict JSON: syntax error, duplicate key, forbidden key, too deep or too large.',
  },
  MANIFEST_INVALID: {
    kind: 'malformed',
    summary:
      'The manifest violates its schema or references something it does not define; `details.problems` lists every problem with its JSON path.',
  },
  TEMPLATE_SYNTAX: {
    kind: 'malformed',
    summary:
      'A template is not of the form `{{ encoder .path }}` (unclosed action, unknown encoder, extra words).',
  },
  TEMPLATE_INVALID_VALUE: {
    kind: 'malformed',
    summary:
      'A template names a value that does not exist, or applies an encoder that does not fit the value or the place.',
  },
  TEMPLATE_VALUE_MISSING: {
    kind: 'unavailable',
    summary:
      'A template needs a value that has none yet (for example a user-defined secret not uploaded yet).',
  },
  PROTOCOL_BAD_ENCODING: {
    kind: 'malformed',
    summary: 'A field is not valid hex, base64url, PEM or DER where that encoding is required.',
  },
  NONCE_INVALID: {
    kind: 'malformed',
    summary: 'A nonce is not exactly 32 bytes (43 base64url characters).',
  },
  REQUEST_INVALID: {
    kind: 'malformed',
    summary:
      'An API request or response body violates its schema; `details.problems` lists the fields.',
  },
  OWNER_KEY_INVALID: {
    kind: 'malformed',
    summary:
      'An owner or recovery public key is not a PEM SubjectPublicKeyInfo of a supported type.',
  },
  OWNER_SIGNATURE_INVALID: {
    kind: 'unauthorized',
    summary:
      'An owner signature does not verify, names an unknown owner, or uses an algorithm that does not fit the key.',
  },
  OWNER_THRESHOLD_NOT_MET: {
    kind: 'unauthorized',
    summary:
      'Fewer distinct eligible owners signed than the threshold requires (an empty owner list makes the manifest immutable).',
  },
  HISTORY_BROKEN: {
    kind: 'rejected',
    summary:
      'The manifest history is not an unbroken hash chain (wrong sequence, previous hash or manifest hash).',
  },
  BUNDLE_INVALID: {
    kind: 'rejected',
    summary:
      'An activation bundle cannot be decrypted with the agent key, uses another algorithm, or its content violates the schema.',
  },
});

export type ProtocolErrorCode = keyof typeof PROTOCOL_ERRORS;

/** Builds a typed protocol error. */
export const protocolError = errorFactory(PROTOCOL_ERRORS);
