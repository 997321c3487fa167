/**
 * Image encryption benchmark: Cloister's ocicrypt layer encryption and decryption against
 * skopeo (containers/ocicrypt) on the same ≥ 500 MB image in the same run, against the
 * physical limit (`openssl speed` for AES-256-CTR, SHA-256 and HMAC-SHA256), and peak RSS for
 * a small and a large image (memory must stay flat in the image size).
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
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fmt, median, opensslEvpMBps } from './measure.js';

const root = new URL('..', import.meta.url).pathname;
const MiB = 1024 * 1024;

interface Job {
  seconds: number;
  maxRssMiB: number | undefined;
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
  return { seconds, maxRssMiB: m ? Number(m[1]) / 1024 : undefined };
}

/**
 * Writes an OCI layout with `layers` gzip layers of `layerMiB` random bytes each, streamed
 * (gzip level 0: stored blocks, so the data stays incompressible and nobody recompresses).
 */
async function makeImage(dir: string, layers: number, layerMiB: number): Promise<number> {
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
      if (!entry.write(randomBytes(MiB))) await new Promise((r) => entry.once('drain', r));
    }
    entry.end();
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

function cloister(
  op: 'encrypt' | 'decrypt',
  src: string,
  dst: string,
  key: string,
): [string, string[]] {
  const args =
    op === 'encrypt'
      ? ['image', 'convert', src, dst, '--coordinator-key', key, '--json']
      : ['image', 'decrypt', src, dst, '--key', key, '--json'];
  return [
    process.execPath,
    ['--conditions=source', '--import', 'tsx', join(root, 'bench', 'image.ts'), '--cli', ...args],
  ];
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
    const bigMiB = await makeImage(join(dir, 'big'), 4, 128);
    const smallMiB = await makeImage(join(dir, 'small'), 1, 32);
    let haveSkopeo = true;
    try {
      execFileSync('skopeo', ['--version'], { stdio: 'ignore' });
    } catch {
      haveSkopeo = false;
    }

    const runs = 3;
    const res: Record<string, number[]> = {
      ours_enc: [],
      ours_dec: [],
      skopeo_enc: [],
      skopeo_dec: [],
    };
    const rss: Record<string, number | undefined> = {};
    for (let r = 0; r < runs; r++) {
      const e = join(dir, `enc-${r}`);
      const [c1, a1] = cloister('encrypt', `oci:${join(dir, 'big')}:latest`, `oci:${e}:x`, pub);
      const je = await timed(c1, a1);
      res.ours_enc?.push(bigMiB / je.seconds);
      rss.ours_enc_big = je.maxRssMiB;
      // Both tools decrypt the same (skopeo-encrypted, jwe) image; without skopeo, ours.
      let toDecrypt = `oci:${e}:x`;
      if (haveSkopeo) {
        const se = join(dir, `senc-${r}`);
        const sj = await timed('skopeo', [
          '--insecure-policy',
          'copy',
          '-q',
          '--encryption-key',
          `jwe:${pub}`,
          `oci:${join(dir, 'big')}:latest`,
          `oci:${se}:x`,
        ]);
        res.skopeo_enc?.push(bigMiB / sj.seconds);
        rss.skopeo_enc_big = sj.maxRssMiB;
        toDecrypt = `oci:${se}:x`;
        const sd = await timed('skopeo', [
          '--insecure-policy',
          'copy',
          '-q',
          '--decryption-key',
          priv,
          toDecrypt,
          `oci:${join(dir, `sdec-${r}`)}:x`,
        ]);
        res.skopeo_dec?.push(bigMiB / sd.seconds);
        rss.skopeo_dec_big = sd.maxRssMiB;
        rmSync(join(dir, `sdec-${r}`), { recursive: true, force: true });
      }
      const [c2, a2] = cloister('decrypt', toDecrypt, `oci:${join(dir, `dec-${r}`)}:x`, priv);
      const jd = await timed(c2, a2);
      res.ours_dec?.push(bigMiB / jd.seconds);
      rss.ours_dec_big = jd.maxRssMiB;
      rmSync(join(dir, `dec-${r}`), { recursive: true, force: true });
      rmSync(join(dir, `senc-${r}`), { recursive: true, force: true });
      rmSync(e, { recursive: true, force: true });
    }
    const [c3, a3] = cloister(
      'encrypt',
      `oci:${join(dir, 'small')}:latest`,
      `oci:${join(dir, 'enc-small')}:x`,
      pub,
    );
    rss.ours_enc_small = (await timed(c3, a3)).maxRssMiB;

    const aes = opensslEvpMBps('aes-256-ctr');
    const sha = opensslEvpMBps('sha256');
    const hmac = opensslEvpMBps('sha256', 3, true);
    // Work per byte when encrypting: verify the source digest (SHA-256), hash the diff_id
    // (SHA-256; stored gzip inflates at memcpy speed), AES-CTR, HMAC, digest of the ciphertext.
    const encLimit = 1 / (1 / aes + 3 / sha + 1 / hmac);
    // Decrypting: ciphertext digest, HMAC, AES-CTR, plaintext digest, diff_id.
    const decLimit = encLimit;
    const m = (k: string): number => median(res[k] ?? []);
    const out: Record<string, unknown> = {
      imageMiB: bigMiB,
      runs,
      oursEncryptMBps: m('ours_enc'),
      oursDecryptMBps: m('ours_dec'),
      skopeoEncryptMBps: haveSkopeo ? m('skopeo_enc') : null,
      skopeoDecryptMBps: haveSkopeo ? m('skopeo_dec') : null,
      encryptVsSkopeo: haveSkopeo ? m('ours_enc') / m('skopeo_enc') : null,
      decryptVsSkopeo: haveSkopeo ? m('ours_dec') / m('skopeo_dec') : null,
      opensslAes256CtrMBps: aes,
      opensslSha256MBps: sha,
      opensslHmacSha256MBps: hmac,
      singleCoreLimitMBps: encLimit,
      encryptVsLimit: m('ours_enc') / encLimit,
      decryptVsLimit: m('ours_dec') / decLimit,
      peakRssMiB: { ...rss, smallImageMiB: smallMiB },
    };
    console.log(
      [
        `image ${bigMiB} MiB (4 incompressible layers), median of ${runs}`,
        `encrypt  cloister ${fmt(m('ours_enc'))} MB/s  skopeo ${haveSkopeo ? fmt(m('skopeo_enc')) : 'n/a'} MB/s  ratio ${haveSkopeo ? fmt(m('ours_enc') / m('skopeo_enc'), 2) : 'n/a'}`,
        `decrypt  cloister ${fmt(m('ours_dec'))} MB/s  skopeo ${haveSkopeo ? fmt(m('skopeo_dec')) : 'n/a'} MB/s  ratio ${haveSkopeo ? fmt(m('ours_dec') / m('skopeo_dec'), 2) : 'n/a'}`,
        `openssl  aes-256-ctr ${fmt(aes)} MB/s  sha256 ${fmt(sha)} MB/s  hmac-sha256 ${fmt(hmac)} MB/s  → 1-core pipeline limit ${fmt(encLimit)} MB/s`,
        `vs limit encrypt ${fmt(m('ours_enc') / encLimit, 2)}  decrypt ${fmt(m('ours_dec') / decLimit, 2)}`,
        `peak RSS cloister encrypt ${fmt(rss.ours_enc_small ?? NaN)} MiB (${smallMiB} MiB image) vs ${fmt(rss.ours_enc_big ?? NaN)} MiB (${bigMiB} MiB image); decrypt ${fmt(rss.ours_dec_big ?? NaN)} MiB; skopeo ${fmt(rss.skopeo_enc_big ?? NaN)}/${fmt(rss.skopeo_dec_big ?? NaN)} MiB`,
      ].join('\n'),
    );
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// `--cli ARGS`: run the image commands in this child process (what benchImage measures).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--cli');
  if (i >= 0) {
    const { Command } = await import('commander');
    const { registerImage } = await import('../packages/cli/src/commands/image.js');
    const program = new Command('cloister').exitOverride();
    registerImage(program, {
      io: { out: () => undefined, err: (s) => process.stderr.write(s) },
      exitCode: 0,
    });
    await program.parseAsync(process.argv.slice(i + 1), { from: 'user' });
  } else {
    console.log(JSON.stringify(await benchImage(), null, 2));
  }
}
