/**
 * Report-data binding (DESIGN §3). The 64 bytes a TEE puts in its evidence commit to a verifier
 * nonce and to the key or state the evidence vouches for. Byte layouts (all fields fixed-length,
 * so the concatenation is unambiguous; labels are ASCII without a terminator):
 *
 *   activation:  SHA-512( "cloister/activate/v2"       (20 bytes)
 *                       || nonce                       (32 bytes)
 *                       || SHA-256(agent SPKI DER)     (32 bytes: the P-256 key of its mesh
 *                                                       certificate)
 *                       || bundle key                  (32 bytes: the X25519 public key,
 *                                                       RFC 7748, the bundle is sealed to) )
 *
 *   coordinator: SHA-512( "cloister/coordinator/v1"    (23 bytes)
 *                       || nonce                       (32 bytes)
 *                       || SHA-256(root CA cert DER)   (32 bytes)
 *                       || history head                (32 bytes: the last transition hash,
 *                                                       32 zero bytes before the first manifest)
 *                       || SHA-256(TLS SPKI DER)       (32 bytes) )
 *
 * The nonce stops replay of old evidence; the SPKI hash and the bundle key stop a relay from
 * pairing someone else's evidence with its own keys; the root CA, history head and TLS key make
 * one piece of evidence vouch for exactly the state and channel a client then trusts.
 */
import { concatBytes, fromBase64Url, sha256, sha512, toBase64Url, utf8 } from './bytes.js';
import { protocolError } from './error-codes.js';

/** A verifier nonce: exactly 32 bytes, built only by the functions below. */
export type Nonce = Uint8Array & { readonly __brand: 'cloister.Nonce' };

export const NONCE_BYTES = 32;
export const ACTIVATION_LABEL = 'cloister/activate/v2';
export const COORDINATOR_LABEL = 'cloister/coordinator/v1';
/** The history head before any manifest is set. */
export const EMPTY_HISTORY_HEAD = new Uint8Array(32);

/**
 * A URI SAN that only the coordinator's own TLS certificate carries. The root CA also signs
 * certificate secrets (DNS names and IP addresses the owner chooses, delivered to workloads)
 * and, through the mesh CAs, workload leaves (SPIFFE URIs): a client that trusts the root tells
 * the coordinator from those by this name, which neither can carry.
 */
export const COORDINATOR_CERT_URI = 'urn:cloister:coordinator';

/** Whether a certificate's subjectAltName (Node.js's text form) names the coordinator. */
export function namesCoordinator(subjectAltName: string | undefined): boolean {
  return (subjectAltName ?? '').split(', ').includes(`URI:${COORDINATOR_CERT_URI}`);
}

/** 32 fresh random bytes from the platform CSPRNG. */
export function newNonce(): Nonce {
  return globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES)) as Nonce;
}

/** Checks the length; throws NONCE_INVALID. */
export function nonceFromBytes(b: Uint8Array): Nonce {
  if (!(b instanceof Uint8Array) || b.length !== NONCE_BYTES) {
    throw protocolError('NONCE_INVALID', `a nonce is ${NONCE_BYTES} bytes`, {
      details: { length: b instanceof Uint8Array ? b.length : null },
    });
  }
  return new Uint8Array(b) as Nonce;
}

/** Decodes the wire form (43 base64url characters). */
export function nonceFromBase64Url(s: string): Nonce {
  if (typeof s !== 'string' || s.length !== 43) {
    throw protocolError('NONCE_INVALID', 'a nonce is 43 base64url characters');
  }
  try {
    return nonceFromBytes(fromBase64Url(s, 'nonce'));
  } catch (cause) {
    throw protocolError('NONCE_INVALID', 'a nonce is 43 base64url characters', { cause });
  }
}

export function nonceToBase64Url(n: Nonce): string {
  return toBase64Url(n);
}

function need32(b: Uint8Array, field: string): void {
  if (!(b instanceof Uint8Array) || b.length !== 32) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field} must be 32 bytes`, {
      details: { field },
    });
  }
}

/**
 * report_data for workload activation (64 bytes): binds the nonce, the agent's certificate key
 * (`spkiDer`) and the X25519 key its bundle is sealed to (`bundleKey`, 32 bytes).
 */
export async function activationReportData(
  nonce: Nonce,
  spkiDer: Uint8Array,
  bundleKey: Uint8Array,
): Promise<Uint8Array> {
  need32(nonce, 'nonce');
  need32(bundleKey, 'bundleKey');
  return sha512(concatBytes(utf8(ACTIVATION_LABEL), nonce, await sha256(spkiDer), bundleKey));
}

/** report_data for coordinator attestation (64 bytes). */
export async function coordinatorReportData(
  nonce: Nonce,
  rootCaDer: Uint8Array,
  historyHead: Uint8Array,
  tlsSpkiDer: Uint8Array,
): Promise<Uint8Array> {
  need32(nonce, 'nonce');
  need32(historyHead, 'historyHead');
  return sha512(
    concatBytes(
      utf8(COORDINATOR_LABEL),
      nonce,
      await sha256(rootCaDer),
      historyHead,
      await sha256(tlsSpkiDer),
    ),
  );
}
