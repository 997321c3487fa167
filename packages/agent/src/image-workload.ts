/**
 * Image workloads (docs/images.md "Key release", docs/agent.md "Image workloads"): after
 * activation, the agent pulls the workload's encrypted OCI image pinned by digest, decrypts it
 * with the image key the coordinator delivered as a file (only to this workload, only after its
 * evidence was verified), unpacks it into a private rootfs in memory, and runs it under runc
 * (OCI runtime spec v1.0.2) with the manifest's args and env and the delivered files bind-mounted
 * read-only. The container's exit status becomes the agent's.
 *
 * What the sim TEE measures for an image workload: the runc executable the agent starts and the
 * arguments `image DIGEST` (`imageMeasuredArgs`), so the measured launch names the image content
 * (not its location, which may be a mirror), and `cloister sim measure runc image DIGEST`
 * computes what the package pins. An unpinned development image is measured as `image REF`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { toBase64Url } from '@cloister/protocol';
import type { ActivationBundle, ImageKeyRequest, Manifest } from '@cloister/protocol';
import {
  buildRuntimeSpec,
  IMAGE_KEY_FILE,
  imageError,
  keyUnwrapper,
  loadPrivateKey,
  openSource,
  parseDigest,
  parseImageReference,
  pullImage,
  releasedKeyUnwrapper,
  resolveImage,
  writeBundle,
} from '@cloister/image';
import type { Digest, ImageSource, PinnedImage, ResolvedImage, RuntimeFile } from '@cloister/image';
import { agentError } from './error-codes.js';
import { DEFAULT_SHM, expandFilesToken, mapPath } from './files.js';
import { FORWARDED_SIGNALS, exitStatus, programStdio } from './launch.js';
import type { ProgramStdout } from './launch.js';
import { hostEnv } from './env.js';

/** The mesh identity directory, bind-mounted as a directory so renewals stay visible. */
const MESH_DIR = '/run/cloister/mesh';

export interface ImageWorkloadOptions {
  /** Where to pull from: `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker://HOST/REPO[:TAG]`. */
  readonly source: string;
  /** The manifest digest on the agent's (measured) command line. */
  readonly manifestDigest?: string;
  /** Manifest path of the delivered image private key (default IMAGE_KEY_FILE). */
  readonly keyFile?: string;
  /** Development only: run an image no digest pins. */
  readonly allowUnpinned?: boolean;
  /** Resolved runc executable: the file the sim TEE measures and the agent runs. */
  readonly runc: string;
  /** Base of the private pull/rootfs directory (default /dev/shm: TEE memory). */
  readonly workDir?: string;
  /** Tests: receive the container's output instead of inheriting stdio. */
  readonly onStdout?: (b: Buffer) => void;
  readonly onStderr?: (b: Buffer) => void;
}

/** The arguments the sim TEE measures (with the runc executable) for an image workload. */
export function imageMeasuredArgs(source: string, manifestDigest?: string): string[] {
  return manifestDigest === undefined ? ['image', source] : ['image', manifestDigest];
}

/**
 * The digests the pull must match: the measured command line's and the manifest's must agree.
 * Stops a host that starts the agent on one image while the manifest names another (or none).
 * The manifest's `ref` is a location only (a mirror may serve the same bytes): not compared.
 */
export function resolveImagePin(
  manifestImage: Manifest['workloads'][string]['image'],
  o: Pick<ImageWorkloadOptions, 'manifestDigest' | 'allowUnpinned'>,
): PinnedImage | undefined {
  const measured =
    o.manifestDigest === undefined ? undefined : parseDigest(o.manifestDigest, 'manifestDigest');
  const pinned = manifestImage?.manifestDigest as Digest | undefined;
  if (measured !== undefined && pinned !== undefined && measured !== pinned)
    throw imageError(
      'IMAGE_DIGEST_MISMATCH',
      'the image digest on the command line differs from the manifest',
      { details: { commandLine: measured, manifest: pinned } },
    );
  const manifestDigest = pinned ?? measured;
  if (manifestDigest === undefined) {
    // An unpinned image lets whoever controls the registry choose the code that runs.
    if (o.allowUnpinned === true) return undefined;
    throw agentError(
      'AGENT_USAGE',
      'the image is not pinned: give --image-digest or set image.manifestDigest in the manifest',
    );
  }
  return {
    manifestDigest,
    ...(manifestImage?.configDigest === undefined
      ? {}
      : { configDigest: manifestImage.configDigest as Digest }),
    ...(manifestImage?.diffIds === undefined ? {} : { diffIds: manifestImage.diffIds as Digest[] }),
  };
}

export interface RunImageWorkloadOptions {
  readonly image: ImageWorkloadOptions;
  /** `image.source`, opened and resolved before activation (`openWorkloadImage`). */
  readonly workloadImage: WorkloadImage;
  readonly manifestImage: Manifest['workloads'][string]['image'];
  readonly bundle: ActivationBundle;
  /** The in-memory files root the bundle's files were written to. */
  readonly filesRoot: string;
  readonly log?: (msg: string, fields?: Record<string, unknown>) => void;
  readonly onLaunched?: (info: { pid: number; privateDir: string }) => void;
  /** Where the container's standard output goes (default: inherited). */
  readonly stdout?: ProgramStdout;
}

async function loadImageKey(root: string, keyFile: string) {
  let bytes: Buffer;
  try {
    bytes = await readFile(mapPath(root, keyFile));
  } catch (cause) {
    throw imageError(
      'IMAGE_NO_KEY',
      `the image key ${keyFile} was not delivered: reference the key secret in a file of this workload`,
      { cause, details: { file: keyFile } },
    );
  }
  return loadPrivateKey(new Uint8Array(bytes), keyFile);
}

/**
 * The workload's image, resolved once before activation: what the key-release request names is
 * exactly what is pulled (no second fetch that a registry could answer differently).
 * `runImageWorkload` closes it once the image is pulled; closing again is harmless.
 */
export interface WorkloadImage {
  readonly source: ImageSource;
  readonly resolved: ResolvedImage;
  /**
   * What the agent sends with its activation for key release: the image manifest (and index)
   * as bytes. The coordinator checks them against the workload's pin; the pull checks the same
   * pin again before a layer is fetched.
   */
  readonly keyRequest: ImageKeyRequest;
  close(): Promise<void>;
}

/** Opens the image source named on the agent's command line and resolves its image. */
export async function openWorkloadImage(sourceRef: string): Promise<WorkloadImage> {
  const source = openSource(parseImageReference(sourceRef));
  try {
    const resolved = await resolveImage(source);
    const { top, manifestBlob } = resolved;
    return {
      source,
      resolved,
      keyRequest: {
        manifest: toBase64Url(manifestBlob.bytes),
        manifestMediaType: manifestBlob.mediaType,
        ...(top.digest === manifestBlob.digest
          ? {}
          : { index: toBase64Url(top.bytes), indexMediaType: top.mediaType }),
      },
      // Closed after the pull and again when the agent ends: closing twice is harmless.
      close: () => source.close().catch(() => undefined),
    };
  } catch (e) {
    await source.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Layer keys: those the coordinator released in the bundle (images converted with
 * `--coordinator`), else the image private key delivered as a file (images encrypted to a
 * user's key, the key uploaded as a secret).
 */
async function layerKeySource(o: RunImageWorkloadOptions, keyFile: string) {
  if (o.bundle.layerKeys !== undefined) return releasedKeyUnwrapper(o.bundle.layerKeys);
  return keyUnwrapper([await loadImageKey(o.filesRoot, keyFile)]);
}

/** Pulls, decrypts, unpacks and runs the image; resolves with the container's exit status. */
export async function runImageWorkload(o: RunImageWorkloadOptions): Promise<number> {
  const log = o.log ?? (() => undefined);
  const expected = resolveImagePin(o.manifestImage, o.image);
  const keyFile = o.image.keyFile ?? IMAGE_KEY_FILE;
  // Compared as the file it names: `--image-key` comes from the host, and a spelling such as
  // `/run//cloister/image-key.pem` reads the same key but would slip past a string comparison.
  const keyPath = mapPath(o.filesRoot, keyFile);
  const unwrap = await layerKeySource(o, keyFile);
  const { source, resolved } = o.workloadImage;
  const privateDir = await mkdtemp(join(o.image.workDir ?? DEFAULT_SHM, 'cloister-image-'));
  try {
    const staging = join(privateDir, 'staging');
    const bundleDir = join(privateDir, 'bundle');
    await mkdir(staging, { mode: 0o700 });
    await mkdir(bundleDir, { mode: 0o700 });
    const rootfs = join(bundleDir, 'rootfs');
    const pulled = await pullImage({
      source,
      resolved,
      // Unpinned (development): pin what the source served for the key request.
      expected: expected ?? { manifestDigest: resolved.manifestBlob.digest },
      unwrap,
      rootfs,
      stagingDir: staging,
    });
    // Nothing more to fetch: do not hold registry connections while the container runs.
    await o.workloadImage.close();
    log('image unpacked', {
      manifestDigest: pulled.reference.manifestDigest,
      files: pulled.unpacked.entries,
    });
    const files: RuntimeFile[] = Object.keys(o.bundle.files)
      // The image key stays with the agent: the container has no use for it.
      .filter((p) => mapPath(o.filesRoot, p) !== keyPath)
      .map((p) => ({ containerPath: p, hostPath: mapPath(o.filesRoot, p) }));
    files.push({ containerPath: MESH_DIR, hostPath: mapPath(o.filesRoot, MESH_DIR) });
    // Inside the container the files are at their manifest paths: the files token is empty.
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.bundle.env)) env[k] = expandFilesToken(v, '');
    const spec = await buildRuntimeSpec({
      config: pulled.config,
      rootfs,
      ...(o.bundle.args.length > 0
        ? { args: o.bundle.args.map((a) => expandFilesToken(a, '')) }
        : {}),
      env,
      files,
    });
    await writeBundle(bundleDir, spec);
    return await runContainer(o, bundleDir, privateDir);
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
}

/** `runc run` with signals forwarded; `runc delete --force` afterwards, whatever happened. */
async function runContainer(
  o: RunImageWorkloadOptions,
  bundleDir: string,
  privateDir: string,
): Promise<number> {
  const id = `cloister-${randomBytes(6).toString('hex')}`;
  const piped = o.image.onStdout !== undefined || o.image.onStderr !== undefined;
  // runc is the measured program here: the host's loader variables would run code in it.
  const env = hostEnv(process.env);
  try {
    return await new Promise<number>((resolve, reject) => {
      const child = spawn(o.image.runc, ['run', '--bundle', bundleDir, id], {
        stdio: piped ? ['ignore', 'pipe', 'pipe'] : programStdio(o.stdout),
        env,
      });
      child.stdout?.on('data', (b: Buffer) => o.image.onStdout?.(b));
      child.stderr?.on('data', (b: Buffer) => o.image.onStderr?.(b));
      // runc run (no terminal) relays these to the container's init process.
      const handlers = FORWARDED_SIGNALS.map((sig) => {
        const h = () => child.kill(sig);
        process.on(sig, h);
        return [sig, h] as const;
      });
      const detach = () => {
        for (const [sig, h] of handlers) process.off(sig, h);
      };
      child.once('spawn', () => o.onLaunched?.({ pid: child.pid ?? -1, privateDir }));
      child.once('error', (e) => {
        detach();
        reject(
          agentError('AGENT_SPAWN_FAILED', `cannot start ${o.image.runc}`, {
            cause: e,
            details: { command: o.image.runc },
          }),
        );
      });
      child.once('close', (code, signal) => {
        detach();
        resolve(exitStatus(code, signal));
      });
    });
  } finally {
    await new Promise<void>((resolve) => {
      const d = spawn(o.image.runc, ['delete', '--force', id], { stdio: 'ignore', env });
      d.once('error', () => resolve());
      d.once('close', () => resolve());
    });
  }
}
