/** Error codes of `@cloister/image`: image formats, registries, layer encryption, unpacking, runtime. */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const IMAGE_ERRORS = defineErrorCodes({
  IMAGE_BAD_REFERENCE: {
    kind: 'usage',
    summary:
      'An image reference is not `oci:DIR[:TAG]`, `docker-archive:FILE` or `docker://HOST/REPO[:TAG|@DIGEST]`.',
  },
  IMAGE_MALFORMED: {
    kind: 'malformed',
    summary:
      'An image manifest, index, config, layout or archive is not valid JSON of the expected shape.',
  },
  IMAGE_TOO_LARGE: {
    kind: 'limit',
    summary:
      'A manifest, config or metadata file exceeds its size limit (4 MiB by default); the image is refused.',
  },
  IMAGE_DIGEST_MISMATCH: {
    kind: 'rejected',
    summary:
      'Content does not hash to the digest (or size) that names it: the image was corrupted or tampered with.',
  },
  IMAGE_UNSUPPORTED: {
    kind: 'unsupported',
    summary:
      'A media type, digest algorithm, compression or manifest version this build does not handle.',
  },
  IMAGE_NOT_FOUND: {
    kind: 'not-found',
    summary:
      'The image, tag, platform or blob does not exist in the source; check the reference and platform.',
  },
  IMAGE_DESTINATION_EXISTS: {
    kind: 'conflict',
    summary: 'The destination file or directory already exists; remove it or choose another one.',
  },
  IMAGE_REGISTRY_UNAVAILABLE: {
    kind: 'unavailable',
    summary: 'The registry could not be reached or answered with an unexpected status.',
  },
  IMAGE_REGISTRY_UNAUTHORIZED: {
    kind: 'unauthorized',
    summary: 'The registry refused the credentials or the token server gave no usable token.',
  },
  IMAGE_REGISTRY_INSECURE: {
    kind: 'usage',
    summary:
      'Plain HTTP was requested for a registry that is not on loopback; use HTTPS or allow it explicitly.',
  },
  IMAGE_REGISTRY_PROTOCOL: {
    kind: 'malformed',
    summary:
      'The registry answered something the distribution spec does not allow (bad header, redirect loop, missing Location).',
  },
  IMAGE_ENC_MALFORMED: {
    kind: 'malformed',
    summary:
      'Encryption metadata (pubopts, wrapped keys, private options) of a layer is missing or not in ocicrypt format.',
  },
  IMAGE_ENC_HMAC_MISMATCH: {
    kind: 'rejected',
    summary:
      'The HMAC over an encrypted layer does not match its pubopts: the ciphertext or its metadata was tampered with.',
  },
  IMAGE_DIFF_ID_MISMATCH: {
    kind: 'rejected',
    summary:
      "A layer's uncompressed content does not hash to the config's rootfs.diff_ids entry (swapped or forged layer).",
  },
  IMAGE_NO_KEY: {
    kind: 'rejected',
    summary:
      'None of the given private keys can unwrap the layer key; give the key the image was encrypted to.',
  },
  IMAGE_KEY_INVALID: {
    kind: 'usage',
    summary:
      'A key file is not a PEM/DER/JWK RSA or EC (P-256/384/521) key of the expected kind (public or private).',
  },
  IMAGE_ALREADY_ENCRYPTED: {
    kind: 'usage',
    summary:
      'The source image already has encrypted layers; decrypt it first or copy it without recipients.',
  },
  IMAGE_UNPACK_PATH_TRAVERSAL: {
    kind: 'rejected',
    summary:
      'A layer entry names a path outside the root (`..`, absolute after cleaning, NUL); the layer is refused.',
  },
  IMAGE_UNPACK_LINK_ESCAPE: {
    kind: 'rejected',
    summary:
      'A hard link points outside the root or at a missing or non-regular file; the layer is refused.',
  },
  IMAGE_UNPACK_SPECIAL_FILE: {
    kind: 'rejected',
    summary:
      'A layer contains a device node or FIFO, which images must not create inside a confidential rootfs.',
  },
  IMAGE_UNPACK_LIMIT: {
    kind: 'limit',
    summary: 'A layer exceeds the unpack limits (total bytes, entry count, path length, depth).',
  },
  IMAGE_UNPACK_MALFORMED: {
    kind: 'malformed',
    summary: 'A layer is not a valid (optionally gzip-compressed) tar stream.',
  },
  IMAGE_KEYPROVIDER_PROTOCOL: {
    kind: 'malformed',
    summary:
      'The ocicrypt keyprovider request on stdin is not valid JSON of the keywrap/keyunwrap protocol.',
  },
  IMAGE_RUNTIME_UNAVAILABLE: {
    kind: 'unavailable',
    summary: 'The OCI runtime (runc) is not installed or cannot create containers here.',
  },
  IMAGE_RUNTIME_CONFIG: {
    kind: 'malformed',
    summary:
      'The image config or workload settings cannot be turned into a runtime spec (bad user, env, path).',
  },
});

/** Throw helper: `throw imageError('IMAGE_NOT_FOUND', 'no tag x', { details: { tag } })`. */
export const imageError = errorFactory(IMAGE_ERRORS);
