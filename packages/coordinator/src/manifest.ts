/**
 * Manifest secrets as the coordinator stores and generates them, and the mapping of protocol
 * errors to coordinator codes at the API boundary.
 *
 * Generated at set time: `symmetric` (random bytes) and `cert-ecdsa` (a key pair and a
 * certificate signed by the coordinator's root CA, so clients that trust the root trust it).
 * Per-instance secrets are generated at an instance's first activation and kept across its
 * renewals. User-defined secrets have no value until an owner uploads one.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { isCloisterError } from '@cloister/errors';
import { canonicalJson } from '@cloister/protocol';
import type { Secret, SecretValue } from '@cloister/protocol';
import { coordinatorError } from './error-codes.js';
import type { CoordinatorErrorCode } from './error-codes.js';
import { x509 } from './mesh-ca.js';
import type { LoadedCa } from './mesh-ca.js';

/** A secret at rest (inside the encrypted store). Bytes are base64url. */
export interface StoredSecret {
  /** Canonical JSON of the definition it was generated for: a changed definition regenerates. */
  readonly definition: string;
  readonly value:
    | { readonly type: 'bytes'; readonly value: string }
    | {
        readonly type: 'key-cert';
        readonly certificate: string;
        readonly privateKey: string;
        readonly publicKey: string;
      }
    | null;
  /**
   * Upload counter of user-defined secrets: the version of the value, or, with no value, the
   * version the next upload must carry (0 before the first; it never restarts, see service.ts).
   */
  readonly version: number;
}

const b64u = (b: Uint8Array | ArrayBuffer): string =>
  Buffer.from(b as Uint8Array).toString('base64url');

/** The identity of a secret definition (canonical JSON). */
export function secretDefinitionKey(def: Secret): string {
  return canonicalJson(def);
}

/** The template value of a stored secret. */
export function secretValueOf(s: StoredSecret | undefined): SecretValue | null {
  const v = s?.value;
  if (v === undefined || v === null) return null;
  if (v.type === 'bytes')
    return { type: 'bytes', value: new Uint8Array(Buffer.from(v.value, 'base64url')) };
  return {
    type: 'key-cert',
    certificate: new Uint8Array(Buffer.from(v.certificate, 'base64url')),
    privateKey: new Uint8Array(Buffer.from(v.privateKey, 'base64url')),
    publicKey: new Uint8Array(Buffer.from(v.publicKey, 'base64url')),
  };
}

/** Generates the value of a secret (null for user-defined ones). */
export async function generateSecret(
  def: Secret,
  root: LoadedCa,
  now: Date,
): Promise<StoredSecret> {
  const definition = secretDefinitionKey(def);
  if (def.userDefined === true || def.type === 'plain')
    return { definition, value: null, version: 0 };
  if (def.type === 'symmetric') {
    return {
      definition,
      value: { type: 'bytes', value: b64u(randomBytes(def.bits / 8)) },
      version: 0,
    };
  }
  const alg = { name: 'ECDSA', namedCurve: def.curve };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const sn = randomBytes(16);
  sn[0] = ((sn[0] ?? 0) & 0x7f) | 0x01;
  const names = [
    ...(def.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(def.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: sn.toString('hex'),
    subject: `CN=${(def.commonName ?? def.dnsNames?.[0] ?? 'cloister secret').replace(/[,+"\\<>;=]/g, (c) => `\\${c}`)}`,
    issuer: root.cert.subjectName,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (def.validDays ?? 365) * 86_400_000),
    publicKey: keys.publicKey,
    signingKey: root.key,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert),
    ],
  });
  return {
    definition,
    value: {
      type: 'key-cert',
      certificate: b64u(cert.rawData),
      privateKey: b64u(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
      publicKey: b64u(await webcrypto.subtle.exportKey('spki', keys.publicKey)),
    },
    version: 0,
  };
}

const PROTOCOL_TO_COORDINATOR: Readonly<Record<string, CoordinatorErrorCode>> = {
  MANIFEST_INVALID: 'COORDINATOR_MANIFEST_INVALID',
  MANIFEST_JSON_INVALID: 'COORDINATOR_MANIFEST_INVALID',
  TEMPLATE_SYNTAX: 'COORDINATOR_MANIFEST_INVALID',
  TEMPLATE_INVALID_VALUE: 'COORDINATOR_MANIFEST_INVALID',
  TEMPLATE_VALUE_MISSING: 'COORDINATOR_SECRET_MISSING',
  OWNER_SIGNATURE_INVALID: 'COORDINATOR_SIGNATURE_INVALID',
  OWNER_THRESHOLD_NOT_MET: 'COORDINATOR_THRESHOLD_NOT_MET',
  OWNER_KEY_INVALID: 'COORDINATOR_MANIFEST_INVALID',
  HISTORY_BROKEN: 'COORDINATOR_TRANSITION_INVALID',
  NONCE_INVALID: 'COORDINATOR_MALFORMED_REQUEST',
  PROTOCOL_BAD_ENCODING: 'COORDINATOR_MALFORMED_REQUEST',
  REQUEST_INVALID: 'COORDINATOR_MALFORMED_REQUEST',
};

/**
 * Re-raises a protocol error under the coordinator's code (keeping its details and cause), so
 * API clients see one table of codes; anything else is rethrown unchanged.
 */
export function asCoordinatorError(e: unknown): never {
  if (isCloisterError(e)) {
    const mapped = PROTOCOL_TO_COORDINATOR[e.code];
    if (mapped !== undefined) {
      throw coordinatorError(mapped, e.message, {
        cause: e,
        details: { ...(e.details ?? {}), cause: e.code },
      });
    }
  }
  throw e;
}
