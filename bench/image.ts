/**
 * Image encryption benchmark: Cloister's ocicrypt layer encryption and decryption against
 * skopeo (containers/ocicrypt) on the same ≥ 500 MB image in the same run, against the
 * physical limits (`openssl speed` for AES-256-CTR, SHA-256 and HMAC-SHA256, a measured zlib
 * inflate): the slowest primitive on the path, and all of them per byte; and peak RSS for a
 * small and a large image (memory must stay flat in the image size).
 *
 * Each measured conversion runs in a child process, so wall time and peak RSS belong to that
 * one job. Files live in a temp directory that is removed at the end.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fmt, median, opensslEvpMBps } from './measure.js';

const root = new URL('..', import.meta.url).pathname;
const MiB = 1024 * 1024;

interface Job {
  seconds: number;
  maxRssMiB: number | undefined;
  /** Cloister only: the copy timed inside the process (printed by the `--cli` mode). */
  copySeconds: number | undefined;
}

/** Runs a command, returning wall seconds and (through /usr/bin/time) peak RSS. */
async function timed(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Job> {
  const useTime = (() => {
    try {
      execFileSync('/usr/bin/time', ['-f', '%M', 'true'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  const argv = useTime ? ['-f', 'RSSKB=%M', cmd, ...args] : args;
  const bin = useTime ? '/usr/bin/time' : cmd;
  const t0 = performance.now();
  const stderr = await new Promise<string>((resolve, reject) => {
    const p = spawn(bin, argv, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(err) : reject(new Error(`${cmd} failed (${code}): ${err}`)),
    );
  });
  const seconds = (performance.now() - t0) / 1000;
  const m = /RSSKB=(\d+)/.exec(stderr);
  const c = /COPY_SECONDS=([\d.]+)/.exec(stderr);
  return {
    seconds,
    maxRssMiB: m ? Number(m[1]) / 1024 : undefined,
    copySeconds: c ? Number(c[1]) : undefined,
  };
}

/**
 * Writes an OCI layout with `layers` gzip layers of `layerMiB` random bytes each, streamed
 * (gzip level 0: stored blocks, so the data stays incompressible and nobody recompresses).
 */
export async function makeImage(dir: string, layers: number, layerMiB: number): Promise<number> {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const put = (b: string): { digest: string; size: number } => {
    const digest = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), b);
    return { digest, size: Buffer.byteLength(b) };
  };
  const diffIds: string[] = [];
  const descs: { mediaType: string; digest: string; size: number }[] = [];
  for (let i = 0; i < layers; i++) {
    const pack = tar.pack();
    const tarHash = createHash('sha256');
    const blobHash = createHash('sha256');
    let size = 0;
    const tmp = join(dir, `layer-${i}.tmp`);
    const gz = createGzip({ level: 0 });
    const written = pipeline(
      pack,
      new Transform({
        transform(c: Buffer, _e, cb) {
          tarHash.update(c);
          cb(null, c);
        },
      }),
      gz,
      new Transform({
        transform(c: Buffer, _e, cb) {
          blobHash.update(c);
          size += c.length;
          cb(null, c);
        },
      }),
      createWriteStream(tmp),
    );
    const entry = pack.entry({ name: `data-${i}.bin`, size: layerMiB * MiB, mode: 0o644 });
    for (let k = 0; k < layerMiB; k++) {
      const block = randomBytes(MiB);
      if (k === layerMiB - 1) entry.end(block);
      else if (!entry.write(block)) await new Promise<void>((r) => entry.once('drain', () => r()));
    }
    pack.finalize();
    await written;
    const digest = `sha256:${blobHash.digest('hex')}`;
    renameSync(tmp, join(dir, 'blobs', 'sha256', digest.slice(7)));
    diffIds.push(`sha256:${tarHash.digest('hex')}`);
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size });
  }
  const config = put(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const manifest = put(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: descs,
    }),
  );
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'latest' },
        },
      ],
    }),
  );
  return layers * layerMiB;
}

/**
 * `*-unchecked`: `--no-verify-diff-ids`, the work skopeo does (blob digests, and the HMAC when
 * decrypting; no inflate and no diff_id).
 */
type Op = 'encrypt' | 'encrypt-unchecked' | 'decrypt' | 'decrypt-unchecked';

/**
 * The measured child: the built `cloister image` commands (what `bin/cloister.js` runs, so the
 * start-up is the user's), and the copy timed inside the process on stderr.
 */
const CLI_CHILD = `
const { Command } = await import('commander');
const { registerImage } = await import(${JSON.stringify(
  pathToFileURL(join(root, 'packages', 'cli', 'dist', 'commands', 'image.js')).href,
)});
const program = new Command('cloister').exitOverride();
registerImage(program, { io: { out: () => undefined, err: (s) => process.stderr.write(s) }, exitCode: 0 });
const t0 = performance.now();
await program.parseAsync(process.argv.slice(1), { from: 'user' });
process.stderr.write('COPY_SECONDS=' + (performance.now() - t0) / 1000 + '\\n');
`;

function cloister(op: Op, src: string, dst: string, key: string): [string, string[]] {
  const args =
    op === 'decrypt' || op === 'decrypt-unchecked'
      ? [
          'image',
          'decrypt',
          src,
          dst,
          '--key',
          key,
          '--json',
          ...(op === 'decrypt-unchecked' ? ['--no-verify-diff-ids'] : []),
        ]
      : [
          'image',
          'convert',
          src,
          dst,
          '--coordinator-key',
          key,
          '--json',
          ...(op === 'encrypt-unchecked' ? ['--no-verify-diff-ids'] : []),
        ];
  return [process.execPath, ['--input-type=module', '-e', CLI_CHILD, '--', ...args]];
}

/** How `inflateMBps` measures, for the printout. */
const INFLATE_METHOD =
  "Node's zlib (the one Cloister uses), one core: createGunzip with 256 KiB output chunks " +
  '(as the diff_id check runs it) over 64 MiB of random data gzipped at level 0 like the bench ' +
  'layers, fed 1 MiB at a time to a sink that drops the output; MB/s of output, median of 3';

/**
 * One-core zlib inflate throughput (MB/s of output) on stored-block gzip like the bench layers,
 * streamed as the diff_id check consumes it (see INFLATE_METHOD).
 */
async function inflateMBps(runs = 3): Promise<number> {
  const plain = randomBytes(64 * MiB);
  const gz = gzipSync(plain, { level: 0 });
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await pipeline(
      Readable.from(
        (function* () {
          for (let o = 0; o < gz.length; o += MiB) yield gz.subarray(o, o + MiB);
        })(),
      ),
      createGunzip({ chunkSize: 256 * 1024 }),
      new Writable({ highWaterMark: MiB, write: (_c, _e, cb) => cb() }),
    );
    xs.push(plain.length / 1e6 / ((performance.now() - t0) / 1000));
  }
  return median(xs);
}

interface Run {
  /** MB/s over the process wall time (includes the tool's start-up). */
  wall: number;
  /** MB/s over (big-image wall − tiny-image wall): the per-byte rate without start-up. */
  steady: number;
  /** Cloister only: MB/s over the copy itself, timed inside the process. */
  copy?: number;
  rssMiB: number | undefined;
}

/** The benchmark: figures as a record (also printed). */
export async function benchImage(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'cloister-bench-image-'));
  try {
    const kp = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pub = join(dir, 'k.pub');
    const priv = join(dir, 'k.pem');
    writeFileSync(pub, kp.publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(priv, kp.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const layers = 4;
    const bigMiB = await makeImage(join(dir, 'big'), layers, 128);
    // Same shape as the big image (layer count, so the same layers run at once), 4x less data:
    // peak RSS must not grow with the bytes. Large enough that the garbage collector has run
    // its steady cycle (V8 lets up to ~64 MB of freed external buffers wait for a collection,
    // a constant that a smaller image never reaches).
    const smallMiB = await makeImage(join(dir, 'small'), layers, 32);
    const tinyMiB = await makeImage(join(dir, 'tiny'), 1, 1);
    const MB = (mib: number): number => (mib * MiB) / 1e6;
    let haveSkopeo = true;
    try {
      execFileSync('skopeo', ['--version'], { stdio: 'ignore' });
    } catch {
      haveSkopeo = false;
    }
    const skopeo = (args: string[]): Promise<Job> =>
      timed('skopeo', ['--insecure-policy', 'copy', '-q', ...args]);
    const ours = (op: Op, src: string, dst: string, key: string): Promise<Job> =>
      timed(...cloister(op, src, dst, key));
    const rate = (mib: number, big: Job, tiny: Job, copy?: number): Run => ({
      wall: MB(mib) / big.seconds,
      steady: MB(mib - tinyMiB) / Math.max(big.seconds - tiny.seconds, 1e-3),
      ...(copy === undefined ? {} : { copy }),
      rssMiB: big.maxRssMiB,
    });

    // The tiny image gives each tool's fixed cost per invocation (start-up, keys, metadata).
    const tiny = async (): Promise<Record<string, Job>> => {
      const r: Record<string, Job> = {};
      const te = join(dir, 'tiny-enc');
      r.oursEnc = await ours('encrypt', `oci:${join(dir, 'tiny')}:latest`, `oci:${te}:x`, pub);
      rmSync(te, { recursive: true, force: true });
      r.oursEncUnchecked = await ours(
        'encrypt-unchecked',
        `oci:${join(dir, 'tiny')}:latest`,
        `oci:${te}:x`,
        pub,
      );
      r.oursDec = await ours('decrypt', `oci:${te}:x`, `oci:${join(dir, 'tiny-dec')}:x`, priv);
      rmSync(join(dir, 'tiny-dec'), { recursive: true, force: true });
      r.oursDecUnchecked = await ours(
        'decrypt-unchecked',
        `oci:${te}:x`,
        `oci:${join(dir, 'tiny-dec')}:x`,
        priv,
      );
      if (haveSkopeo) {
        const ts = join(dir, 'tiny-senc');
        r.skopeoEnc = await skopeo([
          '--encryption-key',
          `jwe:${pub}`,
          `oci:${join(dir, 'tiny')}:latest`,
          `oci:${ts}:x`,
        ]);
        r.skopeoDec = await skopeo([
          '--decryption-key',
          priv,
          `oci:${ts}:x`,
          `oci:${join(dir, 'tiny-sdec')}:x`,
        ]);
      }
      for (const d of ['tiny-enc', 'tiny-dec', 'tiny-senc', 'tiny-sdec'])
        rmSync(join(dir, d), { recursive: true, force: true });
      return r;
    };

    // Medians of at least 3 runs; more on a busy machine (BENCH_IMAGE_RUNS=5).
    const runs = Math.max(3, Number(process.env.BENCH_IMAGE_RUNS ?? 3) || 3);
    const res: Record<
      'oursEnc' | 'oursEncUnchecked' | 'oursDec' | 'oursDecUnchecked' | 'skopeoEnc' | 'skopeoDec',
      Run[]
    > = {
      oursEnc: [],
      oursEncUnchecked: [],
      oursDec: [],
      oursDecUnchecked: [],
      skopeoEnc: [],
      skopeoDec: [],
    };
    for (let r = 0; r < runs; r++) {
      const t = await tiny();
      const e = join(dir, `enc-${r}`);
      const je = await ours('encrypt', `oci:${join(dir, 'big')}:latest`, `oci:${e}:x`, pub);
      res.oursEnc.push(
        rate(bigMiB, je, t.oursEnc as Job, je.copySeconds && MB(bigMiB) / je.copySeconds),
      );
      const eu = join(dir, `encu-${r}`);
      const ju = await ours(
        'encrypt-unchecked',
        `oci:${join(dir, 'big')}:latest`,
        `oci:${eu}:x`,
        pub,
      );
      res.oursEncUnchecked.push(
        rate(bigMiB, ju, t.oursEncUnchecked as Job, ju.copySeconds && MB(bigMiB) / ju.copySeconds),
      );
      rmSync(eu, { recursive: true, force: true });
      // Both tools decrypt the same (skopeo-encrypted, jwe) image; without skopeo, ours.
      let toDecrypt = `oci:${e}:x`;
      if (haveSkopeo) {
        const se = join(dir, `senc-${r}`);
        const sj = await skopeo([
          '--encryption-key',
          `jwe:${pub}`,
          `oci:${join(dir, 'big')}:latest`,
          `oci:${se}:x`,
        ]);
        res.skopeoEnc.push(rate(bigMiB, sj, t.skopeoEnc as Job));
        toDecrypt = `oci:${se}:x`;
        const sd = await skopeo([
          '--decryption-key',
          priv,
          toDecrypt,
          `oci:${join(dir, `sdec-${r}`)}:x`,
        ]);
        res.skopeoDec.push(rate(bigMiB, sd, t.skopeoDec as Job));
        rmSync(join(dir, `sdec-${r}`), { recursive: true, force: true });
      }
      const jd = await ours('decrypt', toDecrypt, `oci:${join(dir, `dec-${r}`)}:x`, priv);
      res.oursDec.push(
        rate(bigMiB, jd, t.oursDec as Job, jd.copySeconds && MB(bigMiB) / jd.copySeconds),
      );
      rmSync(join(dir, `dec-${r}`), { recursive: true, force: true });
      const du = await ours(
        'decrypt-unchecked',
        toDecrypt,
        `oci:${join(dir, `decu-${r}`)}:x`,
        priv,
      );
      res.oursDecUnchecked.push(
        rate(bigMiB, du, t.oursDecUnchecked as Job, du.copySeconds && MB(bigMiB) / du.copySeconds),
      );
      rmSync(join(dir, `decu-${r}`), { recursive: true, force: true });
      rmSync(join(dir, `senc-${r}`), { recursive: true, force: true });
      rmSync(e, { recursive: true, force: true });
    }
    // Memory must not grow with the image: the same job on a 128 MiB image of the same shape.
    const se = join(dir, 'enc-small');
    const smallEnc = await ours('encrypt', `oci:${join(dir, 'small')}:latest`, `oci:${se}:x`, pub);
    const smallDec = await ours('decrypt', `oci:${se}:x`, `oci:${join(dir, 'dec-small')}:x`, priv);

    const aes = opensslEvpMBps('aes-256-ctr');
    const sha = opensslEvpMBps('sha256');
    const hmac = opensslEvpMBps('sha256', 3, true);
    const inflate = await inflateMBps();
    // The primitives every byte passes through (the layers are gzip, stored blocks, so inflate
    // is memcpy + CRC-32, and nothing recompresses):
    //   encrypt: SHA-256 (source digest) → inflate → SHA-256 (diff_id) → AES-256-CTR →
    //            HMAC-SHA256 → SHA-256 (digest of the encrypted blob)
    //   decrypt: HMAC-SHA256 → AES-256-CTR → SHA-256 (digest of the decrypted blob) → inflate
    //            → SHA-256 (diff_id); the layout blob's own digest is not recomputed, its HMAC
    //            binds it (docs/adr/0006-hmac-binds-local-layer-blobs.md)
    // Two bounds:
    // - the issue's: the slowest primitive on the path, one core (no tool can stream faster
    //   than its slowest stage runs on one core, were everything else free or elsewhere);
    // - all primitives per byte: 1 / Σ(1/rate) on one core, × cores when the work is split
    //   evenly over the cores (the bound for doing all of it, which Cloister must: it checks
    //   every digest, the HMAC and the diff_ids).
    const primitives = {
      'aes-256-ctr': aes,
      sha256: sha,
      'hmac-sha256': hmac,
      'zlib inflate': inflate,
    } as const;
    const [slowestName, slowest] = Object.entries(primitives).reduce((a, b) =>
      b[1] < a[1] ? b : a,
    );
    const perByte = 3 / sha + 1 / hmac + 1 / aes + 1 / inflate;
    const decryptPerByte = perByte - 1 / sha;
    const oneCore = 1 / perByte;
    const decryptOneCore = 1 / decryptPerByte;
    const cores = availableParallelism();
    const allCores = cores / perByte;
    const decryptAllCores = cores / decryptPerByte;
    // Skopeo's work (--no-verify-diff-ids): no inflate and one SHA-256 less, both directions.
    const uncheckedSlowest = Math.min(aes, sha, hmac);
    const uncheckedAllCores = cores / (2 / sha + 1 / hmac + 1 / aes);
    const uncheckedDecryptAllCores = cores / (1 / sha + 1 / hmac + 1 / aes);
    const med = (k: keyof typeof res, f: keyof Run): number =>
      median(res[k].map((x) => Number(x[f] ?? NaN)));
    const perRun = (k: keyof typeof res, f: keyof Run): string =>
      res[k].map((x) => fmt(Number(x[f] ?? NaN))).join(' / ');
    const out: Record<string, unknown> = {
      imageMiB: bigMiB,
      layers,
      runs,
      perRun: res,
      median: Object.fromEntries(
        (Object.keys(res) as (keyof typeof res)[]).map((k) => [
          k,
          { wall: med(k, 'wall'), steady: med(k, 'steady'), copy: med(k, 'copy') },
        ]),
      ),
      ratioToSkopeo: haveSkopeo
        ? {
            encryptSteady: med('oursEnc', 'steady') / med('skopeoEnc', 'steady'),
            encryptUncheckedSteady: med('oursEncUnchecked', 'steady') / med('skopeoEnc', 'steady'),
            decryptSteady: med('oursDec', 'steady') / med('skopeoDec', 'steady'),
            decryptUncheckedSteady: med('oursDecUnchecked', 'steady') / med('skopeoDec', 'steady'),
            encryptWall: med('oursEnc', 'wall') / med('skopeoEnc', 'wall'),
            decryptWall: med('oursDec', 'wall') / med('skopeoDec', 'wall'),
          }
        : null,
      openssl: { aes256ctr: aes, sha256: sha, hmacSha256: hmac },
      zlibInflateStored: inflate,
      zlibInflateMethod: INFLATE_METHOD,
      encryptChecksDiffIds: true,
      limit: {
        slowestPrimitive: { name: slowestName, mbps: slowest },
        oneCore,
        decryptOneCore,
        cores,
        allCores,
        decryptAllCores,
        unchecked: {
          slowestPrimitive: uncheckedSlowest,
          allCores: uncheckedAllCores,
          decryptAllCores: uncheckedDecryptAllCores,
        },
      },
      ratioToLimit: {
        encryptSlowestPrimitive: med('oursEnc', 'steady') / slowest,
        decryptSlowestPrimitive: med('oursDec', 'steady') / slowest,
        encryptOneCore: med('oursEnc', 'steady') / oneCore,
        decryptOneCore: med('oursDec', 'steady') / decryptOneCore,
        encryptAllCores: med('oursEnc', 'steady') / allCores,
        decryptAllCores: med('oursDec', 'steady') / decryptAllCores,
      },
      peakRssMiB: {
        encrypt: {
          [`${bigMiB}MiB`]: res.oursEnc.map((x) => x.rssMiB),
          [`${smallMiB}MiB`]: smallEnc.maxRssMiB,
        },
        decrypt: {
          [`${bigMiB}MiB`]: res.oursDec.map((x) => x.rssMiB),
          [`${smallMiB}MiB`]: smallDec.maxRssMiB,
        },
        skopeo: {
          encrypt: res.skopeoEnc.map((x) => x.rssMiB),
          decrypt: res.skopeoDec.map((x) => x.rssMiB),
        },
      },
    };
    // The issue's targets, judged on the steady figures: at least 5x skopeo both ways, at least
    // half the slowest primitive, and peak RSS flat in the image size (within 15 %).
    const targetLines = (): string[] => {
      const verdict = (ok: boolean): string => (ok ? 'met' : 'not met');
      const vsSkopeo = (a: keyof typeof res, b: keyof typeof res): string =>
        haveSkopeo
          ? `${fmt(med(a, 'steady') / med(b, 'steady'), 2)}x ${verdict(med(a, 'steady') / med(b, 'steady') >= 5)}`
          : 'n/a';
      const half = (k: keyof typeof res, limit: number): string =>
        `${fmt(med(k, 'steady') / limit, 2)} ${verdict(med(k, 'steady') / limit >= 0.5)}`;
      const flat = (big: (number | undefined)[], small: number | undefined): boolean =>
        small !== undefined && big.every((x) => x !== undefined && x <= small * 1.15);
      const rssFlat =
        flat(
          res.oursEnc.map((x) => x.rssMiB),
          smallEnc.maxRssMiB,
        ) &&
        flat(
          res.oursDec.map((x) => x.rssMiB),
          smallDec.maxRssMiB,
        );
      return [
        `targets  >= 5x skopeo: encrypt ${vsSkopeo('oursEnc', 'skopeoEnc')}, decrypt ${vsSkopeo('oursDec', 'skopeoDec')};  with skopeo's work: encrypt ${vsSkopeo('oursEncUnchecked', 'skopeoEnc')}, decrypt ${vsSkopeo('oursDecUnchecked', 'skopeoDec')}`,
        `         >= 0.5 of the slowest primitive: encrypt ${half('oursEnc', slowest)}, decrypt ${half('oursDec', slowest)};  with skopeo's work: encrypt ${half('oursEncUnchecked', uncheckedSlowest)}, decrypt ${half('oursDecUnchecked', uncheckedSlowest)}`,
        `         peak RSS flat in the image size (${bigMiB} MiB within 15 % of ${smallMiB} MiB): ${verdict(rssFlat)}`,
      ];
    };
    const sk = (k: 'skopeoEnc' | 'skopeoDec', f: keyof Run): string =>
      haveSkopeo ? `${fmt(med(k, f))} (${perRun(k, f)})` : 'n/a';
    const ratio = (a: keyof typeof res, b: keyof typeof res, f: keyof Run): string =>
      haveSkopeo ? fmt(med(a, f) / med(b, f), 2) : 'n/a';
    const rssList = (xs: (number | undefined)[]): string => xs.map((x) => fmt(x ?? NaN)).join('/');
    console.log(
      [
        `image ${bigMiB} MiB (${layers} layers of incompressible data, gzip stored blocks), ${runs} runs: median (per run) in MB/s`,
        `  steady = (${bigMiB} - ${tinyMiB} MiB) / (wall of the ${bigMiB} MiB job - wall of a ${tinyMiB} MiB job): per-byte rate, start-up excluded for both tools`,
        `  wall   = ${bigMiB} MiB / process wall time, start-up included (Cloister: the built CLI, as bin/cloister.js runs it)`,
        `  copy   = ${bigMiB} MiB / time of the copy measured inside the Cloister process`,
        `encrypt  cloister steady ${fmt(med('oursEnc', 'steady'))} (${perRun('oursEnc', 'steady')})  wall ${fmt(med('oursEnc', 'wall'))} (${perRun('oursEnc', 'wall')})  copy ${fmt(med('oursEnc', 'copy'))} (${perRun('oursEnc', 'copy')})`,
        `         skopeo   steady ${sk('skopeoEnc', 'steady')}  wall ${sk('skopeoEnc', 'wall')}`,
        `         ratio    steady ${ratio('oursEnc', 'skopeoEnc', 'steady')}  wall ${ratio('oursEnc', 'skopeoEnc', 'wall')}`,
        `encrypt  --no-verify-diff-ids (skopeo's work)  steady ${fmt(med('oursEncUnchecked', 'steady'))} (${perRun('oursEncUnchecked', 'steady')})  wall ${fmt(med('oursEncUnchecked', 'wall'))}  copy ${fmt(med('oursEncUnchecked', 'copy'))}`,
        `         ratio    steady ${ratio('oursEncUnchecked', 'skopeoEnc', 'steady')}  wall ${ratio('oursEncUnchecked', 'skopeoEnc', 'wall')}`,
        `decrypt  cloister steady ${fmt(med('oursDec', 'steady'))} (${perRun('oursDec', 'steady')})  wall ${fmt(med('oursDec', 'wall'))} (${perRun('oursDec', 'wall')})  copy ${fmt(med('oursDec', 'copy'))} (${perRun('oursDec', 'copy')})`,
        `         skopeo   steady ${sk('skopeoDec', 'steady')}  wall ${sk('skopeoDec', 'wall')}`,
        `         ratio    steady ${ratio('oursDec', 'skopeoDec', 'steady')}  wall ${ratio('oursDec', 'skopeoDec', 'wall')}`,
        `decrypt  --no-verify-diff-ids (skopeo's work)  steady ${fmt(med('oursDecUnchecked', 'steady'))} (${perRun('oursDecUnchecked', 'steady')})  wall ${fmt(med('oursDecUnchecked', 'wall'))}  copy ${fmt(med('oursDecUnchecked', 'copy'))}`,
        `         ratio    steady ${ratio('oursDecUnchecked', 'skopeoDec', 'steady')}  wall ${ratio('oursDecUnchecked', 'skopeoDec', 'wall')}`,
        `modes    cloister (default) also checks each layer against the config's diff_id (inflate + SHA-256 per byte), skopeo does not; both tools check the HMAC when decrypting and blob digests otherwise (Cloister: the HMAC binds a layout blob, ADR 6)`,
        `primitives, one core: openssl speed -bytes 16384: aes-256-ctr ${fmt(aes)}  sha256 ${fmt(sha)}  hmac-sha256 ${fmt(hmac)};  zlib inflate ${fmt(inflate)}`,
        `         (inflate: ${INFLATE_METHOD})`,
        `limit 1  slowest primitive on the path (the issue's limit): ${slowestName} ${fmt(slowest)} MB/s;  target 50% = ${fmt(slowest / 2)} MB/s`,
        `limit 2  all primitives per byte, encrypt 3 x SHA-256 + HMAC-SHA256 + AES-256-CTR + inflate, decrypt one SHA-256 less:`,
        `         encrypt one core 1 / (3/${fmt(sha)} + 1/${fmt(hmac)} + 1/${fmt(aes)} + 1/${fmt(inflate)}) = ${fmt(oneCore)} MB/s;  ${cores} cores, split evenly: ${fmt(allCores)} MB/s`,
        `         decrypt one core ${fmt(decryptOneCore)} MB/s;  ${cores} cores, split evenly: ${fmt(decryptAllCores)} MB/s`,
        `vs limit encrypt ${fmt(med('oursEnc', 'steady') / slowest, 2)} of limit 1, ${fmt(med('oursEnc', 'steady') / allCores, 2)} of limit 2 (${cores} cores), ${fmt(med('oursEnc', 'steady') / oneCore, 2)} of limit 2 (one core)`,
        `         decrypt ${fmt(med('oursDec', 'steady') / slowest, 2)} of limit 1, ${fmt(med('oursDec', 'steady') / decryptAllCores, 2)} of limit 2 (${cores} cores), ${fmt(med('oursDec', 'steady') / decryptOneCore, 2)} of limit 2 (one core)`,
        `         --no-verify-diff-ids (no inflate, one SHA-256 less): slowest primitive ${fmt(uncheckedSlowest)} MB/s, all on ${cores} cores ${fmt(uncheckedAllCores)} MB/s encrypting, ${fmt(uncheckedDecryptAllCores)} decrypting;`,
        `         encrypt ${fmt(med('oursEncUnchecked', 'steady') / uncheckedSlowest, 2)} and ${fmt(med('oursEncUnchecked', 'steady') / uncheckedAllCores, 2)}, decrypt ${fmt(med('oursDecUnchecked', 'steady') / uncheckedSlowest, 2)} and ${fmt(med('oursDecUnchecked', 'steady') / uncheckedDecryptAllCores, 2)} of them`,
        `peak RSS MiB  cloister encrypt ${rssList(res.oursEnc.map((x) => x.rssMiB))} (${bigMiB} MiB image) vs ${fmt(smallEnc.maxRssMiB ?? NaN)} (${smallMiB} MiB, also ${layers} layers);  decrypt ${rssList(res.oursDec.map((x) => x.rssMiB))} vs ${fmt(smallDec.maxRssMiB ?? NaN)};  skopeo ${rssList(res.skopeoEnc.map((x) => x.rssMiB))} / ${rssList(res.skopeoDec.map((x) => x.rssMiB))}`,
        ...targetLines(),
      ].join('\n'),
    );
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await benchImage(), null, 2));
}
