export { IMAGE_ERRORS, imageError } from './error-codes.js';
export {
  parseDigest,
  sha256Digest,
  digestHex,
  verifyBytes,
  HashingStream,
  VerifyingStream,
} from './digest.js';
export type { Digest } from './digest.js';
export { parseStrictJson, MAX_METADATA_BYTES } from './json.js';
export {
  MEDIA_TYPES,
  MANIFEST_ACCEPT,
  DEFAULT_PLATFORM,
  layerType,
  ociLayerMediaType,
  parseDescriptor,
  parseManifestOrIndex,
  parseConfig,
  selectPlatform,
  descriptorJson,
} from './manifest.js';
export type {
  Descriptor,
  ImageConfig,
  ImageIndex,
  ImageManifest,
  LayerType,
  Platform,
} from './manifest.js';
export type { ImageSource, ImageDestination, ManifestBlob, PutBlobResult } from './transport.js';
export {
  OciLayoutSource,
  OciLayoutDestination,
  readLayoutIndex,
  findTagged,
  REF_NAME_ANNOTATION,
} from './layout.js';
export { DockerArchiveSource, DockerArchiveDestination } from './docker-archive.js';
export {
  RegistryClient,
  RegistrySource,
  RegistryDestination,
  parseRegistryReference,
  parseWwwAuthenticate,
  isLoopbackHost,
} from './registry.js';
export type { RegistryReference, RegistryClientOptions, RegistryCredentials } from './registry.js';
export { parseImageReference, openSource, openDestination, pinnedReference } from './reference.js';
export type { ImageReference } from './reference.js';
export { IMAGE_KEY_FILE, loadPublicKey, loadPrivateKey, KEY_WRAP_ALGS } from './keys.js';
export type { KeyWrapAlg, WrapRecipient } from './keys.js';
export {
  ENC_ANNOTATION_PREFIX,
  PUBOPTS_ANNOTATION,
  JWE_KEYS_ANNOTATION,
  PROVIDER_KEYS_ANNOTATION,
  CLOISTER_PROVIDER,
  CIPHER_AES_CTR_HMAC,
  MAX_UNCOMPRESSED_LAYER,
  newPrivateOptions,
  serializePrivateOptions,
  parsePrivateOptions,
  serializePublicOptions,
  parsePublicOptions,
  wrapJwe,
  unwrapJwe,
  wrappedKeyItems,
  unwrapLayerKey,
  keyUnwrapper,
  LayerEncryptStream,
  DiffIdStream,
  decryptLayerToFile,
  decryptedDescriptor,
  layerInput,
} from './ocicrypt.js';
export type {
  LayerInput,
  LocalBlob,
  SourceBlob,
  PrivateOptions,
  EncryptedLayer,
  DecryptedLayer,
  WrappedLayerKey,
  LayerKeyUnwrapper,
} from './ocicrypt.js';
export { OffloadedHash } from './offload.js';
export { copyImage, resolveImage, referenceValues } from './convert.js';
export type { ResolvedImage } from './convert.js';
export type { CopyOptions, ProgressEvent, ReferenceValues } from './convert.js';
export { pullImage, wrappedLayerKeys, releaseLayerKeys, releasedKeyUnwrapper } from './pull.js';
export type { PinnedImage, PullOptions, PullResult, ReleasedLayerKeys } from './pull.js';
export { unpackRootfs, resolveInRoot, cleanEntryPath, DEFAULT_UNPACK_LIMITS } from './unpack.js';
export type { UnpackLimits, UnpackOptions, UnpackResult, LayerToUnpack } from './unpack.js';
export { handleKeyproviderRequest, runKeyprovider, KEYPROVIDER_ENV } from './keyprovider.js';
export type { KeyproviderContext } from './keyprovider.js';
export {
  buildRuntimeSpec,
  writeBundle,
  runImage,
  resolveUser,
  DEFAULT_CAPABILITIES,
  DENIED_SYSCALLS,
  defaultSeccomp,
  MASKED_PATHS,
  READONLY_PATHS,
} from './runtime-spec.js';
export type {
  RuntimeSpec,
  RuntimeSpecOptions,
  RuntimeFile,
  RunImageOptions,
} from './runtime-spec.js';
