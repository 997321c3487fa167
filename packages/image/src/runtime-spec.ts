/**
 * OCI runtime spec (opencontainers/runtime-spec v1.0.2 `config.md`, `config-linux.md`) for
 * running an unpacked image under runc: process from the image config (Entrypoint, Cmd, Env,
 * WorkingDir, User) overridden by the workload's manifest (args, env, files), hardened by
 * default: own pid/ipc/uts/mount (and optionally network) namespaces, no_new_privileges, a
 * reduced capability set, a seccomp filter, read-only rootfs, secrets bind-mounted read-only
 * from in-memory files, runc's masked and read-only paths, no devices beyond the default set.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { imageError } from './error-codes.js';
import type { ImageConfig } from './manifest.js';
import { resolveInRoot } from './unpack.js';

/** Capabilities kept by default (Docker's default set minus NET_RAW, MKNOD, SETFCAP, SYS_CHROOT, AUDIT_WRITE, SETPCAP). */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_NET_BIND_SERVICE',
] as const;

/** runc's default masked paths: kernel interfaces a container must not read. */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

export const READONLY_PATHS = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
];

/**
 * System calls a container is refused (EPERM) on top of what its dropped capabilities refuse:
 * the kernel's keyrings (not namespaced), tracing and inspecting other processes, BPF,
 * userfaultfd and io_uring (kernel attack surface with a history of exploits), new namespaces
 * and mounts, kernel modules and kexec, and machine-wide settings (clocks, swap, accounting,
 * reboot, I/O ports). A deny list, not Docker's allow list: a program that uses an unusual but
 * harmless call keeps working, and calls the kernel adds later are allowed until listed here.
 */
export const DENIED_SYSCALLS = [
  'add_key',
  'keyctl',
  'request_key',
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'kcmp',
  'perf_event_open',
  'bpf',
  'userfaultfd',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'unshare',
  'setns',
  'mount',
  'umount2',
  'pivot_root',
  'open_tree',
  'move_mount',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'mount_setattr',
  'init_module',
  'finit_module',
  'delete_module',
  'kexec_load',
  'kexec_file_load',
  'reboot',
  'swapon',
  'swapoff',
  'acct',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'syslog',
  'iopl',
  'ioperm',
  'open_by_handle_at',
  'lookup_dcookie',
  'quotactl',
  'uselib',
  'vhangup',
] as const;

/** clone(2) flags that create namespaces: clone with any of them is refused like unshare. */
const CLONE_NAMESPACE_FLAGS = [
  0x00020000, // CLONE_NEWNS
  0x02000000, // CLONE_NEWCGROUP
  0x04000000, // CLONE_NEWUTS
  0x08000000, // CLONE_NEWIPC
  0x10000000, // CLONE_NEWUSER
  0x20000000, // CLONE_NEWPID
  0x40000000, // CLONE_NEWNET
];

/** Seccomp architectures of the host: the native ABI and its compat ones (no bypass through them). */
const SECCOMP_ARCHITECTURES: Partial<Record<string, string[]>> = {
  x64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  arm64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
};

/**
 * The seccomp filter of every container (runtime-spec `config-linux.md` "Seccomp"): everything
 * allowed but DENIED_SYSCALLS and clone with a namespace flag (EPERM). clone3 gets ENOSYS: its
 * flags sit behind a pointer that seccomp cannot read, and on ENOSYS the C library falls back
 * to clone, whose flags it can.
 */
export function defaultSeccomp(arch: string = process.arch): Record<string, unknown> {
  const EPERM = 1;
  const ENOSYS = 38;
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: SECCOMP_ARCHITECTURES[arch] ?? [],
    syscalls: [
      { names: [...DENIED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
      ...CLONE_NAMESPACE_FLAGS.map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
    ],
  };
}

/** A file the workload receives (rendered secret), bind-mounted read-only. */
export interface RuntimeFile {
  /** Absolute path inside the container. */
  readonly containerPath: string;
  /** Host path of the file, which should live on tmpfs (in TEE memory). */
  readonly hostPath: string;
}

export interface RuntimeSpecOptions {
  readonly config: ImageConfig;
  /** Unpacked rootfs, for resolving user names (`/etc/passwd`, `/etc/group`). */
  readonly rootfs: string;
  /** Rootfs path written into the spec (default `rootfs`, relative to the bundle). */
  readonly rootPath?: string;
  /** Full argv from the workload manifest (replaces Entrypoint + Cmd). */
  readonly args?: readonly string[];
  /** Env from the workload manifest (overrides the image's). */
  readonly env?: Readonly<Record<string, string>>;
  readonly files?: readonly RuntimeFile[];
  /** Give the container its own network namespace (default false: share the agent's). */
  readonly isolateNetwork?: boolean;
  /** Default true: the image's files cannot be modified (writable tmpfs at /tmp and /run). */
  readonly readonlyRootfs?: boolean;
  readonly capabilities?: readonly string[];
  readonly hostname?: string;
  /** Override the image user (`uid[:gid]` or names). */
  readonly user?: string;
}

/** An OCI runtime config (the parts we write). */
export type RuntimeSpec = Record<string, unknown> & {
  process: Record<string, unknown> & {
    args: string[];
    env: string[];
    cwd: string;
    user: { uid: number; gid: number; additionalGids?: number[] };
  };
};

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

async function readRootFile(rootfs: string, path: string): Promise<string | undefined> {
  try {
    const p = await resolveInRoot(rootfs, path.split('/'), false);
    const b = await readFile(p);
    return b.length > 1024 * 1024 ? undefined : b.toString('utf8');
  } catch {
    return undefined;
  }
}

function lookup(db: string | undefined, name: string, field: number): number | undefined {
  for (const line of (db ?? '').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[field] !== undefined && /^\d+$/.test(f[field])) return Number(f[field]);
  }
  return undefined;
}

/**
 * Resolves `user[:group]` (names or numbers) against the rootfs's passwd and group files, with
 * the supplementary groups Docker gives the same image: the primary group, and, when no group
 * is named, every group listing the user as a member. runc sets only the groups the spec lists,
 * so without them a program that reads files through a group membership fails here alone; the
 * primary group is listed so that dropping it cannot bypass a deny-by-group file mode
 * (CVE-2023-25173).
 */
export async function resolveUser(
  rootfs: string,
  spec: string | undefined,
): Promise<{ uid: number; gid: number; additionalGids: number[] }> {
  const [u = '0', g] = spec === undefined || spec === '' ? [] : spec.split(':');
  const passwd = await readRootFile(rootfs, 'etc/passwd');
  const bad = (what: string): never => {
    throw imageError('IMAGE_RUNTIME_CONFIG', `cannot resolve ${what} of user ${spec}`, {
      details: { user: spec },
    });
  };
  const uid = /^\d+$/.test(u) ? Number(u) : (lookup(passwd, u, 2) ?? bad('user'));
  const group = await readRootFile(rootfs, 'etc/group');
  let gid: number;
  const gids = new Set<number>();
  if (g !== undefined && g !== '') {
    gid = /^\d+$/.test(g) ? Number(g) : (lookup(group, g, 2) ?? bad('group'));
  } else {
    // A named user's own entry (several names may share a uid), else the first with the uid.
    const line = (passwd ?? '')
      .split('\n')
      .find((l) => (/^\d+$/.test(u) ? l.split(':')[2] === String(uid) : l.split(':')[0] === u));
    const pg = line?.split(':')[3];
    gid = pg !== undefined && /^\d+$/.test(pg) ? Number(pg) : 0;
    const name = line?.split(':')[0];
    for (const l of name === undefined || name === '' ? [] : (group ?? '').split('\n')) {
      const f = l.split(':');
      const member = f[3]?.split(',').some((m) => m.trim() === name) ?? false;
      if (member && f[2] !== undefined && /^\d+$/.test(f[2])) gids.add(Number(f[2]));
    }
  }
  const additionalGids = [gid, ...[...gids].filter((x) => x !== gid)];
  if (uid > 0xffffffff || additionalGids.some((x) => x > 0xffffffff)) bad('ids');
  return { uid, gid, additionalGids };
}

/** Builds the runtime spec. */
export async function buildRuntimeSpec(o: RuntimeSpecOptions): Promise<RuntimeSpec> {
  const args =
    o.args !== undefined ? [...o.args] : [...(o.config.entrypoint ?? []), ...(o.config.cmd ?? [])];
  if (args.length === 0)
    throw imageError(
      'IMAGE_RUNTIME_CONFIG',
      'the image has no Entrypoint/Cmd and no args were given',
      {},
    );
  const env = new Map<string, string>();
  for (const e of o.config.env ?? []) {
    const i = e.indexOf('=');
    if (i > 0) env.set(e.slice(0, i), e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(o.env ?? {})) {
    if (!ENV_NAME.test(k) || v.includes('\0'))
      throw imageError('IMAGE_RUNTIME_CONFIG', `invalid environment variable ${k}`, {
        details: { name: k },
      });
    env.set(k, v);
  }
  if (!env.has('PATH'))
    env.set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  const cwd = o.config.workingDir ?? '/';
  if (!cwd.startsWith('/'))
    throw imageError('IMAGE_RUNTIME_CONFIG', 'WorkingDir must be absolute', { details: { cwd } });
  const user = await resolveUser(o.rootfs, o.user ?? o.config.user);
  const caps = [...(o.capabilities ?? DEFAULT_CAPABILITIES)];
  const readonly = o.readonlyRootfs ?? true;
  const mounts: Record<string, unknown>[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    {
      destination: '/dev/mqueue',
      type: 'mqueue',
      source: 'mqueue',
      options: ['nosuid', 'noexec', 'nodev'],
    },
    {
      destination: '/sys',
      type: 'sysfs',
      source: 'sysfs',
      options: ['nosuid', 'noexec', 'nodev', 'ro'],
    },
    {
      destination: '/tmp',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', 'mode=1777'],
    },
    {
      destination: '/run',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', 'mode=755'],
    },
  ];
  for (const f of o.files ?? []) {
    if (!f.containerPath.startsWith('/') || f.containerPath.split('/').includes('..'))
      throw imageError(
        'IMAGE_RUNTIME_CONFIG',
        `file path ${f.containerPath} must be absolute and clean`,
        {
          details: { path: f.containerPath },
        },
      );
    mounts.push({
      destination: f.containerPath,
      type: 'bind',
      source: f.hostPath,
      options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  }
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (o.isolateNetwork === true) namespaces.push({ type: 'network' });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user,
      args,
      env: [...env].map(([k, v]) => `${k}=${v}`),
      cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: o.rootPath ?? 'rootfs', readonly },
    hostname: o.hostname ?? 'cloister',
    mounts,
    linux: {
      namespaces,
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      seccomp: defaultSeccomp(),
    },
  };
}

/** Writes `config.json` into a bundle directory (whose `rootfs/` holds the unpacked image). */
export async function writeBundle(bundleDir: string, spec: RuntimeSpec): Promise<void> {
  await writeFile(join(bundleDir, 'config.json'), JSON.stringify(spec, null, 2), { mode: 0o600 });
}

export interface RunImageOptions {
  readonly bundleDir: string;
  readonly id?: string;
  /** runc binary (default `runc` on PATH). */
  readonly runc?: string;
  readonly onStdout?: (b: Buffer) => void;
  readonly onStderr?: (b: Buffer) => void;
  readonly signal?: AbortSignal;
}

/** Runs `runc run` on a bundle and resolves to the container's exit code; cleans up after. */
export async function runImage(o: RunImageOptions): Promise<number> {
  const runc = o.runc ?? 'runc';
  const id = o.id ?? `cloister-${randomBytes(6).toString('hex')}`;
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(runc, ['run', '--bundle', o.bundleDir, id], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    });
    child.stdout.on('data', (b: Buffer) => o.onStdout?.(b));
    child.stderr.on('data', (b: Buffer) => o.onStderr?.(b));
    child.on('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        reject(imageError('IMAGE_RUNTIME_UNAVAILABLE', `${runc} is not installed`, { cause: e }));
      else reject(e);
    });
    child.on('close', (c, sig) => resolve(c ?? (sig !== null ? 128 + 15 : 1)));
  });
  await new Promise<void>((resolve) => {
    const d = spawn(runc, ['delete', '--force', id], { stdio: 'ignore' });
    d.on('error', () => resolve());
    d.on('close', () => resolve());
  });
  return code;
}
