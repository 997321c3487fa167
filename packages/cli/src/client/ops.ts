/**
 * Owner operations over a pinned coordinator connection (DESIGN §3 "Set the manifest",
 * "Update"): sign and set a manifest, upload a user-defined secret, read and check the history.
 * Shared by the `manifest` / `secret` commands and by `cloister up`.
 */
import { X509Certificate } from 'node:crypto';
import { isCloisterError } from '@cloister/errors';
import {
  fromPem,
  manifestHash,
  ownerSignedBytes,
  secretDigest,
  signAsOwner,
  toBase64Url,
  transitionHash,
  transitionSignedBytes,
  verifyHistory,
} from '@cloister/protocol';
import type {
  HistoryEntry,
  Manifest,
  SetManifestResponse,
  SetSecretResponse,
  TransitionKind,
  VerifiedHistory,
} from '@cloister/protocol';
import type { CoordinatorApi } from './api.js';
import type { OwnerKey } from './local.js';

/** Normalises PEM for comparison (line breaks and trailing space do not matter). */
const pemBody = (pem: string): string => pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');

/**
 * The owner name to sign as: `explicit`, else the owner of `manifest` whose public key is this
 * key, else the key file's name (the first set is checked against the install-time key, whatever
 * name it carries).
 */
export function ownerNameFor(
  key: OwnerKey,
  manifest: Manifest | undefined,
  explicit?: string,
): string {
  if (explicit !== undefined) return explicit;
  for (const [name, o] of Object.entries(manifest?.owners ?? {})) {
    if (pemBody(o.publicKey) === pemBody(key.publicKeyPem)) return name;
  }
  return key.fileName;
}

/** History from the coordinator, its chain verified (and its approvals, when manifests come along). */
export async function fetchHistory(api: CoordinatorApi): Promise<{
  entries: HistoryEntry[];
  manifests?: Record<string, Manifest>;
  verified: VerifiedHistory;
}> {
  const h = await api.history();
  const entries = h.entries as HistoryEntry[];
  const manifests = h.manifests as Record<string, Manifest> | undefined;
  const verified = await verifyHistory(entries, manifests === undefined ? {} : { manifests });
  return { entries, ...(manifests === undefined ? {} : { manifests }), verified };
}

/** Sets (first time) or updates the manifest, signing the transition it creates. */
export async function signAndSetManifest(
  api: CoordinatorApi,
  manifest: Manifest,
  key: OwnerKey,
  options: { owner?: string; kind?: Exclude<TransitionKind, 'set'> } = {},
): Promise<SetManifestResponse & { kind: TransitionKind; owner: string }> {
  const { entries, verified } = await fetchHistory(api);
  const kind: TransitionKind = entries.length === 0 ? 'set' : (options.kind ?? 'update');
  let current: Manifest | undefined;
  if (entries.length > 0) current = (await api.getManifest()).manifest;
  const owner = ownerNameFor(key, kind === 'set' ? manifest : current, options.owner);
  const mh = await manifestHash(manifest);
  const th = await transitionHash({
    seq: entries.length,
    prevHash: verified.head,
    manifestHash: mh,
    kind,
  });
  const signature = await signAsOwner(transitionSignedBytes(th), owner, key.privateKey);
  const res = await api.setManifest({ manifest, kind, signatures: [signature] });
  return { ...res, kind, owner };
}

/**
 * Uploads a user-defined secret, signed over its digest (root CA, name, version, value). The
 * version must be the coordinator's current version plus one; when `version` is not given, the
 * first attempt guesses and, on a version conflict, signs again for the version the coordinator
 * names. Re-signing is safe: the version only stops replays, and a lying coordinator can at most
 * make us sign our own value under another version number.
 */
export async function signAndSetSecret(
  api: CoordinatorApi,
  input: {
    name: string;
    value: Uint8Array;
    rootCaPem: string;
    owner: string;
    key: OwnerKey;
    version?: number;
  },
): Promise<SetSecretResponse> {
  const rootCaDer = new Uint8Array(new X509Certificate(input.rootCaPem).raw);
  const attempt = async (version: number): Promise<SetSecretResponse> => {
    const digest = await secretDigest({ rootCaDer, name: input.name, version, value: input.value });
    const signature = await signAsOwner(
      ownerSignedBytes('secret', digest),
      input.owner,
      input.key.privateKey,
    );
    return api.setSecret(input.name, { value: toBase64Url(input.value), version, signature });
  };
  if (input.version !== undefined) return attempt(input.version);
  try {
    return await attempt(1);
  } catch (e) {
    const expected = isCloisterError(e)
      ? (e.details as { rule?: unknown; expected?: unknown } | undefined)
      : undefined;
    if (
      expected?.rule === 'version' &&
      typeof expected.expected === 'number' &&
      Number.isSafeInteger(expected.expected) &&
      expected.expected !== 1
    ) {
      return attempt(expected.expected);
    }
    throw e;
  }
}

/** SHA-256 fingerprint of a PEM certificate, as colon-separated hex (as browsers show it). */
export function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** The DER of a PEM certificate. */
export function derOf(pem: string): Uint8Array {
  return fromPem(pem, 'CERTIFICATE', 'certificate');
}
