/**
 * The agent's main flow (DESIGN §3 "Activate a workload", step 4): activate, write the files,
 * start the mesh proxy, launch the unmodified program, renew the certificate before it expires,
 * and exit with the program's status. In init mode (`--init DIR`, a Kubernetes init container)
 * it stops after writing the files.
 */
import { rm } from 'node:fs/promises';
import { ManifestResponseSchema, checkBody } from '@cloister/protocol';
import type { ActivationBundle, ImageKeyRequest, ManifestResponse } from '@cloister/protocol';
import { isCloisterError } from '@cloister/errors';
import { activate, releaseInstance } from './activate.js';
import type { Activation } from './activate.js';
import type { MeshIdentity } from './bundle.js';
import { CoordinatorClient } from './coordinator-client.js';
import { programEnv } from './env.js';
import { agentError } from './error-codes.js';
import {
  checkExistingDirs,
  createFilesRoot,
  expandFilesToken,
  mapPath,
  planPaths,
  useFilesRoot,
  writeFileAtomic,
  writeFiles,
} from './files.js';
import { openWorkloadImage, runImageWorkload } from './image-workload.js';
import type { ImageWorkloadOptions, WorkloadImage } from './image-workload.js';
import { launch } from './launch.js';
import type { ProgramStdout } from './launch.js';
import { startMeshProxy } from './mesh/proxy.js';
import type { MeshCredentials, MeshEvent, MeshProxy } from './mesh/proxy.js';
import { meshRefresher } from './mesh/refresh.js';
import type { MeshRefresher } from './mesh/refresh.js';
import { meshRoutes } from './mesh/routes.js';
import type { PeerMap } from './mesh/routes.js';
import type { EvidenceProvider } from './providers/types.js';

/** Where the agent writes the mesh identity, as manifest paths (under the files root). */
export const MESH_FILES = {
  key: '/run/cloister/mesh/key.pem',
  chain: '/run/cloister/mesh/cert.pem',
  rootCa: '/run/cloister/mesh/root-ca.pem',
  intermediateCa: '/run/cloister/mesh/intermediate-ca.pem',
  /** Key and chain in one file: always a matching pair, even while a renewal is written. */
  combined: '/run/cloister/mesh/bundle.pem',
} as const;

export interface AgentLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface RunAgentOptions {
  readonly coordinator: string;
  readonly workload: string;
  readonly provider: EvidenceProvider;
  readonly rootCa?: string;
  /** Files root given by the user (used as is); default: a fresh dir under /dev/shm. */
  readonly filesDir?: string;
  /** Init mode: write files to this directory and return 0. */
  readonly init?: string;
  /** The program: resolved executable path and its command-line arguments (without argv0). */
  readonly program?: {
    readonly executable: string;
    readonly argv0: string;
    readonly args: readonly string[];
  };
  /** Image mode (instead of `program`): pull, decrypt and run this image under runc. */
  readonly image?: ImageWorkloadOptions;
  readonly peers?: PeerMap;
  /** Bind address of ingress listeners (default 0.0.0.0). */
  readonly meshBind?: string;
  /** Release the instance at the coordinator when the program exits (default true). */
  readonly release?: boolean;
  /** Keep retrying an unreachable coordinator this long at startup (default 0). */
  readonly retryForMs?: number;
  readonly log?: AgentLog;
  /**
   * Mesh proxy events. Default: refusals, revocations and errors are logged as warnings
   * (accepted connections are not, one line each would flood a busy service's log).
   */
  readonly onMeshEvent?: (e: MeshEvent) => void;
  /** Base of the default files root (tests); default /dev/shm. */
  readonly shmDir?: string;
  /** Inherited environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Called once the program runs (tests use it to send signals). */
  readonly onLaunched?: (info: { pid: number; filesRoot: string }) => void;
  /**
   * Shortest wait between two renewals (default 1 s): a coordinator (or a skewed clock) that
   * answers with a `renewAfter` in the past cannot make the agent re-attest in a tight loop.
   */
  readonly minRenewIntervalMs?: number;
  /** Called after each successful renewal (tests). */
  readonly onRenewed?: (mesh: MeshIdentity) => void;
  /**
   * How often to re-read the manifest and apply its mesh allow-lists to the running proxy
   * (default 30 s; 0: only after renewals). docs/mesh.md "Manifest updates".
   */
  readonly manifestRefreshMs?: number;
  /** Where the program's (or container's) standard output goes (default: inherited). */
  readonly programStdout?: ProgramStdout;
}

const silent: AgentLog = { info: () => undefined, warn: () => undefined };

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A random 50-100 % of `ms`: agents that failed together (their coordinator was down) retry
 * spread out instead of all in the same instant.
 */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (0.5 + random() / 2));
}

async function activateWithRetry(
  o: RunAgentOptions,
  client: CoordinatorClient,
  log: AgentLog,
  image?: ImageKeyRequest,
): Promise<Activation> {
  const deadline = Date.now() + (o.retryForMs ?? 0);
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await activate({
        client,
        workload: o.workload,
        provider: o.provider,
        ...(image === undefined ? {} : { image }),
      });
    } catch (e) {
      const transient = isCloisterError(e) && e.code === 'AGENT_COORDINATOR_UNREACHABLE';
      const inMs = jittered(delay);
      if (!transient || Date.now() + inMs > deadline) throw e;
      log.warn('coordinator not reachable yet; retrying', { code: e.code, inMs });
      await sleep(inMs);
    }
  }
}

function meshCredentials(m: MeshIdentity): MeshCredentials {
  return { key: m.keyPem, cert: m.chainPem, ca: m.rootCaPem };
}

/** Writes the bundle's files and the mesh identity files (all checked before the first write). */
export async function writeBundleFiles(
  root: string,
  bundle: ActivationBundle,
  mesh: MeshIdentity,
): Promise<void> {
  const files: Record<string, Uint8Array | string> = {};
  for (const [p, v] of Object.entries(bundle.files))
    files[p] = new Uint8Array(Buffer.from(v, 'base64url'));
  // The mesh identity is written after the bundle's files: a bundle file in its way (say
  // `/run/cloister/mesh`) must be refused before the first write, not after the last.
  await checkExistingDirs(
    root,
    planPaths(root, [...Object.keys(files), ...Object.values(MESH_FILES)]),
  );
  await writeFiles(root, files);
  await writeMeshFiles(root, mesh);
}

async function writeMeshFiles(root: string, mesh: MeshIdentity): Promise<void> {
  const put = (p: string, data: string) => writeFileAtomic(mapPath(root, p), data);
  try {
    await put(MESH_FILES.combined, `${mesh.keyPem.trim()}\n${mesh.chainPem}`);
    await put(MESH_FILES.key, mesh.keyPem);
    await put(MESH_FILES.chain, mesh.chainPem);
    await put(MESH_FILES.rootCa, mesh.rootCaPem);
    await put(MESH_FILES.intermediateCa, mesh.intermediateCaPem);
  } catch (cause) {
    throw agentError('AGENT_FILES_WRITE_FAILED', 'cannot write the mesh identity files', { cause });
  }
}

function meshEventLog(log: AgentLog): (e: MeshEvent) => void {
  return (e) => {
    if (e.type !== 'accepted') log.warn(`mesh connection ${e.type}`, { ...e });
  };
}

async function fetchManifest(
  client: CoordinatorClient,
  signal?: AbortSignal,
): Promise<ManifestResponse> {
  const body = await client.getJson('/v1/manifest', signal);
  try {
    return checkBody(ManifestResponseSchema, body, 'manifest');
  } catch (cause) {
    throw agentError(
      'AGENT_COORDINATOR_BAD_RESPONSE',
      'the manifest answer does not match the API',
      {
        cause,
      },
    );
  }
}

let inspectorSignalHandled = false;

/**
 * Node.js opens its inspector on SIGUSR1 unless the process handles that signal: a local port
 * that runs whatever code it is sent. Whoever can signal the agent (a container runtime acting
 * for the host) would get code running next to the agent's keys and the bundle's secrets, so
 * the agent handles the signal itself and ignores it.
 */
function ignoreInspectorSignal(log: AgentLog): void {
  if (inspectorSignalHandled) return;
  inspectorSignalHandled = true;
  process.on('SIGUSR1', () => {
    log.warn('SIGUSR1 ignored: it would open the Node.js inspector in the agent');
  });
}

/** Runs the agent; resolves with the exit status the process should end with. */
export async function runAgent(o: RunAgentOptions): Promise<number> {
  const log = o.log ?? silent;
  ignoreInspectorSignal(log);
  if (o.init === undefined && o.program === undefined && o.image === undefined) {
    throw agentError('AGENT_USAGE', 'give the program to run after --, --image, or --init DIR');
  }
  const client = new CoordinatorClient({
    url: o.coordinator,
    ...(o.rootCa === undefined ? {} : { rootCa: o.rootCa }),
  });
  // An image workload names its image's manifest in the activation, so the coordinator can
  // release the layer keys of exactly that (pinned) image with the bundle; the same resolved
  // image is pulled afterwards.
  const image = o.image === undefined ? undefined : await openWorkloadImage(o.image.source);
  try {
    return await activateAndRun(o, client, log, image);
  } finally {
    await image?.close();
  }
}

/** The longest wait between renewal attempts once the certificate has expired. */
const MAX_RENEWAL_RETRY_MS = 5 * 60_000;

/**
 * How long to wait before retrying a failed renewal. While the certificate is valid: a tenth
 * of what is left (at least 1 s), so several attempts fit before it expires. After it
 * expired: 1 s doubling with each failure up to 5 minutes, `jittered`, so that thousands of
 * agents whose coordinator was down do not all come back in the same second (and keep coming
 * every second) when it is up again.
 */
export function renewalRetryMs(
  leftMs: number,
  failedSinceExpiry: number,
  random: () => number = Math.random,
): number {
  if (leftMs > 0) return Math.max(1000, leftMs / 10);
  const ceiling = Math.min(MAX_RENEWAL_RETRY_MS, 1000 * 2 ** Math.min(failedSinceExpiry - 1, 20));
  return jittered(ceiling, random);
}

/**
 * Whether a renewal was refused because the coordinator has no record of the instance (it was
 * released, or purged after the retention period): final, unlike an unreachable coordinator.
 */
function instanceGone(e: unknown): boolean {
  if (!isCloisterError(e) || e.code !== 'AGENT_COORDINATOR_REFUSED') return false;
  const problem = e.details?.['problem'] as { code?: unknown } | undefined;
  return problem?.code === 'COORDINATOR_NOT_FOUND';
}

/** Activates, writes the bundle's files and runs the program or image until it exits. */
async function activateAndRun(
  o: RunAgentOptions,
  client: CoordinatorClient,
  log: AgentLog,
  image: WorkloadImage | undefined,
): Promise<number> {
  let current = await activateWithRetry(o, client, log, image?.keyRequest);
  log.info('activated', {
    workload: o.workload,
    instanceId: current.instanceId,
    spiffeId: current.mesh.spiffeId,
    notAfter: current.mesh.notAfter.toISOString(),
  });

  const ownRoot = o.init === undefined && o.filesDir === undefined;
  const root =
    o.init !== undefined
      ? await useFilesRoot(o.init)
      : o.filesDir !== undefined
        ? await useFilesRoot(o.filesDir)
        : await createFilesRoot(o.shmDir);
  try {
    await writeBundleFiles(root, current.bundle, current.mesh);
  } catch (e) {
    if (ownRoot) await rm(root, { recursive: true, force: true });
    throw e;
  }
  log.info('files written', { root, files: Object.keys(current.bundle.files).length });
  if (o.init !== undefined) return 0;

  let proxy: MeshProxy | undefined;
  let refresher: MeshRefresher | undefined;
  let refreshTimer: NodeJS.Timeout | undefined;
  let renewTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  // The renewal in flight, awaited before the files root is removed (else it could recreate it).
  let renewing: Promise<void> | undefined;
  try {
    const { manifest, manifestHash, seq } = await fetchManifest(client);
    const routes = meshRoutes(manifest, o.workload, o.peers ?? {}, o.meshBind);
    if (routes.ingress.length > 0 || routes.egress.length > 0) {
      proxy = await startMeshProxy({
        trustDomain: current.mesh.trustDomain,
        ingress: routes.ingress,
        egress: routes.egress,
        credentials: meshCredentials(current.mesh),
        onEvent: o.onMeshEvent ?? meshEventLog(log),
      });
      log.info('mesh proxy listening', {
        ingress: proxy.ingress.map((a) => a.port),
        egress: proxy.egress.map((a) => `${a.address}:${a.port}`),
      });
    }
    // A manifest update that revokes a peer's egress must reach this proxy's allow-lists
    // promptly, not at the next restart: re-read it periodically and after each renewal.
    refresher = meshRefresher({
      fetch: (signal) => fetchManifest(client, signal),
      workload: o.workload,
      ...(o.peers === undefined ? {} : { peers: o.peers }),
      ...(o.meshBind === undefined ? {} : { bind: o.meshBind }),
      started: { manifestHash, seq },
      routes,
      ...(proxy === undefined ? {} : { proxy }),
      log,
    });
    const refreshMs = o.manifestRefreshMs ?? 30_000;
    // Without routes there is no allow-list to keep fresh; renewals still report new routes.
    if (refreshMs > 0 && proxy !== undefined) {
      refreshTimer = setInterval(() => void refresher?.refresh(), Math.min(refreshMs, 2 ** 31 - 1));
      refreshTimer.unref();
    }

    // Renewal re-attests for the same instance before the certificate expires and rewrites the
    // files and the mesh identity: for a program in the files root, for an image in the
    // directory bind-mounted at /run/cloister/mesh (so the container sees each renewal).
    const scheduleRenewal = (at: Date): void => {
      if (stopped) return;
      const floor = o.minRenewIntervalMs ?? 1000;
      const ms = Math.max(floor, Math.min(at.getTime() - Date.now(), 2 ** 31 - 1));
      renewTimer = setTimeout(() => {
        renewing = renew();
      }, ms);
      renewTimer.unref();
    };
    // Failed renewals since the certificate expired (the retry delay grows with them).
    let failedSinceExpiry = 0;
    const renew = async (): Promise<void> => {
      try {
        const next = await activate({
          client,
          workload: o.workload,
          provider: o.provider,
          renew: current,
        });
        // The coordinator now holds this activation's key: the next renewal and the release
        // must be signed with it, also when writing its files fails below (the next renewal
        // writes them again).
        current = next;
        if (stopped) return;
        await writeBundleFiles(root, next.bundle, next.mesh);
        proxy?.updateCredentials(meshCredentials(next.mesh));
        failedSinceExpiry = 0;
        log.info('certificate renewed', { notAfter: next.mesh.notAfter.toISOString() });
        // Re-read the manifest at each renewal too: with the timer off, this is when an
        // update reaches the allow-lists.
        void refresher?.refresh();
        o.onRenewed?.(next.mesh);
        scheduleRenewal(next.renewAfter);
      } catch (e) {
        if (instanceGone(e)) {
          // Released, or expired past the coordinator's retention: no renewal can succeed, so
          // none is tried again. The program runs on until its certificate expires; a restart
          // of the agent activates a new instance.
          log.warn('the coordinator no longer knows this instance; renewals stopped', {
            code: 'AGENT_RENEWAL_FAILED',
            cause: 'COORDINATOR_NOT_FOUND',
            instanceId: current.instanceId,
            notAfter: current.mesh.notAfter.toISOString(),
          });
          return;
        }
        const err = agentError('AGENT_RENEWAL_FAILED', 'certificate renewal failed; retrying', {
          cause: e,
          details: { code: isCloisterError(e) ? e.code : 'INTERNAL' },
        });
        const left = current.mesh.notAfter.getTime() - Date.now();
        failedSinceExpiry = left > 0 ? 0 : failedSinceExpiry + 1;
        const inMs = renewalRetryMs(left, failedSinceExpiry);
        log.warn(err.message, { code: err.code, cause: err.details?.['code'], leftMs: left, inMs });
        scheduleRenewal(new Date(Date.now() + inMs));
      }
    };
    const imageEntry = manifest.workloads[o.workload]?.image;
    if (o.image !== undefined || imageEntry !== undefined) {
      // A workload whose manifest names an image runs that image and nothing else: a host
      // starting the agent with some other program gets no secrets used outside the image.
      if (o.image === undefined || image === undefined)
        throw agentError('AGENT_USAGE', 'the manifest gives this workload an image: use --image');
      scheduleRenewal(current.renewAfter);
      const status = await runImageWorkload({
        image: o.image,
        workloadImage: image,
        manifestImage: imageEntry,
        bundle: current.bundle,
        filesRoot: root,
        log: (m, f) => log.info(m, f),
        ...(o.programStdout === undefined ? {} : { stdout: o.programStdout }),
        ...(o.onLaunched === undefined
          ? {}
          : { onLaunched: (i) => o.onLaunched?.({ pid: i.pid, filesRoot: root }) }),
      });
      log.info('container exited', { status });
      return status;
    }
    const program = o.program as NonNullable<RunAgentOptions['program']>;
    // Manifest args replace the command line's; the executable stays the one that was
    // measured (argv[0] is only what the program sees as its name).
    const args = current.bundle.args.map((a) => expandFilesToken(a, root));
    const [argv0, ...rest] = args.length > 0 ? args : [program.argv0, ...program.args];
    const launched = await launch({
      executable: program.executable,
      argv0: argv0 ?? program.argv0,
      args: rest,
      env: programEnv(o.env ?? process.env, current.bundle.env, root),
      ...(o.programStdout === undefined ? {} : { stdout: o.programStdout }),
    });
    o.onLaunched?.({ pid: launched.child.pid ?? -1, filesRoot: root });
    scheduleRenewal(current.renewAfter);

    const status = await launched.exited;
    log.info('program exited', { status });
    return status;
  } finally {
    stopped = true;
    if (renewTimer !== undefined) clearTimeout(renewTimer);
    clearInterval(refreshTimer);
    await renewing;
    await refresher?.stop();
    await proxy?.close();
    if (o.init === undefined && o.release !== false) {
      // A clean stop frees the instance's slot (maxInstances), so the workload can be started
      // again at once; if the coordinator cannot be reached, the slot frees itself when the
      // certificate expires.
      try {
        await releaseInstance(client, current);
        log.info('instance released', { instanceId: current.instanceId });
      } catch (e) {
        log.warn('could not release the instance', {
          code: isCloisterError(e) ? e.code : 'INTERNAL',
        });
      }
    }
    if (ownRoot) await rm(root, { recursive: true, force: true });
  }
}
