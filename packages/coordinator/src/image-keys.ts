/**
 * Image key release (docs/images.md "Key release"). The coordinator holds one image key pair,
 * made at its first start and kept across manifests like the root CA (encrypted images outlive
 * manifest updates). `cloister image convert --coordinator URL` wraps each layer key to its
 * public half (ocicrypt JWE, ECDH-ES+A256KW, annotation `enc.keys.provider.cloister`), fetched
 * over TLS pinned to the verified root.
 *
 * An activating agent of an image workload sends the image manifest it pulled (and the index,
 * when the workload pins an index). Only after its evidence is verified and appraised, the
 * coordinator checks those bytes against the workload's pinned `image.manifestDigest`, unwraps
 * the keys of that manifest's encrypted layers and returns them inside the activation bundle,
 * which is encrypted to the agent's attested key. A workload that pins no image gets nothing;
 * an agent naming another image than the pinned one is refused: the digest pin is the manifest
 * owner's statement of which image the workload runs. Layer errors other than "not wrapped to
 * this key" (a malformed wrapped key, a bad digest) refuse the activation.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  parseManifestOrIndex,
  releaseLayerKeys,
  sha256Digest,
  wrappedLayerKeys,
} from '@cloister/image';
import type { ImageKeyRequest, Manifest } from '@cloister/protocol';
import { coordinatorError } from './error-codes.js';
import type { Store } from './store/store.js';

/** How the image key is stored (the store encrypts every value). */
interface StoredImageKey {
  readonly pkcs8: string; // base64
}

export interface ImageKey {
  readonly privateKey: KeyObject;
  /** PEM SPKI of the public half (P-256). */
  readonly publicKeyPem: string;
}

/** Loads the coordinator's image key, creating it on the first start. */
export function loadOrCreateImageKey(store: Store): ImageKey {
  let stored = store.get<StoredImageKey>('meta', 'imageKey');
  if (stored === undefined) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const created: StoredImageKey = {
      pkcs8: privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'),
    };
    stored = store.transaction(() => {
      const again = store.get<StoredImageKey>('meta', 'imageKey');
      if (again !== undefined) return again;
      store.put('meta', 'imageKey', created);
      return created;
    });
  }
  const privateKey = createPrivateKey({
    key: Buffer.from(stored.pkcs8, 'base64'),
    format: 'der',
    type: 'pkcs8',
  });
  const publicKeyPem = createPublicKey(privateKey).export({ format: 'pem', type: 'spki' });
  return { privateKey, publicKeyPem: String(publicKeyPem) };
}

type WorkloadImage = Manifest['workloads'][string]['image'];

function mismatch(message: string, rule: string, expected: unknown, actual: unknown): Error {
  return coordinatorError('COORDINATOR_IMAGE_MISMATCH', message, {
    details: { rule, expected, actual },
  });
}

/**
 * The layer keys (ocicrypt PrivateOptions, base64, by layer digest) of the image `req` names,
 * when it is the image `image` pins; undefined when the workload pins no image or no layer is
 * wrapped to the coordinator (an image encrypted to a user's key). Call only after the
 * evidence was verified and appraised.
 */
export async function releaseImageKeys(
  image: WorkloadImage,
  req: ImageKeyRequest,
  key: ImageKey,
): Promise<Record<string, string> | undefined> {
  const pinned = image?.manifestDigest;
  // Keys are released only for a pinned image: an unpinned one (development) is whatever the
  // registry serves, and gets its key, if any, as a secret file.
  if (pinned === undefined) return undefined;
  const manifestBytes = new Uint8Array(Buffer.from(req.manifest, 'base64url'));
  const manifestDigest = sha256Digest(manifestBytes);
  // The pin names the manifest itself (any index that led the agent to it adds nothing), or the
  // index it was selected from: only then does the index matter, and it must be the pinned one.
  if (manifestDigest !== pinned && req.index !== undefined) {
    const indexBytes = new Uint8Array(Buffer.from(req.index, 'base64url'));
    const indexDigest = sha256Digest(indexBytes);
    if (indexDigest !== pinned) {
      throw mismatch('the image index is not the pinned one', 'image.manifestDigest', pinned, {
        index: indexDigest,
        manifest: manifestDigest,
      });
    }
    const index = parseOrRefuse(indexBytes, req.indexMediaType, 'index');
    if (index.kind !== 'index' || !index.manifests.some((d) => d.digest === manifestDigest)) {
      throw mismatch(
        'the image manifest is not listed in the pinned index',
        'image.manifestDigest',
        pinned,
        { manifest: manifestDigest },
      );
    }
  } else if (manifestDigest !== pinned) {
    throw mismatch('the image manifest is not the pinned one', 'image.manifestDigest', pinned, {
      manifest: manifestDigest,
    });
  }
  const manifest = parseOrRefuse(manifestBytes, req.manifestMediaType, 'manifest');
  if (manifest.kind !== 'manifest') {
    throw mismatch('an image manifest was expected', 'image', 'an image manifest', 'an index');
  }
  if (image?.configDigest !== undefined && manifest.config.digest !== image.configDigest) {
    throw mismatch(
      'the image config is not the pinned one',
      'image.configDigest',
      image.configDigest,
      manifest.config.digest,
    );
  }
  let result;
  try {
    result = await releaseLayerKeys(
      wrappedLayerKeys(manifest.layers),
      [key.privateKey],
      manifest.layers.map((l) => l.digest),
    );
  } catch (cause) {
    throw coordinatorError(
      'COORDINATOR_IMAGE_KEY_UNAVAILABLE',
      'a wrapped layer key of this image cannot be used',
      { cause, details: { rule: 'image.layers' } },
    );
  }
  const { released, notWrapped } = result;
  // An image encrypted to a user's key (delivered as a secret file) has no layer wrapped to the
  // coordinator: its agent gets no layer keys, not a refusal.
  if (Object.keys(released).length === 0) return undefined;
  if (notWrapped.length > 0) {
    // Some layers for the coordinator, some not: a conversion went wrong; run nothing half-keyed.
    throw coordinatorError(
      'COORDINATOR_IMAGE_KEY_UNAVAILABLE',
      'some encrypted layers of this image are not wrapped to the coordinator image key',
      {
        details: {
          rule: 'image.layers',
          expected: 'enc.keys.provider.cloister',
          actual: notWrapped,
        },
      },
    );
  }
  return released;
}

function parseOrRefuse(
  bytes: Uint8Array,
  mediaType: string | undefined,
  what: string,
): ReturnType<typeof parseManifestOrIndex> {
  try {
    return parseManifestOrIndex(bytes, mediaType);
  } catch (cause) {
    throw coordinatorError('COORDINATOR_IMAGE_MISMATCH', `the image ${what} does not parse`, {
      cause,
      details: { rule: 'image', expected: `an OCI or Docker image ${what}`, actual: 'malformed' },
    });
  }
}
