/**
 * Image references on the command line, in skopeo's transport syntax (containers/image
 * `docs/containers-transports.5.md`): `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`,
 * `docker://HOST/REPO[:TAG|@DIGEST]`.
 */
import { DockerArchiveDestination, DockerArchiveSource } from './docker-archive.js';
import { imageError } from './error-codes.js';
import { OciLayoutDestination, OciLayoutSource } from './layout.js';
import {
  RegistryDestination,
  RegistrySource,
  parseRegistryReference,
  type RegistryClientOptions,
  type RegistryReference,
} from './registry.js';
import type { ImageDestination, ImageSource } from './transport.js';

export type ImageReference =
  | { readonly transport: 'oci'; readonly dir: string; readonly tag?: string }
  | { readonly transport: 'docker-archive'; readonly file: string; readonly ref?: string }
  | { readonly transport: 'docker'; readonly ref: RegistryReference };

/** Splits `PATH[:SUFFIX]` where the suffix starts at the first `:` after the last `/`. */
function splitPathSuffix(s: string): [string, string | undefined] {
  const slash = s.lastIndexOf('/');
  const colon = s.indexOf(':', slash + 1);
  return colon < 0 ? [s, undefined] : [s.slice(0, colon), s.slice(colon + 1)];
}

/** Parses a transport reference; IMAGE_BAD_REFERENCE on anything else. */
export function parseImageReference(s: string): ImageReference {
  if (s.startsWith('oci:')) {
    const [dir, tag] = splitPathSuffix(s.slice(4));
    if (dir === '' || (tag !== undefined && !/^[\w][\w.-]{0,127}$/.test(tag)))
      throw imageError('IMAGE_BAD_REFERENCE', `bad OCI layout reference ${s}`, {
        details: { ref: s },
      });
    return { transport: 'oci', dir, ...(tag === undefined ? {} : { tag }) };
  }
  if (s.startsWith('docker-archive:')) {
    const [file, ref] = splitPathSuffix(s.slice('docker-archive:'.length));
    if (file === '')
      throw imageError('IMAGE_BAD_REFERENCE', `bad docker-archive reference ${s}`, {
        details: { ref: s },
      });
    return { transport: 'docker-archive', file, ...(ref === undefined ? {} : { ref }) };
  }
  if (s.startsWith('docker://'))
    return { transport: 'docker', ref: parseRegistryReference(s.slice('docker://'.length)) };
  throw imageError(
    'IMAGE_BAD_REFERENCE',
    `${s}: expected oci:DIR[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG]`,
    { details: { ref: s } },
  );
}

/** Opens a reference as a source. */
export function openSource(ref: ImageReference, registry: RegistryClientOptions = {}): ImageSource {
  switch (ref.transport) {
    case 'oci':
      return new OciLayoutSource(ref.dir, ref.tag);
    case 'docker-archive':
      return new DockerArchiveSource(ref.file, ref.ref);
    case 'docker':
      return new RegistrySource(ref.ref, registry);
  }
}

/** Opens a reference as a destination. */
export function openDestination(
  ref: ImageReference,
  registry: RegistryClientOptions = {},
): ImageDestination {
  switch (ref.transport) {
    case 'oci':
      return new OciLayoutDestination(ref.dir, ref.tag);
    case 'docker-archive':
      return new DockerArchiveDestination(ref.file, ref.ref);
    case 'docker':
      // The pushed manifest's digest is what it is: a destination digest could only be ignored.
      if (ref.ref.digest !== undefined)
        throw imageError('IMAGE_BAD_REFERENCE', 'a destination takes a tag, not a digest', {
          details: { digest: ref.ref.digest },
        });
      return new RegistryDestination(ref.ref, registry);
  }
}

/**
 * The reference string for a manifest's `image.ref`, in a form `parseImageReference` reads back:
 * a registry reference pinned by digest; a local layout or archive (whose syntax has no digest
 * form) as given, its content pinned by the manifest's `manifestDigest` beside it.
 */
export function pinnedReference(ref: ImageReference, digest: string): string {
  switch (ref.transport) {
    case 'oci':
      return `oci:${ref.dir}${ref.tag === undefined ? '' : `:${ref.tag}`}`;
    case 'docker-archive':
      return `docker-archive:${ref.file}${ref.ref === undefined ? '' : `:${ref.ref}`}`;
    case 'docker':
      return `docker://${ref.ref.registry}/${ref.ref.repository}@${digest}`;
  }
}
