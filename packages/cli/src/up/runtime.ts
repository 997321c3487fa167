/**
 * `cloister up DIR`: a whole deployment on one machine, for development (docs/quickstart.md).
 *
 * 1. sim hardware in DIR/.cloister/sim (made once), an owner key DIR/owner.pem (made once);
 * 2. a coordinator on the simulation TEE, data in DIR/.cloister/data, on a loopback port,
 *    installed with the owner's public key (so the first manifest must be signed by it);
 * 3. DIR/manifest.json signed and set (or updated when it changed since the last run), and each
 *    user-defined secret uploaded from DIR/secrets/<name> when that file exists;
 * 4. one agent per workload instance of DIR/workloads.json (see runfile.ts), each attesting
 *    with sim evidence of its program, with its mesh proxy bound to loopback;
 * 5. DIR/.cloister/up.json written once everything runs (coordinator URL, root CA file, sim
 *    root, ingress addresses), removed again on shutdown; DIR/.cloister/up.lock held from step 1
 *    to the end, so one `up` at a time runs in DIR.
 *
 * Agents run in this process and their programs are its children: `stop()` (SIGINT/SIGTERM in
 * the command) ends every program (SIGTERM, then SIGKILL after a grace period), the proxies and
 * the coordinator, so nothing outlives `up`.
 */
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { createCoordinator } from '@cloister/coordinator';
import type { CoordinatorOptions, RunningCoordinator } from '@cloister/coordinator';
import { generateSimHardware, SIM_HARDWARE_FILES } from '@cloister/evidence';
import { imageMeasuredArgs, resolveExecutable, runAgent, simProvider } from '@cloister/agent';
import type { ImageWorkloadOptions } from '@cloister/agent';
import type { AgentLog, PeerMap, ProgramStdout } from '@cloister/agent';
import { isCloisterError } from '@cloister/errors';
import { manifestHash, parseManifestText } from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { CoordinatorApi } from '../client/api.js';
import { clientError } from '../client/error-codes.js';
import { cliError } from '../error-codes.js';
import { generateOwnerKey, loadOwnerKey, readInputText, writeRootCa } from '../client/local.js';
import { fetchHistory, ownerNameFor, signAndSetManifest, signAndSetSecret } from '../client/ops.js';
import { writeSimHardware } from '../sim-hardware.js';
import { parseRunFile } from './runfile.js';
import type { RunFile } from './runfile.js';

export interface UpOptions {
  /** Coordinator port on 127.0.0.1 (default: a free port). */
  readonly port?: number;
  /** Where progress and agent logs go (one line each). */
  readonly log?: (line: string) => void;
  /** Grace period between SIGTERM and SIGKILL of a program at shutdown (default 5 s). */
  readonly graceMs?: number;
  /**
   * Aborted when the user interrupts (SIGINT, SIGTERM): start-up then stops what it started
   * and rejects with UP_START_FAILED instead of going on to start the rest.
   */
  readonly signal?: AbortSignal;
  /**
   * Where the programs' standard output goes (default: inherited): `stderr` keeps this
   * process's standard output for machine-readable documents (`up --json`).
   */
  readonly programStdout?: ProgramStdout;
}

export interface UpIngress {
  readonly workload: string;
  /** Mesh (mTLS) listener on loopback. */
  readonly address: string;
  /** Where it forwards to, in the workload. */
  readonly to: number;
}

export interface InstanceResult {
  readonly workload: string;
  readonly instance: number;
  readonly oneShot: boolean;
  /** Exit status of the program, when it ran and exited. */
  readonly status?: number;
  /** Why it could not run (activation refused...). */
  readonly error?: Record<string, unknown>;
}

export interface UpState {
  readonly coordinator: string;
  readonly rootCa: string;
  readonly simRoot: string;
  readonly manifestHash: string;
  readonly ingress: readonly UpIngress[];
  readonly pid: number;
}

export interface UpHandle extends UpState {
  /** Resolves when every one-shot workload has exited (never, when there are none). */
  readonly oneShotsDone: Promise<void>;
  /** Resolves when every instance has exited. */
  readonly allDone: Promise<void>;
  /** Stops everything; resolves with each instance's outcome. Idempotent. */
  stop(): Promise<InstanceResult[]>;
}

interface Instance {
  readonly workload: string;
  readonly instance: number;
  readonly oneShot: boolean;
  pid?: number;
  status?: number;
  error?: unknown;
  done: Promise<void>;
}

const exists = async (p: string): Promise<boolean> => {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
};

/** Whether a process with this pid runs (EPERM: it does, as another user). */
function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

/**
 * Takes DIR/.cloister/up.lock for this process; resolves with its release. A second `up` on
 * the same directory would run a second coordinator over the same state, replace the first
 * one's up.json and delete it when it ends. A lock whose process is gone (killed with SIGKILL)
 * is taken over.
 */
async function lockUpDir(dir: string, lock: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(lock, 'wx', 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return () => rm(lock, { force: true });
    } catch (e) {
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
    }
    const pid = Number.parseInt(await readFile(lock, 'utf8').catch(() => ''), 10);
    if (Number.isSafeInteger(pid) && pid > 0 && processRuns(pid)) {
      throw cliError(
        'CLI_USAGE',
        `${dir} is in use by cloister up (pid ${pid}); stop it first (if it is not running, delete ${lock})`,
        { details: { pid, lock } },
      );
    }
    await rm(lock, { force: true });
  }
  throw cliError('CLI_USAGE', `${dir} is in use by another cloister up; stop it first`, {
    details: { lock },
  });
}

/** The error a start-up interrupted by the user ends with. */
function interrupted(details: Record<string, unknown> = {}): Error {
  return clientError(
    'UP_START_FAILED',
    'start-up was interrupted; everything it had started is stopped',
    { details: { interrupted: true, ...details } },
  );
}

/** A coordinator logger that keeps only warnings and errors, as single lines. */
function coordinatorLogger(log: (s: string) => void): NonNullable<CoordinatorOptions['logger']> {
  const noop = (): void => undefined;
  const line =
    (level: string) =>
    (obj: unknown, msg?: unknown): void => {
      const text = typeof obj === 'string' ? obj : typeof msg === 'string' ? msg : '';
      log(`[coordinator] ${level}: ${text}`);
    };
  const l = {
    level: 'warn',
    info: noop,
    debug: noop,
    trace: noop,
    silent: noop,
    warn: line('warn'),
    error: line('error'),
    fatal: line('fatal'),
    child: () => l,
  };
  return l;
}

function agentLog(prefix: string, log: (s: string) => void): AgentLog {
  const f = (level: string) => (msg: string, fields?: Record<string, unknown>) =>
    log(
      `[${prefix}] ${level === 'info' ? '' : `${level}: `}${msg}${fields === undefined ? '' : ` ${JSON.stringify(fields)}`}`,
    );
  return { info: f('info'), warn: f('warn') };
}

/** The ingress listeners the manifest gives the workloads that run. */
export function ingressOf(manifest: Manifest, run: RunFile): UpIngress[] {
  const out: UpIngress[] = [];
  for (const name of Object.keys(run.workloads)) {
    for (const r of manifest.workloads[name]?.mesh?.ingress ?? []) {
      out.push({ workload: name, address: `127.0.0.1:${r.port}`, to: r.to });
    }
  }
  return out;
}

/** An image reference with its local path (oci:, docker-archive:) taken relative to DIR. */
function imageSourceIn(dir: string, ref: string): string {
  for (const prefix of ['oci:', 'docker-archive:']) {
    if (ref.startsWith(prefix) && !isAbsolute(ref.slice(prefix.length)))
      return `${prefix}${resolve(dir, ref.slice(prefix.length))}`;
  }
  return ref;
}

/** Starts a deployment from DIR; see the file comment. */
export async function startUp(dirArg: string, options: UpOptions = {}): Promise<UpHandle> {
  const dir = resolve(dirArg);
  const log = options.log ?? (() => undefined);
  const graceMs = options.graceMs ?? 5000;
  const state = join(dir, '.cloister');
  const simDir = join(state, 'sim');
  const upFile = join(state, 'up.json');
  const abort = options.signal;
  const aborted = (): boolean => abort?.aborted === true;

  // Inputs first: a bad manifest or run-file changes nothing.
  const manifest = parseManifestText(readInputText(join(dir, 'manifest.json'), 'manifest'));
  const run = parseRunFile(readInputText(join(dir, 'workloads.json'), 'run-file'), manifest);
  const programs = new Map<
    string,
    { executable: string; args: string[]; image?: ImageWorkloadOptions }
  >();
  for (const [name, w] of Object.entries(run.workloads)) {
    if (w.image !== undefined) {
      let runc: string;
      try {
        runc = resolveExecutable('runc');
      } catch {
        log(`[${name}] skipped: image workloads need runc, which is not installed`);
        continue;
      }
      const digest = manifest.workloads[name]?.image?.manifestDigest;
      programs.set(name, {
        executable: runc,
        args: imageMeasuredArgs(w.image, digest),
        image: {
          source: imageSourceIn(dir, w.image),
          runc,
          ...(digest === undefined ? {} : { manifestDigest: digest }),
        },
      });
      continue;
    }
    const command = w.command as readonly [string, ...string[]];
    const executable = resolveExecutable(command[0]);
    programs.set(name, {
      executable,
      args: command.slice(1),
    });
  }

  await mkdir(state, { recursive: true, mode: 0o700 });
  const unlock = await lockUpDir(dir, join(state, 'up.lock'));
  let owner: Awaited<ReturnType<typeof loadOwnerKey>>;
  let coordinator: RunningCoordinator;
  try {
    if (!(await exists(join(simDir, SIM_HARDWARE_FILES.rootCert)))) {
      await writeSimHardware(simDir, await generateSimHardware());
      log(`made sim hardware in ${simDir}`);
    }
    const ownerPath = join(dir, 'owner.pem');
    if (!(await exists(ownerPath))) {
      await generateOwnerKey('owner', dir);
      log(`made owner key ${ownerPath} (and owner.pub.pem)`);
    }
    owner = await loadOwnerKey(ownerPath);
    if (aborted()) throw interrupted();

    const listen = `127.0.0.1:${options.port ?? 0}`;
    try {
      coordinator = await createCoordinator({
        dataDir: join(state, 'data'),
        listen,
        ownerKeyPem: owner.publicKeyPem,
        simulation: { rootDir: simDir },
        logger: coordinatorLogger(log),
      });
    } catch (e) {
      // Another program holds the port (or it is privileged): the user's choice, not a bug.
      const code = (e as { code?: unknown }).code;
      if (code === 'EADDRINUSE' || code === 'EACCES') {
        throw cliError(
          'CLI_USAGE',
          code === 'EADDRINUSE'
            ? `${listen} is in use; pass another --port, or none for a free one`
            : `not allowed to listen on ${listen}; pass another --port, or none for a free one`,
          { cause: e, details: { listen } },
        );
      }
      throw e;
    }
  } catch (e) {
    await unlock();
    throw e;
  }
  const instances: Instance[] = [];
  let stopping: Promise<InstanceResult[]> | undefined;
  // Last resort if this process ends without stop() (an uncaught error): programs must not
  // outlive `up` holding secrets and ports.
  const killAll = (): void => {
    for (const i of instances) {
      if (i.pid !== undefined && i.status === undefined) {
        try {
          process.kill(i.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  };
  process.on('exit', killAll);

  const stop = (): Promise<InstanceResult[]> => {
    stopping ??= (async () => {
      for (const i of instances) {
        if (i.pid !== undefined && i.status === undefined) {
          try {
            process.kill(i.pid, 'SIGTERM');
          } catch {
            // already gone
          }
        }
      }
      // Repeated: a program that an agent still starting launches after this point gets its
      // SIGTERM at launch and a SIGKILL here if it ignores it.
      const killer = setInterval(killAll, graceMs);
      await Promise.all(instances.map((i) => i.done));
      clearInterval(killer);
      await coordinator.close();
      await rm(upFile, { force: true });
      await unlock();
      process.off('exit', killAll);
      return instances.map((i) => ({
        workload: i.workload,
        instance: i.instance,
        oneShot: i.oneShot,
        ...(i.status === undefined ? {} : { status: i.status }),
        ...(i.error === undefined
          ? {}
          : {
              error: isCloisterError(i.error)
                ? i.error.toJSON()
                : {
                    code: 'INTERNAL',
                    message: i.error instanceof Error ? i.error.message : 'unknown',
                  },
            }),
      }));
    })();
    return stopping;
  };

  try {
    const rootCaPath = join(state, 'root-ca.pem');
    await writeRootCa(rootCaPath, coordinator.rootCaPem);
    // This process started the coordinator and holds its root CA: pin it directly.
    const api = new CoordinatorApi({ url: coordinator.url, rootCaPem: coordinator.rootCaPem });
    let mh: string;
    try {
      if (aborted()) throw interrupted();
      mh = await manifestHash(manifest);
      const { entries } = await fetchHistory(api);
      if (entries.at(-1)?.manifestHash !== mh) {
        const r = await signAndSetManifest(api, manifest, owner);
        log(`manifest ${r.kind === 'set' ? 'set' : 'updated'}: ${r.manifestHash}`);
      } else {
        log(`manifest unchanged: ${mh}`);
      }
      for (const [name, def] of Object.entries(manifest.secrets ?? {})) {
        const file = join(dir, 'secrets', name);
        if (def.userDefined !== true || !(await exists(file))) continue;
        const r = await signAndSetSecret(api, {
          name,
          value: new Uint8Array(await readFile(file)),
          rootCaPem: coordinator.rootCaPem,
          owner: ownerNameFor(owner, manifest),
          key: owner,
        });
        log(`secret ${name} uploaded (version ${r.version})`);
      }
    } finally {
      await api.close();
    }

    if (aborted()) throw interrupted();
    // Everything runs on loopback: every workload's ingress is on 127.0.0.1.
    const peers: PeerMap = Object.fromEntries(
      Object.keys(manifest.workloads).map((w) => [w, { host: '127.0.0.1' }]),
    );
    const launched: Promise<void>[] = [];
    for (const [name, w] of Object.entries(run.workloads)) {
      const program = programs.get(name);
      if (program === undefined) continue;
      const args = program.args;
      for (let n = 0; n < w.instances; n++) {
        const prefix = w.instances > 1 ? `${name}#${n}` : name;
        let onLaunch: () => void = () => undefined;
        const started = new Promise<void>((r) => (onLaunch = r));
        const inst: Instance = {
          workload: name,
          instance: n,
          oneShot: w.oneShot,
          done: Promise.resolve(),
        };
        inst.done = runAgent({
          coordinator: coordinator.url,
          rootCa: coordinator.rootCaPem,
          workload: name,
          provider: simProvider({ dir: simDir, executable: program.executable, args }),
          ...(program.image === undefined
            ? {
                program: {
                  executable: program.executable,
                  argv0: (w.command as readonly string[])[0] ?? program.executable,
                  args,
                },
              }
            : { image: program.image }),
          peers,
          meshBind: '127.0.0.1',
          retryForMs: 10_000,
          log: agentLog(prefix, log),
          ...(options.programStdout === undefined ? {} : { programStdout: options.programStdout }),
          onLaunched: ({ pid }) => {
            inst.pid = pid;
            // Launched after stop() began (its agent was still starting): it must not stay.
            if (stopping !== undefined) {
              try {
                process.kill(pid, 'SIGTERM');
              } catch {
                // already gone
              }
            }
            onLaunch();
          },
        }).then(
          (status) => {
            inst.status = status;
            log(`[${prefix}] exited with status ${status}`);
            onLaunch();
          },
          (e: unknown) => {
            inst.error = e;
            log(
              `[${prefix}] failed: ${isCloisterError(e) ? `${e.code}: ${e.message}` : String(e)}`,
            );
            onLaunch();
          },
        );
        instances.push(inst);
        launched.push(started);
      }
    }
    // Interrupted while agents are still starting: stop at once those that run, not only once
    // every agent has started.
    await Promise.race([
      Promise.all(launched),
      new Promise<void>((r) => abort?.addEventListener('abort', () => r(), { once: true })),
    ]);
    if (aborted()) throw interrupted({ instances: await stop() });
    const failed = instances.find((i) => i.error !== undefined);
    if (failed !== undefined) {
      const results = await stop();
      throw clientError('UP_START_FAILED', `workload ${failed.workload} could not start`, {
        cause: failed.error,
        details: { instances: results },
      });
    }

    const ingress = ingressOf(manifest, run);
    const up: UpState = {
      coordinator: coordinator.url,
      rootCa: rootCaPath,
      simRoot: simDir,
      manifestHash: mh,
      ingress,
      pid: process.pid,
    };
    await writeRootCa(upFile, JSON.stringify(up, null, 2));
    const oneShots = instances.filter((i) => i.oneShot);
    return {
      ...up,
      oneShotsDone:
        oneShots.length === 0
          ? new Promise<void>(() => undefined)
          : Promise.all(oneShots.map((i) => i.done)).then(() => undefined),
      allDone: Promise.all(instances.map((i) => i.done)).then(() => undefined),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
