/**
 * Seals an activation bundle to the agent's attested X25519 bundle key: a JWE in compact
 * serialisation with `alg: ECDH-ES` (direct key agreement, RFC 8037 X25519), `enc: A256GCM`,
 * exactly what the protocol package's `decryptBundle` (jose) opens. The protocol package's
 * `encryptBundle` makes the same JWE through jose and WebCrypto; this one exists because the
 * coordinator seals one bundle per activation and jose's path (WebCrypto key generation, export
 * and derivation) costs several times more CPU than Node's `diffieHellman` here. Tests open these
 * JWEs with jose.
 *
 * `openBundle` is the matching Node path for load generators that play many agents at once; the
 * agent itself opens its bundle with jose (`decryptBundle`).
 *
 * RFC 7518 §4.6: a fresh ephemeral key per bundle; the content key is the Concat KDF (NIST SP
 * 800-56A, SHA-256, one round) of Z with AlgorithmID = "A256GCM", empty PartyUInfo and
 * PartyVInfo, SuppPubInfo = 256; the AAD is the ASCII of the encoded protected header. An
 * all-zero Z (the peer sent a low-order point, RFC 7748 §6.1) is refused.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  BUNDLE_CONTENT_TYPE,
  ActivationBundleSchema,
  checkBody,
  protocolError,
} from '@cloister/protocol';
import type { ActivationBundle } from '@cloister/protocol';
import { coordinatorError } from './error-codes.js';

const ENC = 'A256GCM';
/** OtherInfo for A256GCM with empty apu/apv: len("A256GCM") "A256GCM" 0 0 256. */
const OTHER_INFO = Buffer.concat([
  u32(ENC.length),
  Buffer.from(ENC, 'ascii'),
  u32(0),
  u32(0),
  u32(256),
]);
const ROUND_ONE = u32(1);

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function contentKey(z: Uint8Array): Buffer {
  return createHash('sha256').update(ROUND_ONE).update(z).update(OTHER_INFO).digest();
}

/** The content key of one bundle, agreed with the agent's key before anything is committed. */
export interface BundleSealer {
  /** Encrypts `bundle` (checked against its schema first). */
  seal(bundle: ActivationBundle): string;
}

/** An X25519 public key object from its 32 raw bytes (RFC 7748). */
function x25519PublicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new Error(`an X25519 key has 32 bytes, not ${raw.length}`);
  return createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') },
    format: 'jwk',
  });
}

/** X25519 agreement; an all-zero result means a low-order peer point and is refused. */
function agree(privateKey: KeyObject, publicKey: KeyObject): Buffer {
  const z = diffieHellman({ privateKey, publicKey });
  let any = 0;
  for (const b of z) any |= b; // no early exit: Z is the secret
  if (any === 0) throw new Error('low-order X25519 point');
  return z;
}

/**
 * Agrees a fresh ephemeral X25519 key with the agent's bundle key (`bundleKey`, 32 bytes).
 * COORDINATOR_KEY_INVALID when it is not a usable X25519 key: call it before committing
 * anything, so that a bad key refuses the activation instead of failing after it.
 */
export function bundleSealer(bundleKey: Uint8Array): BundleSealer {
  const eph = generateKeyPairSync('x25519');
  let z: Buffer;
  try {
    z = agree(eph.privateKey, x25519PublicKey(bundleKey));
  } catch (cause) {
    throw coordinatorError(
      'COORDINATOR_KEY_INVALID',
      'the bundle key is not an X25519 public key',
      {
        cause,
      },
    );
  }
  const cek = contentKey(z);
  const header = Buffer.from(
    JSON.stringify({
      alg: 'ECDH-ES',
      enc: ENC,
      cty: BUNDLE_CONTENT_TYPE,
      epk: { kty: 'OKP', crv: 'X25519', x: eph.publicKey.export({ format: 'jwk' }).x },
    }),
  ).toString('base64url');
  let used = false;
  return {
    seal(bundle) {
      // One content key, one IV: a second message under the same key would need care this
      // module does not take.
      if (used) throw new Error('a bundle sealer seals one bundle');
      used = true;
      const body = checkBody(ActivationBundleSchema, bundle, 'bundle');
      const iv = randomBytes(12);
      const gcm = createCipheriv('aes-256-gcm', cek, iv);
      gcm.setAAD(Buffer.from(header, 'ascii'));
      const ct = Buffer.concat([gcm.update(JSON.stringify(body), 'utf8'), gcm.final()]);
      return `${header}..${iv.toString('base64url')}.${ct.toString('base64url')}.${gcm.getAuthTag().toString('base64url')}`;
    },
  };
}

/** Encrypts `bundle` to `bundleKey` in one step (see `bundleSealer`). */
export function sealBundle(bundle: ActivationBundle, bundleKey: Uint8Array): string {
  return bundleSealer(bundleKey).seal(bundle);
}

const B64U = /^[A-Za-z0-9_-]*$/;
/**
 * The protected header members `seal` writes (and jose writes for `encryptBundle`). Anything
 * else is refused: `crit` names members a recipient must understand (RFC 7516 §4.1.13), `zip`
 * would change the plaintext (RFC 8725 §3.6), `apu`/`apv` would change the content key.
 */
const HEADER_MEMBERS = new Set(['alg', 'enc', 'cty', 'epk']);
const EPK_MEMBERS = new Set(['kty', 'crv', 'x']);

/**
 * Opens a bundle sealed to the agent's bundle key (`agent`: its X25519 private key): the same
 * checks as `decryptBundle` (algorithms, content type, GCM tag, JSON, schema), with
 * BUNDLE_INVALID for any failure.
 */
export function openBundle(jwe: string, agent: KeyObject): ActivationBundle {
  const invalid = (why: string, cause?: unknown): Error =>
    protocolError('BUNDLE_INVALID', `the bundle cannot be opened: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
    });
  const parts = jwe.split('.');
  if (parts.length !== 5 || parts[1] !== '' || !parts.every((p) => B64U.test(p))) {
    throw invalid('not a compact JWE with direct key agreement');
  }
  const [header, , ivText, ctText, tagText] = parts as [string, string, string, string, string];
  let h: { alg?: unknown; enc?: unknown; cty?: unknown; epk?: Record<string, unknown> | null };
  try {
    h = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as typeof h;
  } catch (cause) {
    throw invalid('the protected header is not JSON', cause);
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) {
    throw invalid('the protected header is not a JSON object');
  }
  const epk = h.epk;
  if (
    Object.keys(h).some((k) => !HEADER_MEMBERS.has(k)) ||
    (typeof epk === 'object' && epk !== null && Object.keys(epk).some((k) => !EPK_MEMBERS.has(k)))
  ) {
    throw invalid('unexpected protected header members');
  }
  if (
    h.alg !== 'ECDH-ES' ||
    h.enc !== ENC ||
    h.cty !== BUNDLE_CONTENT_TYPE ||
    typeof epk !== 'object' ||
    epk === null ||
    epk['kty'] !== 'OKP' ||
    epk['crv'] !== 'X25519' ||
    typeof epk['x'] !== 'string'
  ) {
    throw invalid('unexpected algorithms, content type or ephemeral key');
  }
  const x = Buffer.from(epk['x'], 'base64url');
  const iv = Buffer.from(ivText, 'base64url');
  const tag = Buffer.from(tagText, 'base64url');
  if (x.length !== 32 || iv.length !== 12 || tag.length !== 16) {
    throw invalid('wrong field lengths');
  }
  let plaintext: string;
  try {
    const z = agree(agent, x25519PublicKey(x));
    const gcm = createDecipheriv('aes-256-gcm', contentKey(z), iv);
    gcm.setAAD(Buffer.from(header, 'ascii'));
    gcm.setAuthTag(tag);
    const pt = Buffer.concat([gcm.update(Buffer.from(ctText, 'base64url')), gcm.final()]);
    plaintext = new TextDecoder('utf-8', { fatal: true }).decode(pt);
  } catch (cause) {
    throw invalid('it does not decrypt with the bundle key', cause);
  }
  try {
    return checkBody(ActivationBundleSchema, JSON.parse(plaintext), 'bundle');
  } catch (cause) {
    throw invalid('the content does not match the bundle schema', cause);
  }
}
