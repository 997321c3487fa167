/**
 * Measurement helpers shared by the benchmarks: repeated timed runs reported as medians (the
 * machine is shared and noisy), CPU time next to wall time (so a rate can be given per core),
 * and the physical limits `openssl speed` measures on the same machine.
 */
import { execFileSync } from 'node:child_process';

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export interface Rate {
  /** Operations per wall-clock second (median of runs). */
  readonly perSecond: number;
  /** Operations per CPU-second of this process (user+sys; median of runs): the per-core rate. */
  readonly perCpuSecond: number;
  readonly runs: number;
}

/** Runs `op` in a loop for about `seconds` per run, `runs` times; returns median rates. */
export async function measureRate(
  op: () => unknown,
  { seconds = 1, runs = 5, warmup = 20 }: { seconds?: number; runs?: number; warmup?: number } = {},
): Promise<Rate> {
  for (let i = 0; i < warmup; i++) await op();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < runs; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < seconds * 1000) {
      await op();
      n++;
    }
    const dt = (performance.now() - t0) / 1000;
    const dc = process.cpuUsage(c0);
    wall.push(n / dt);
    cpu.push(n / ((dc.user + dc.system) / 1e6));
  }
  return { perSecond: median(wall), perCpuSecond: median(cpu), runs };
}

/**
 * `openssl speed ALG` on one core, median of `runs`: ECDSA signatures or verifications per
 * second, or ECDH operations per second.
 */
export function opensslEcSpeed(
  alg: 'ecdsap256' | 'ecdsap384' | 'ecdhp256' | 'ecdhx25519',
  column: 'sign' | 'verify' | 'op',
  runs = 3,
): number {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const out = execFileSync('openssl', ['speed', '-seconds', '1', alg], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    // "256 bits ecdsa (nistp256) 0.0000s 0.0001s 29170.3 10206.4" (sign/s, verify/s)
    // "256 bits ecdh (nistp256) 0.0001s 15241.7" (op/s)
    const line = out.split('\n').find((l) => /bits ec(dsa|dh) \((nistp|X25519)/.test(l)) ?? '';
    const cols = line.trim().split(/\s+/);
    const v = Number(column === 'sign' ? cols.at(-2) : cols.at(-1));
    if (!Number.isFinite(v)) throw new Error(`cannot parse openssl speed output for ${alg}`);
    xs.push(v);
  }
  return median(xs);
}

/** `openssl speed` ECDSA verifications per second on one core, median of `runs`. */
export function opensslEcdsaVerify(curve: 'p256' | 'p384', runs = 3): number {
  return opensslEcSpeed(curve === 'p256' ? 'ecdsap256' : 'ecdsap384', 'verify', runs);
}

/** `openssl speed -evp ALG` throughput in MB/s for 16 KiB blocks, median of `runs`. */
export function opensslEvpMBps(alg: string, runs = 3, hmac = false): number {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const args = hmac
      ? ['speed', '-seconds', '1', '-bytes', '16384', '-hmac', alg]
      : ['speed', '-seconds', '1', '-bytes', '16384', '-evp', alg];
    const out = execFileSync('openssl', args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const last = out.trim().split('\n').at(-1) ?? '';
    const kbps = Number(last.trim().split(/\s+/).at(-1)?.replace(/k$/, ''));
    if (!Number.isFinite(kbps)) throw new Error(`cannot parse openssl speed output for ${alg}`);
    xs.push((kbps * 1000) / 1e6);
  }
  return median(xs);
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}
