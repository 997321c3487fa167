/**
 * Guest pull: what the agent does inside the TEE before starting the workload. Fetch the image
 * pinned by the manifest's reference values, authenticate every encrypted layer completely
 * (digest, then HMAC, then diff_id) before a single byte is unpacked, then unpack into a
 * staging rootfs that is renamed into place only when complete.
 *
 * Key release: the layer keys are wrapped to the coordinator (`provider.cloister` or `jwe`).
 * The agent extracts them with `wrappedLayerKeys`, sends them with its attestation; the
 * coordinator checks the layers belong to the workload's image and unwraps them with
 * `releaseLayerKeys`; the agent turns the answer into an unwrapper with `releasedKeyUnwrapper`.
 * Nothing here reads the network or the clock on its own: sources, keys and directories are
 * parameters.
 */
import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDigest, type Digest } from './digest.js';
import { imageError } from './error-codes.js';
import { layerType, type Descriptor, type ImageConfig, type Platform } from './manifest.js';
import {
  decryptLayerToFile,
  layerInput,
  parsePrivateOptions,
  serializePrivateOptions,
  unwrapLayerKey,
  type LayerKeyUnwrapper,
  type PrivateOptions,
  type WrappedLayerKey,
} from './ocicrypt.js';
import {
  resolveImage,
  referenceValues,
  type ProgressEvent,
  type ReferenceValues,
  type ResolvedImage,
} from './convert.js';
import type { ImageSource } from './transport.js';
import { unpackRootfs, type UnpackLimits, type UnpackResult } from './unpack.js';
import { writeStreamAtomically } from './transport.js';

/** The reference values a workload pins (from `cloister image convert --json`). */
export interface PinnedImage {
  /** Digest of the image manifest (or of the index it was selected from). */
  readonly manifestDigest: Digest;
  readonly configDigest?: Digest;
  readonly diffIds?: readonly Digest[];
}

export interface PullOptions {
  readonly source: ImageSource;
  /**
   * `source`'s image as already resolved (e.g. for the key-release request): checked against
   * `expected` like a fresh resolution, and not fetched again.
   */
  readonly resolved?: ResolvedImage;
  readonly expected: PinnedImage;
  /** Turns a layer's wrapped keys into its key (local keys or coordinator key release). */
  readonly unwrap?: LayerKeyUnwrapper;
  /** Directory that must not exist yet; receives the unpacked rootfs. */
  readonly rootfs: string;
  /** Where layers are staged while they are authenticated (in-TEE memory, e.g. a tmpfs). */
  readonly stagingDir: string;
  readonly platform?: Platform;
  /** Refuse images with any unencrypted layer (default false). */
  readonly requireEncrypted?: boolean;
  readonly limits?: Partial<UnpackLimits>;
  readonly chown?: boolean;
  readonly onProgress?: (e: ProgressEvent) => void;
}

export interface PullResult {
  readonly reference: ReferenceValues;
  readonly config: ImageConfig;
  readonly unpacked: UnpackResult;
}

/**
 * Pulls, verifies, decrypts and unpacks an image. Refuses (typed errors, nothing left in
 * `rootfs`): a manifest or config not matching the pinned digests, a layer whose ciphertext,
 * HMAC or diff_id does not verify, a layer without a usable key, unsafe tar entries.
 */
export async function pullImage(o: PullOptions): Promise<PullResult> {
  const resolved = o.resolved ?? (await resolveImage(o.source, o.platform));
  const { top, manifestBlob, manifest, config } = resolved;
  // Stops a registry serving a different (e.g. older, vulnerable) image under the same tag.
  if (o.expected.manifestDigest !== manifestBlob.digest && o.expected.manifestDigest !== top.digest)
    throw imageError('IMAGE_DIGEST_MISMATCH', 'image manifest does not match the pinned digest', {
      details: { expected: o.expected.manifestDigest, actual: manifestBlob.digest },
    });
  if (o.expected.configDigest !== undefined && o.expected.configDigest !== manifest.config.digest)
    throw imageError('IMAGE_DIGEST_MISMATCH', 'image config does not match the pinned digest', {
      details: { expected: o.expected.configDigest, actual: manifest.config.digest },
    });
  if (
    o.expected.diffIds !== undefined &&
    (o.expected.diffIds.length !== config.diffIds.length ||
      o.expected.diffIds.some((d, i) => d !== config.diffIds[i]))
  )
    throw imageError('IMAGE_DIFF_ID_MISMATCH', 'image diff_ids do not match the pinned ones', {
      details: { expected: o.expected.diffIds, actual: config.diffIds },
    });

  const staging = await mkdtemp(join(o.stagingDir, 'pull-'));
  try {
    const staged: { path: string; compression: 'none' | 'gzip' | 'zstd'; diffId: Digest }[] = [];
    for (const [i, layer] of manifest.layers.entries()) {
      const lt = layerType(layer.mediaType);
      const diffId = config.diffIds[i] as Digest;
      const path = join(staging, `layer-${i}`);
      const report = (bytes: number): void =>
        o.onProgress?.({
          phase: 'layer',
          layer: i,
          layers: manifest.layers.length,
          bytes,
          total: layer.size,
        });
      if (lt.encrypted) {
        if (o.unwrap === undefined)
          throw imageError('IMAGE_NO_KEY', `layer ${i} is encrypted and no key source was given`, {
            details: { layer: i },
          });
        const options = await o.unwrap({
          layerDigest: layer.digest,
          annotations: layer.annotations ?? {},
        });
        await decryptLayerToFile({
          ciphertext: await layerInput(o.source, layer),
          descriptor: layer,
          options,
          stagingPath: path,
          diffId,
          // Unpacked, never stored as a blob: its digest would be read by nobody.
          digestPlaintext: false,
        });
      } else {
        if (o.requireEncrypted === true)
          throw imageError('IMAGE_UNSUPPORTED', `layer ${i} is not encrypted`, {
            details: { layer: i },
          });
        await writeStreamAtomically(await o.source.getBlob(layer), path, {
          digest: layer.digest,
          size: layer.size,
        });
      }
      report(layer.size);
      staged.push({ path, compression: lt.compression, diffId });
    }
    const unpacked = await unpackRootfs(
      o.rootfs,
      staged.map((s) => ({
        open: () => createReadStream(s.path, { highWaterMark: 1024 * 1024 }),
        compression: s.compression,
        diffId: s.diffId,
      })),
      {
        ...(o.limits === undefined ? {} : { limits: o.limits }),
        ...(o.chown === undefined ? {} : { chown: o.chown }),
      },
    );
    o.onProgress?.({ phase: 'done' });
    return { reference: referenceValues(manifestBlob, manifest, config), config, unpacked };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** The wrapped keys of every encrypted layer of a verified manifest (sent for key release). */
export function wrappedLayerKeys(layers: readonly Descriptor[]): WrappedLayerKey[] {
  return layers
    .filter((l) => layerType(l.mediaType).encrypted)
    .map((l) => ({ layerDigest: l.digest, annotations: l.annotations ?? {} }));
}

/** What `releaseLayerKeys` gives back. */
export interface ReleasedLayerKeys {
  /** base64 PrivateOptions by layer digest, to be sent back encrypted to the agent key. */
  readonly released: Record<string, string>;
  /** Layers with no wrapped key any of the given keys opens (e.g. encrypted to a user's key). */
  readonly notWrapped: string[];
}

/**
 * Coordinator side of key release: unwraps the layer keys with the coordinator's private
 * key(s), only for layers listed in `allowedLayers` (the layers of the image the workload pins),
 * so an attested agent of workload A cannot obtain the keys of workload B's image. A layer
 * outside `allowedLayers`, or a wrapped key that is malformed, refuses the whole request; a
 * layer simply not wrapped to these keys is listed in `notWrapped` for the caller to decide.
 */
export async function releaseLayerKeys(
  requests: readonly WrappedLayerKey[],
  keys: readonly KeyObject[],
  allowedLayers: readonly string[],
): Promise<ReleasedLayerKeys> {
  const allowed = new Set(allowedLayers);
  const released: Record<string, string> = {};
  const notWrapped: string[] = [];
  for (const r of requests) {
    const digest = parseDigest(r.layerDigest, 'layerDigest');
    if (!allowed.has(digest))
      throw imageError('IMAGE_NO_KEY', `layer ${digest} is not part of this workload's image`, {
        details: { layer: digest },
      });
    let opts: PrivateOptions;
    try {
      opts = await unwrapLayerKey(r.annotations, keys);
    } catch (e) {
      if ((e as { code?: string }).code !== 'IMAGE_NO_KEY') throw e;
      notWrapped.push(digest);
      continue;
    }
    released[digest] = Buffer.from(serializePrivateOptions(opts)).toString('base64');
  }
  return { released, notWrapped };
}

/** Agent side of key release: an unwrapper over the keys the coordinator released. */
export function releasedKeyUnwrapper(
  released: Readonly<Record<string, string>>,
): LayerKeyUnwrapper {
  const lookup = (layer: WrappedLayerKey): PrivateOptions => {
    const b64 = released[layer.layerDigest];
    if (b64 === undefined)
      throw imageError('IMAGE_NO_KEY', `no key was released for layer ${layer.layerDigest}`, {
        details: { layer: layer.layerDigest },
      });
    return parsePrivateOptions(new Uint8Array(Buffer.from(b64, 'base64')));
  };
  return (layer) => new Promise((resolve) => resolve(lookup(layer)));
}
