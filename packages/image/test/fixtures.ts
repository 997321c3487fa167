/** Synthetic OCI layouts for tests that must not depend on external tools. */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

export interface Entry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
}

/** Builds an (uncompressed) tar from entries. */
export async function makeTar(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) {
    const type = e.type ?? (e.content !== undefined ? 'file' : 'directory');
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      mtime: new Date(0),
      ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
      ...(type === 'character-device' || type === 'block-device'
        ? { devmajor: 1, devminor: 3 }
        : {}),
    };
    if (type === 'file') pack.entry(header, Buffer.from(e.content ?? ''));
    else pack.entry(header);
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const sha = (b: Buffer | string): string =>
  `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface BuiltLayout {
  dir: string;
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
}

/** Writes an OCI layout with one gzip layer per entry list, tagged `tag`. */
export async function makeLayout(
  dir: string,
  layers: Entry[][],
  opts: { tag?: string; configExtra?: Record<string, unknown> } = {},
): Promise<BuiltLayout> {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const put = (b: Buffer | string): { digest: string; size: number } => {
    const d = sha(b);
    writeFileSync(join(dir, 'blobs', 'sha256', d.slice(7)), b);
    return { digest: d, size: Buffer.byteLength(b) };
  };
  const diffIds: string[] = [];
  const layerDescs = [];
  for (const entries of layers) {
    const t = await makeTar(entries);
    diffIds.push(sha(t));
    layerDescs.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      ...put(gzipSync(t)),
    });
  }
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Entrypoint: ['/bin/sh'], Cmd: ['-c', 'true'], Env: ['PATH=/bin'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    ...(opts.configExtra ?? {}),
  });
  const c = put(config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...c },
    layers: layerDescs,
  });
  const m = put(manifest);
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...m,
          annotations: { 'org.opencontainers.image.ref.name': opts.tag ?? 'latest' },
        },
      ],
    }),
  );
  return { dir, manifestDigest: m.digest, configDigest: c.digest, diffIds };
}
