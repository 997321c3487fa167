/**
 * OCI image manifests, indexes and configs (OCI image-spec v1.1: `manifest.md`,
 * `image-index.md`, `config.md`, `descriptor.md`) and their Docker v2 schema 2 equivalents.
 * Parsing validates shape and keeps the raw object so rewriting (e.g. encrypting layers)
 * preserves fields we do not interpret.
 */
import { imageError } from './error-codes.js';
import { parseDigest, type Digest } from './digest.js';
import {
  MAX_METADATA_BYTES,
  arr,
  obj,
  optStr,
  parseStrictJson,
  refuseGoFieldTwins,
  str,
  strRecord,
} from './json.js';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerForeign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** The `Accept` header a client sends for manifests. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.dockerManifest,
].join(', ');

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** The platform chosen from an index when none is given. */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: Platform;
}

export interface ImageManifest {
  readonly kind: 'manifest';
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  /** The parsed JSON object, unknown fields included. */
  readonly raw: Record<string, unknown>;
}

export interface ImageIndex {
  readonly kind: 'index';
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
  readonly raw: Record<string, unknown>;
}

/** The parts of an image config that matter to running and verifying it. */
export interface ImageConfig {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
  readonly diffIds: readonly Digest[];
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  readonly env?: readonly string[];
  readonly workingDir?: string;
  readonly user?: string;
  readonly raw: Record<string, unknown>;
}

/** Compression and encryption of a layer media type. */
export interface LayerType {
  readonly compression: 'none' | 'gzip' | 'zstd';
  readonly encrypted: boolean;
  /** The media type without `+encrypted`. */
  readonly plain: string;
}

const LAYER_TYPES: Record<string, LayerType['compression']> = {
  [MEDIA_TYPES.ociLayer]: 'none',
  [MEDIA_TYPES.ociLayerGzip]: 'gzip',
  [MEDIA_TYPES.ociLayerZstd]: 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  [MEDIA_TYPES.dockerLayerGzip]: 'gzip',
  [MEDIA_TYPES.dockerLayerForeign]: 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
};

/** Classifies a layer media type; unknown types are unsupported rather than guessed. */
export function layerType(mediaType: string): LayerType {
  const encrypted = mediaType.endsWith('+encrypted');
  const plain = encrypted ? mediaType.slice(0, -'+encrypted'.length) : mediaType;
  const compression = LAYER_TYPES[plain];
  if (compression === undefined)
    throw imageError('IMAGE_UNSUPPORTED', `layer media type ${mediaType} is not supported`, {
      details: { mediaType },
    });
  return { compression, encrypted, plain };
}

/** Docker v2s2 → OCI media type for a layer (ocicrypt only encrypts OCI manifests). */
export function ociLayerMediaType(mediaType: string): string {
  const { compression, encrypted } = layerType(mediaType);
  const base =
    compression === 'gzip'
      ? MEDIA_TYPES.ociLayerGzip
      : compression === 'zstd'
        ? MEDIA_TYPES.ociLayerZstd
        : MEDIA_TYPES.ociLayer;
  if (mediaType.includes('nondistributable') || mediaType === MEDIA_TYPES.dockerLayerForeign)
    return mediaType;
  return encrypted ? `${base}+encrypted` : base;
}

/**
 * The struct fields of each document that Cloister reads below, or that Go tools act on
 * (a descriptor's `urls`, a manifest's `subject`), for json.ts `refuseGoFieldTwins`:
 * image-spec's Descriptor, Platform, Manifest and Index (Docker's schema 2 uses the same
 * names), and the parts of the image config Cloister reads.
 */
const DESCRIPTOR_FIELDS = ['mediaType', 'digest', 'size', 'annotations', 'platform', 'urls'];
const PLATFORM_FIELDS = ['os', 'architecture', 'variant'];
const MANIFEST_FIELDS = [
  'schemaVersion',
  'mediaType',
  'config',
  'layers',
  'manifests',
  'annotations',
  'subject',
];
const CONFIG_FIELDS = ['os', 'architecture', 'variant', 'config', 'rootfs'];
const ROOTFS_FIELDS = ['type', 'diff_ids'];
const RUN_CONFIG_FIELDS = ['Entrypoint', 'Cmd', 'Env', 'WorkingDir', 'User'];

function safeSize(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw imageError('IMAGE_MALFORMED', `${field} must be a non-negative integer`, {
      details: { field },
    });
  return v;
}

/** Validates one descriptor object. */
export function parseDescriptor(v: unknown, what: string): Descriptor {
  const o = obj(v, what);
  refuseGoFieldTwins(o, DESCRIPTOR_FIELDS, what);
  const d: {
    mediaType: string;
    digest: Digest;
    size: number;
    annotations?: Record<string, string>;
    platform?: Platform;
  } = {
    mediaType: str(o, 'mediaType', what),
    digest: parseDigest(o.digest, `${what}.digest`),
    size: safeSize(o.size, `${what}.size`),
  };
  if (o.annotations !== undefined) d.annotations = strRecord(o.annotations, `${what}.annotations`);
  if (o.platform !== undefined) {
    const p = obj(o.platform, `${what}.platform`);
    refuseGoFieldTwins(p, PLATFORM_FIELDS, `${what}.platform`);
    const variant = optStr(p, 'variant', `${what}.platform`);
    d.platform = {
      os: str(p, 'os', `${what}.platform`),
      architecture: str(p, 'architecture', `${what}.platform`),
      ...(variant === undefined ? {} : { variant }),
    };
  }
  return d;
}

/**
 * Parses a manifest or an index. `declared` is the media type the transport announced
 * (Content-Type, descriptor); it must agree with the document's own `mediaType` when both
 * exist, so a registry cannot make a client read an index as a manifest.
 */
export function parseManifestOrIndex(
  bytes: Uint8Array,
  declared?: string,
  maxBytes: number = MAX_METADATA_BYTES,
): ImageManifest | ImageIndex {
  const raw = parseStrictJson(bytes, 'manifest', maxBytes);
  refuseGoFieldTwins(raw, MANIFEST_FIELDS, 'manifest');
  if (raw.schemaVersion !== 2)
    throw imageError('IMAGE_UNSUPPORTED', 'only schemaVersion 2 manifests are supported', {
      details: { schemaVersion: String(raw.schemaVersion) },
    });
  const own = optStr(raw, 'mediaType', 'manifest');
  const plainDeclared = declared?.split(';')[0]?.trim();
  if (
    own !== undefined &&
    plainDeclared !== undefined &&
    plainDeclared !== '' &&
    plainDeclared !== 'application/json' &&
    plainDeclared !== 'application/octet-stream' &&
    own !== plainDeclared
  )
    throw imageError('IMAGE_MALFORMED', 'manifest mediaType disagrees with its descriptor', {
      details: { declared: plainDeclared, mediaType: own },
    });
  const mediaType =
    own ??
    (plainDeclared && plainDeclared !== 'application/json' ? plainDeclared : undefined) ??
    (raw.manifests !== undefined ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest);
  if (mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerList) {
    if (raw.config !== undefined || raw.layers !== undefined)
      throw imageError('IMAGE_MALFORMED', 'an index must not have config or layers', {});
    const manifests = arr(raw.manifests, 'manifest.manifests').map((m, i) =>
      parseDescriptor(m, `manifest.manifests[${i}]`),
    );
    return { kind: 'index', mediaType, manifests, raw };
  }
  if (mediaType === MEDIA_TYPES.ociManifest || mediaType === MEDIA_TYPES.dockerManifest) {
    if (raw.manifests !== undefined)
      throw imageError('IMAGE_MALFORMED', 'a manifest must not have manifests', {});
    const config = parseDescriptor(raw.config, 'manifest.config');
    const layers = arr(raw.layers, 'manifest.layers').map((l, i) =>
      parseDescriptor(l, `manifest.layers[${i}]`),
    );
    return { kind: 'manifest', mediaType, config, layers, raw };
  }
  throw imageError('IMAGE_UNSUPPORTED', `manifest media type ${mediaType} is not supported`, {
    details: { mediaType },
  });
}

/** Picks the manifest for `platform` from an index (exact os/architecture, variant if given). */
export function selectPlatform(
  index: ImageIndex,
  platform: Platform = DEFAULT_PLATFORM,
): Descriptor {
  const candidates = index.manifests.filter(
    (m) =>
      (m.mediaType === MEDIA_TYPES.ociManifest || m.mediaType === MEDIA_TYPES.dockerManifest) &&
      m.platform?.os === platform.os &&
      m.platform.architecture === platform.architecture &&
      (platform.variant === undefined || m.platform.variant === platform.variant),
  );
  const chosen = candidates[0];
  if (chosen === undefined) {
    // An index without platforms (e.g. one image in a layout) is taken when it has one manifest.
    const only = index.manifests.filter((m) => m.platform === undefined);
    if (only.length === 1 && only[0] !== undefined && index.manifests.length === 1) return only[0];
    throw imageError(
      'IMAGE_NOT_FOUND',
      `no manifest for ${platform.os}/${platform.architecture} in the index`,
      {
        details: {
          platform,
          available: index.manifests.map((m) =>
            m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'unknown',
          ),
        },
      },
    );
  }
  return chosen;
}

function optStrArray(o: Record<string, unknown>, key: string, what: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const a = arr(v, `${what}.${key}`);
  return a.map((x, i) => {
    if (typeof x !== 'string')
      throw imageError('IMAGE_MALFORMED', `${what}.${key}[${i}] must be a string`, {
        details: { field: `${what}.${key}[${i}]` },
      });
    return x;
  });
}

/** Parses an image config (OCI config.md; Docker's container image v1 JSON is the same shape). */
export function parseConfig(bytes: Uint8Array, maxBytes: number = MAX_METADATA_BYTES): ImageConfig {
  const raw = parseStrictJson(bytes, 'config', maxBytes);
  refuseGoFieldTwins(raw, CONFIG_FIELDS, 'config');
  const rootfs = obj(raw.rootfs, 'config.rootfs');
  refuseGoFieldTwins(rootfs, ROOTFS_FIELDS, 'config.rootfs');
  if (rootfs.type !== 'layers')
    throw imageError('IMAGE_MALFORMED', 'config.rootfs.type must be "layers"', {
      details: { field: 'config.rootfs.type' },
    });
  const diffIds = arr(rootfs.diff_ids, 'config.rootfs.diff_ids').map((d, i) =>
    parseDigest(d, `config.rootfs.diff_ids[${i}]`),
  );
  const c = raw.config === undefined || raw.config === null ? {} : obj(raw.config, 'config.config');
  refuseGoFieldTwins(c, RUN_CONFIG_FIELDS, 'config.config');
  const entrypoint = optStrArray(c, 'Entrypoint', 'config.config');
  const cmd = optStrArray(c, 'Cmd', 'config.config');
  const env = optStrArray(c, 'Env', 'config.config');
  const workingDir = optStr(c, 'WorkingDir', 'config.config');
  const user = optStr(c, 'User', 'config.config');
  const variant = optStr(raw, 'variant', 'config');
  return {
    os: str(raw, 'os', 'config'),
    architecture: str(raw, 'architecture', 'config'),
    ...(variant === undefined ? {} : { variant }),
    diffIds,
    ...(entrypoint === undefined ? {} : { entrypoint }),
    ...(cmd === undefined ? {} : { cmd }),
    ...(env === undefined ? {} : { env }),
    ...(workingDir === undefined || workingDir === '' ? {} : { workingDir }),
    ...(user === undefined || user === '' ? {} : { user }),
    raw,
  };
}

/** Serialises a descriptor with OCI's field order (mediaType, digest, size, annotations...). */
export function descriptorJson(d: Descriptor): Record<string, unknown> {
  const out: Record<string, unknown> = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.annotations !== undefined && Object.keys(d.annotations).length > 0) {
    // Sorted like Go's encoding/json does for maps, so output is byte-stable and skopeo-like.
    out.annotations = Object.fromEntries(
      Object.entries(d.annotations).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
  }
  if (d.platform !== undefined) out.platform = d.platform;
  return out;
}
