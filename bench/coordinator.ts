/**
 * Coordinator activation throughput (DESIGN §3 "Activate a workload", §7 speed): 50 concurrent
 * agents activate over TLS with sim evidence against a coordinator running in its own process
 * (so its CPU time and memory are its own). Prints activations per second and p50/p99 latency
 * (median of 3 runs), activations per coordinator CPU-second, the coordinator's RSS with 10,000
 * active instances, and, side by side, the ceiling `openssl speed` gives for the public-key
 * operations the coordinator must do for one activation:
 *
 *   - verify the sim report signature             ECDSA P-256 verify
 *   - the sim platform certificate chain          cached by exact bytes: no operation
 *   - the agent key (`publicKey` form, no CSR)     import only: no operation
 *   - sign the mesh leaf certificate               ECDSA P-256 sign
 *   - encrypt the bundle (JWE ECDH-ES)              X25519 key generation + X25519 ECDH
 *   - one TLS handshake (challenge and activate)    P-256 sign + X25519 ECDH
 *
 * The agents (load generator) run in this process, apart from the coordinator, and do real
 * per-activation work: a fresh P-256 certificate key and X25519 bundle key, a P-256 sim report
 * signature over its own nonce and keys, one TLS connection (two requests) and the bundle
 * decryption. They share the 2 cores with the
 * coordinator, so the wall-clock rate is a lower bound of what the coordinator alone can do;
 * the per-coordinator-CPU-second rate is the coordinator's own cost.
 *
 * Run as a script with `--serve DIR` it is the coordinator child process.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { buildConnector, Client, Pool } from 'undici';
import type { Dispatcher } from 'undici';
import { createECDH, generateKeyPairSync } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { SecureContext } from 'node:tls';
import { activationReportData, nonceFromBase64Url, toBase64Url } from '@cloister/protocol';
import { createCoordinator, createLogger, openBundle, p256Spki } from '@cloister/coordinator';
import { generateSimHardware, simMeasurement, simReportFrom, toHex } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { opensslSelfSignedP256 } from '@cloister/testkit';
import { CoordinatorApi } from '../packages/cli/src/client/api.js';
import { generateOwnerKey, loadOwnerKey } from '../packages/cli/src/client/local.js';
import { signAndSetManifest } from '../packages/cli/src/client/ops.js';
import { loadSimHardware, writeSimHardware } from '../packages/cli/src/sim-hardware.js';
import { fmt, median, opensslEcSpeed, opensslEcdsaVerify } from './measure.js';

const CONCURRENCY = Number(process.env['BENCH_CONCURRENCY'] ?? 50);
const RUN_SECONDS = Number(process.env['BENCH_SECONDS'] ?? 6);
const RUNS = 3;
const WARM_UP_SECONDS = Number(process.env['BENCH_WARM_UP'] ?? 3);
/** The activation rate the coordinator is to reach here (kept connections, 50 agents). */
const TARGET_RATE = 1000;
const TARGET_INSTANCES = 10_000;
const AGENT_EXE = new TextEncoder().encode('cloister bench agent');

/** One JSON POST over one of `pool`'s connections (TLS pinned to the coordinator's root). */
async function post(pool: Dispatcher, path: string, body: unknown): Promise<unknown> {
  const res = await pool.request({
    path,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const out = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode} ${out}`);
  return JSON.parse(out);
}

/**
 * TLS to the coordinator pinned to its root (`secureContext`: one parsed CA for every
 * connection, passed through to tls.connect) and no session cache: every new connection is a
 * full handshake, as a new agent's is.
 */
function coordinatorConnector(tls: SecureContext): buildConnector.connector {
  return buildConnector({ secureContext: tls, servername: 'localhost', maxCachedSessions: 0 });
}

/**
 * How the agents reach the coordinator: `fresh` opens one TLS connection per activation (full
 * handshake, no resumption; challenge and activation share it), as new agents do; `kept` keeps
 * one connection per agent across its activations, as renewing agents do.
 */
type Connections = 'fresh' | 'kept';

/**
 * A lean agent: the work a real agent must do per activation, without its start-up checks, on
 * undici (the CLI's HTTP client; a third less of the agents' CPU than node:https) and with
 * Node's crypto for its keys and bundle instead of WebCrypto and jose (a load generator plays 50
 * agents on one core). A fresh P-256 certificate key and X25519 bundle key, the challenge, a sim
 * report over activationReportData(nonce, SPKI, bundle key) signed with the platform's P-256
 * key (the evidence package's WebCrypto path, as the sim provider signs), the activation in the
 * `publicKey` form, and the bundle opened with the bundle key (openBundle: X25519, AES-GCM tag,
 * schema).
 */
async function leanActivation(
  pool: Dispatcher,
  hw: SimHardware,
  measurement: Uint8Array,
): Promise<void> {
  const spki = p256Spki(createECDH('prime256v1').generateKeys());
  const bundleKey = generateKeyPairSync('x25519');
  const bundleRaw = Buffer.from(
    bundleKey.publicKey.export({ format: 'jwk' }).x as string,
    'base64url',
  );
  const { nonce } = (await post(pool, '/v1/activate/challenge', {})) as {
    nonce: string;
  };
  const reportData = await activationReportData(nonceFromBase64Url(nonce), spki, bundleRaw);
  const data = await simReportFrom(hw, { measurement, reportData });
  const res = (await post(pool, '/v1/activate', {
    workload: 'bench',
    nonce,
    evidence: { type: 'sim', data: toBase64Url(data) },
    publicKey: toBase64Url(spki),
    bundleKey: toBase64Url(bundleRaw),
  })) as { bundle: string };
  if (openBundle(res.bundle, bundleKey.privateKey).env['MODE'] !== 'bench')
    throw new Error('unexpected bundle');
}

/** Child mode: start a coordinator and print its URL and root CA as one JSON line. */
async function serve(dir: string): Promise<void> {
  const coord = await createCoordinator({
    dataDir: join(dir, 'data'),
    listen: '127.0.0.1:0',
    ownerKeyPem: await readFile(join(dir, 'owner.pub.pem'), 'utf8'),
    simulation: { rootDir: join(dir, 'sim') },
    logger: createLogger('silent'),
  });
  process.stdout.write(`${JSON.stringify({ url: coord.url, rootCaPem: coord.rootCaPem })}\n`);
  process.on('SIGTERM', () => void coord.close().then(() => process.exit(0)));
}

/**
 * Stops the coordinator child: SIGTERM, then SIGKILL if it has not exited within 5 s, so that
 * no coordinator outlives the bench (and holds its cores and the bench lock) whatever its
 * shutdown does: a child run with `BENCH_CPU_PROF` was seen to hang after writing its profile.
 */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

async function rssMiB(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(s)?.[1]);
  return kb / 1024;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

interface ModeResult {
  rate: number;
  p50: number;
  p99: number;
  perCpu: number;
  /** Milliseconds of this process's CPU (the 50 agents) per activation. */
  agentMs: number;
}

/** CPU milliseconds (user + system) this process has used so far. */
function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Pins the coordinator (every thread) to core 0 and this load generator to core 1, as if they
 * ran on different machines: on a shared core each one's threads preempt the other's and both
 * pay for it. False (nothing pinned) without `taskset` or a second core.
 */
function pinCores(coordinatorPid: number): boolean {
  if (availableParallelism() < 2) return false;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', '0', String(coordinatorPid)], { stdio: 'ignore' });
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Full TLS handshakes per server CPU-second with the machine's OpenSSL: `openssl s_server`
 * (P-256 certificate, as the coordinator's) against `openssl s_time -new` for a few seconds,
 * the server's CPU time read from /proc. The floor for any server that does one handshake per
 * activation; median of 3.
 */
async function opensslHandshakesPerCpuSecond(dir: string): Promise<number> {
  const key = join(dir, 'hs-key.pem');
  const cert = join(dir, 'hs-cert.pem');
  opensslSelfSignedP256({ keyFile: key, certFile: cert, subject: '/CN=localhost' });
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const server = spawn(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-key',
      key,
      '-cert',
      cert,
      '-quiet',
      '-naccept',
      '1000000',
    ],
    { stdio: 'ignore' },
  );
  try {
    await new Promise((r) => setTimeout(r, 500));
    if (server.pid === undefined) throw new Error('openssl s_server did not start');
    try {
      execFileSync('taskset', ['-a', '-p', '-c', '0', String(server.pid)], { stdio: 'ignore' });
    } catch {
      // unpinned: the figure is still per server CPU-second
    }
    const rates: number[] = [];
    for (let i = 0; i < 3; i++) {
      const c0 = await cpuSeconds(server.pid);
      const out = execFileSync(
        'openssl',
        ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', '2'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
      );
      const dc = (await cpuSeconds(server.pid)) - c0;
      const n = Number(/(\d+) connections in [\d.]+s;/.exec(out)?.[1]);
      if (!Number.isFinite(n) || dc <= 0) throw new Error('cannot parse openssl s_time');
      rates.push(n / dc);
    }
    return median(rates);
  } finally {
    server.kill('SIGTERM');
  }
}

export async function benchCoordinator(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cloister-bench-coord-'));
  let child: ChildProcess | undefined;
  try {
    await writeSimHardware(join(dir, 'sim'), await generateSimHardware());
    const owner = await generateOwnerKey('owner', dir);
    child = spawn(
      process.execPath,
      [
        // BENCH_CPU_PROF=DIR writes a V8 CPU profile of the coordinator (open it in DevTools).
        ...(process.env['BENCH_CPU_PROF'] === undefined
          ? []
          : ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_CPU_PROF']}`]),
        '--conditions=source',
        '--import',
        'tsx',
        fileURLToPath(import.meta.url),
        '--serve',
        dir,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const first = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child?.stdout as NodeJS.ReadableStream });
      rl.once('line', resolve);
      child?.once('exit', (c) => reject(new Error(`coordinator exited with ${String(c)}`)));
    });
    const { url, rootCaPem } = JSON.parse(first) as { url: string; rootCaPem: string };
    const pid = child.pid as number;

    const api = new CoordinatorApi({ url, rootCaPem });
    await signAndSetManifest(
      api,
      {
        version: 1,
        trustDomain: 'bench.local',
        packages: {
          agent: { tee: 'sim', measurement: toHex(await simMeasurement(AGENT_EXE, [])) },
        },
        workloads: { bench: { package: 'agent', env: { MODE: 'bench' } } },
        owners: { owner: { publicKey: owner.publicKeyPem, roles: ['update'] } },
        policy: { allowSimulation: true },
      },
      await loadOwnerKey(owner.privateKeyPath),
    );
    await api.close();

    const hw = await loadSimHardware(join(dir, 'sim'));
    const measurement = await simMeasurement(AGENT_EXE, []);
    const target = new URL(url);
    const connect = coordinatorConnector(createSecureContext({ ca: rootCaPem }));
    const pinned = process.env['BENCH_PIN'] !== '0' && pinCores(pid);
    let total = 0;

    /** RUNS timed runs of CONCURRENCY agents activating back to back; medians. */
    const measureMode = async (mode: Connections): Promise<ModeResult> => {
      const kept = new Pool(target.origin, { connect, connections: CONCURRENCY });
      const one = async (lat: number[]): Promise<void> => {
        const t0 = performance.now();
        if (mode === 'kept') {
          await leanActivation(kept, hw, measurement);
        } else {
          const fresh = new Client(target.origin, { connect });
          try {
            await leanActivation(fresh, hw, measurement);
          } finally {
            await fresh.destroy();
          }
        }
        lat.push(performance.now() - t0);
        total++;
      };
      // Warm-up, not measured: the JIT optimises both sides' hot paths over the first thousand
      // or so activations (a run measured right after 50 was 20-30 % slower than the next).
      const warm = performance.now() + WARM_UP_SECONDS * 1000;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (performance.now() < warm) await one([]);
        }),
      );
      const runs: ModeResult[] = [];
      for (let r = 0; r < RUNS; r++) {
        const lat: number[] = [];
        const c0 = await cpuSeconds(pid);
        const a0 = ownCpuMs();
        const t0 = performance.now();
        const end = t0 + RUN_SECONDS * 1000;
        await Promise.all(
          Array.from({ length: CONCURRENCY }, async () => {
            while (performance.now() < end) await one(lat);
          }),
        );
        const dt = (performance.now() - t0) / 1000;
        const dc = (await cpuSeconds(pid)) - c0;
        const agentMs = (ownCpuMs() - a0) / lat.length;
        const x = {
          rate: lat.length / dt,
          p50: percentile(lat, 50),
          p99: percentile(lat, 99),
          perCpu: lat.length / dc,
          agentMs,
        };
        runs.push(x);
        console.log(
          `  ${mode} run ${r + 1}: ${fmt(x.rate)} /s, ${fmt(x.perCpu)} per coordinator CPU-s, agents ${fmt(x.agentMs, 2)} ms CPU each, p50 ${fmt(x.p50, 1)} ms, p99 ${fmt(x.p99, 1)} ms`,
        );
      }
      await kept.destroy();
      return {
        rate: median(runs.map((x) => x.rate)),
        p50: median(runs.map((x) => x.p50)),
        p99: median(runs.map((x) => x.p99)),
        perCpu: median(runs.map((x) => x.perCpu)),
        agentMs: median(runs.map((x) => x.agentMs)),
      };
    };
    // BENCH_MODES=kept (or fresh) measures one mode only (for profiling).
    const modes = (process.env['BENCH_MODES'] ?? 'kept,fresh').split(',');
    const results: Partial<Record<Connections, ModeResult>> = {};
    for (const mode of ['kept', 'fresh'] as const) {
      if (modes.includes(mode)) results[mode] = await measureMode(mode);
    }

    // Top up to the instance count at which memory is measured.
    const instances = Number(process.env['BENCH_INSTANCES'] ?? TARGET_INSTANCES);
    const kept = new Pool(target.origin, { connect, connections: CONCURRENCY });
    let shown = Date.now();
    while (total < instances) {
      if (Date.now() - shown > 10_000) {
        shown = Date.now();
        console.log(`  ${fmt(total)} active instances, RSS ${fmt(await rssMiB(pid), 1)} MiB`);
      }
      const n = Math.min(CONCURRENCY, instances - total);
      await Promise.all(
        Array.from({ length: n }, () => leanActivation(kept, hw, measurement).then(() => total++)),
      );
    }
    await kept.destroy();
    const rss = await rssMiB(pid);

    const v256 = opensslEcdsaVerify('p256');
    const s256 = opensslEcSpeed('ecdsap256', 'sign');
    const x25519 = opensslEcSpeed('ecdhx25519', 'op');
    // Seconds of one core per activation for the public-key work alone: the report signature,
    // the leaf signature, the JWE (X25519 key generation ~ one X25519, plus the X25519); a fresh
    // connection adds one TLS handshake (server signature + X25519).
    const keptCost = 1 / v256 + 1 / s256 + 2 / x25519;
    const freshCost = keptCost + 1 / s256 + 1 / x25519;
    const handshakes = await opensslHandshakesPerCpuSecond(dir);

    console.log(
      `activations, ${CONCURRENCY} concurrent agents over TLS, sim evidence, median of ${RUNS} x ${RUN_SECONDS} s`,
    );
    console.log(
      pinned
        ? '  (coordinator pinned to core 0, the agents to core 1: they would be on other machines)'
        : '  (coordinator and agents share the cores: taskset or a second core is missing)',
    );
    for (const [mode, r, cost, what] of [
      ['kept', results.kept, keptCost, 'one connection per agent, kept (renewals)'],
      ['fresh', results.fresh, freshCost, 'a new TLS connection per activation (new agents)'],
    ] as const) {
      if (r === undefined) continue;
      console.log(`  ${what}:`);
      console.log(
        `    throughput        ${fmt(r.rate)} /s wall clock, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms`,
      );
      if (mode === 'kept')
        console.log(
          `    target            ${fmt(TARGET_RATE)} /s on this machine: ${r.rate >= TARGET_RATE ? 'met' : 'not met'}`,
        );
      console.log(
        `    coordinator       ${fmt(r.perCpu)} activations per coordinator CPU-second (${fmt(1000 / r.perCpu, 2)} ms each)`,
      );
      console.log(
        `    agents            ${fmt(r.agentMs, 2)} ms of the load generator's CPU per activation (its core's limit: ${fmt(1000 / r.agentMs)} /s)`,
      );
      console.log(
        `    openssl ceiling   ${fmt(1 / cost)} /s per core for its public-key work: ${fmt(r.perCpu * cost * 100, 1)} %`,
      );
      if (mode === 'fresh') {
        console.log(
          `    TLS floor         ${fmt(handshakes)} full handshakes per server CPU-second (openssl s_server, s_time -new): ${fmt((r.perCpu / handshakes) * 100, 1)} %`,
        );
      }
    }
    console.log(
      `  primitives        P-256 verify ${fmt(v256)}/s, P-256 sign ${fmt(s256)}/s, X25519 ${fmt(x25519)}/s (openssl speed, one core)`,
    );
    console.log(
      `  work counted      kept: 1 P-256 verify (report), 1 P-256 sign (leaf), 2 X25519 (JWE key generation and agreement); fresh adds 1 sign + 1 X25519 (handshake)`,
    );
    console.log(`  memory            ${fmt(rss, 1)} MiB RSS with ${fmt(total)} active instances`);
  } finally {
    if (child !== undefined) await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  }
}

if (
  process.argv[2] === '--serve' &&
  process.argv[3] !== undefined &&
  process.argv[1] === fileURLToPath(import.meta.url)
) {
  await serve(process.argv[3]);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchCoordinator();
}
