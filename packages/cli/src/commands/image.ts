/**
 * `cloister image convert|inspect|decrypt`: encrypt an image for the coordinator (ocicrypt
 * format, readable by skopeo / containerd imgcrypt / CoCo), print its reference values and
 * the manifest snippet, inspect an image, or decrypt one with a private key.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  copyImage,
  IMAGE_KEY_FILE,
  loadPrivateKey,
  loadPublicKey,
  openDestination,
  openSource,
  parseImageReference,
  pinnedReference,
  resolveImage,
  referenceValues,
  type Platform,
  type ProgressEvent,
  type ReferenceValues,
  type WrapRecipient,
} from '@cloister/image';
import type { CommandContext } from '../main.js';
import { cliError } from '../error-codes.js';
import { endpointFrom, ENV_ROOT_CA } from '../client/local.js';
import { printJson } from '../output.js';

function readKeyFile(path: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (cause) {
    throw cliError('CLI_FILE_NOT_FOUND', `cannot read ${path}`, { cause, details: { file: path } });
  }
}

function parseRecipient(spec: string): WrapRecipient {
  if (!spec.startsWith('jwe:'))
    throw cliError('CLI_USAGE', `--recipient ${spec}: only jwe:KEYFILE is supported`, {
      details: { recipient: spec },
    });
  const file = spec.slice(4);
  return loadPublicKey(readKeyFile(file), file);
}

/** A progress bar on stderr when it is a TTY; silent otherwise. */
function progressBar(enabled: boolean): (e: ProgressEvent) => void {
  if (!enabled || !process.stderr.isTTY) return () => undefined;
  let lastLine = '';
  return (e) => {
    let line = '';
    if (e.phase === 'layer' && e.total !== undefined && e.layers !== undefined) {
      const frac = e.total > 0 ? Math.min(1, (e.bytes ?? 0) / e.total) : 1;
      const width = 30;
      const filled = Math.round(frac * width);
      line = `layer ${(e.layer ?? 0) + 1}/${e.layers} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(
        (e.bytes ?? 0) / 1048576
      ).toFixed(1)}/${(e.total / 1048576).toFixed(1)} MiB`;
    } else if (e.phase === 'done') line = '';
    else line = `${e.phase}...`;
    if (line === lastLine) return;
    lastLine = line;
    process.stderr.write(`\r\x1b[K${line}`);
  };
}

/**
 * The part of `manifest.json` that runs this image: the workload's `image` with the reference
 * values (the schema's fields, ready to paste), and for an image encrypted to a user's key
 * rather than the coordinator's, the secret that carries the key and the file it is delivered
 * in (docs/images.md "Key release").
 */
function manifestSnippet(
  name: string,
  reference: string,
  rv: ReferenceValues,
  keys: 'coordinator' | 'user-key',
): Record<string, unknown> {
  const image = {
    ref: reference,
    manifestDigest: rv.manifestDigest,
    configDigest: rv.configDigest,
    diffIds: rv.diffIds,
  };
  if (keys === 'coordinator') return { workloads: { [name]: { image } } };
  return {
    secrets: { imageKey: { type: 'plain', userDefined: true } },
    workloads: {
      [name]: { image, files: { [IMAGE_KEY_FILE]: '{{ raw .secrets.imageKey }}' } },
    },
  };
}

function printReference(ctx: CommandContext, rv: ReferenceValues): void {
  ctx.io.out(`manifest  ${rv.manifestDigest} (${rv.manifestMediaType})`);
  ctx.io.out(`config    ${rv.configDigest}`);
  ctx.io.out(`platform  ${rv.platform.os}/${rv.platform.architecture}`);
  for (const [i, l] of rv.layers.entries())
    ctx.io.out(
      `layer ${i}   ${l.digest} ${l.encrypted ? `encrypted [${l.keySchemes.join(', ')}]` : 'plain'} diff_id ${rv.diffIds[i] ?? '?'}`,
    );
}

/**
 * The coordinator's image key, read over TLS pinned to the verified root CA: the TLS key is
 * bound into the coordinator's attestation, so this is the key of the attested coordinator.
 */
async function fetchImageKey(
  coordinator: string,
  rootCa: string | undefined,
): Promise<WrapRecipient> {
  // The API client (undici, the protocol schemas) only when a coordinator is named.
  const { CoordinatorApi } = await import('../client/api.js');
  const api = new CoordinatorApi(
    endpointFrom({ coordinator, ...(rootCa === undefined ? {} : { rootCa }) }),
  );
  try {
    const { publicKey } = await api.imageKey();
    return loadPublicKey(new Uint8Array(Buffer.from(publicKey)), `${coordinator}/v1/image-key`);
  } finally {
    await api.close();
  }
}

/** `--platform OS/ARCH[/VARIANT]` as the image package's platform. */
function platformOf(arg: string): Platform {
  const [os = '', architecture = '', variant] = arg.split('/');
  return { os, architecture, ...(variant === undefined ? {} : { variant }) };
}

/** Registry options from `--insecure-http`. */
function registryOptions(o: { insecureHttp?: boolean }): { allowInsecureHttp?: boolean } {
  return o.insecureHttp === true ? { allowInsecureHttp: true } : {};
}

/** Registers `cloister image ...`. */
export function registerImage(program: Command, ctx: CommandContext): void {
  const image = program.command('image').description('Convert, inspect and decrypt OCI images');

  image
    .command('convert')
    .description('Encrypt an image (ocicrypt format) and print its reference values')
    .argument('<src>', 'oci:DIR[:TAG] | docker-archive:FILE | docker://REGISTRY/REPO:TAG')
    .argument('<dst>', 'oci:DIR[:TAG] | docker://REGISTRY/REPO:TAG')
    .option(
      '--recipient <jwe:KEYFILE>',
      'wrap layer keys to this public key (repeatable)',
      (v: string, p: string[]) => [...p, v],
      [],
    )
    .option(
      '--coordinator <URL>',
      "wrap layer keys to this coordinator's image key (provider.cloister), fetched over TLS pinned to --root-ca",
    )
    .option('--root-ca <FILE>', `the coordinator's verified root CA (or ${ENV_ROOT_CA})`)
    .option(
      '--coordinator-key <FILE>',
      'wrap layer keys to this coordinator image key (PEM, from GET /v1/image-key) instead',
    )
    .option(
      '--no-verify-diff-ids',
      "skip checking each source layer against the config's diff_id (as skopeo does; the agent's pull always checks)",
    )
    .option('--workload <NAME>', 'workload name used in the manifest snippet', 'app')
    .option('--platform <OS/ARCH>', 'platform to select from an index', 'linux/amd64')
    .option('--insecure-http', 'speak plain HTTP to a registry that is not on loopback')
    .option('--json', 'print JSON')
    .action(
      async (
        srcArg: string,
        dstArg: string,
        o: {
          recipient: string[];
          coordinator?: string;
          rootCa?: string;
          coordinatorKey?: string;
          verifyDiffIds: boolean;
          workload: string;
          platform: string;
          insecureHttp?: boolean;
          json?: boolean;
        },
      ) => {
        const recipients = o.recipient.map(parseRecipient);
        if (o.coordinator !== undefined && o.coordinatorKey !== undefined)
          throw cliError('CLI_USAGE', 'give --coordinator URL or --coordinator-key FILE, not both');
        const coordinatorKey =
          o.coordinator !== undefined
            ? await fetchImageKey(o.coordinator, o.rootCa)
            : o.coordinatorKey === undefined
              ? undefined
              : loadPublicKey(readKeyFile(o.coordinatorKey), o.coordinatorKey);
        if (recipients.length === 0 && coordinatorKey === undefined)
          throw cliError(
            'CLI_USAGE',
            'give --coordinator URL --root-ca FILE (or --coordinator-key FILE) and/or --recipient jwe:KEYFILE',
            {},
          );
        const reg = registryOptions(o);
        const srcRef = parseImageReference(srcArg);
        const dstRef = parseImageReference(dstArg);
        const src = openSource(srcRef, reg);
        try {
          const rv = await copyImage(src, openDestination(dstRef, reg), {
            recipients,
            ...(coordinatorKey === undefined ? {} : { coordinatorKey }),
            verifyDiffIds: o.verifyDiffIds,
            platform: platformOf(o.platform),
            onProgress: progressBar(o.json !== true),
          });
          const snippet = manifestSnippet(
            o.workload,
            pinnedReference(dstRef, rv.manifestDigest),
            rv,
            coordinatorKey !== undefined ? 'coordinator' : 'user-key',
          );
          if (o.json === true) printJson(ctx.io, { referenceValues: rv, manifestSnippet: snippet });
          else {
            if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
            printReference(ctx, rv);
            ctx.io.out('\nmanifest.json snippet:');
            ctx.io.out(JSON.stringify(snippet, null, 2));
          }
        } finally {
          await src.close();
        }
      },
    );

  image
    .command('inspect')
    .description('Show an image: digests, diff_ids, layers and their encryption')
    .argument('<src>', 'oci:DIR[:TAG] | docker-archive:FILE | docker://REGISTRY/REPO:TAG')
    .option('--platform <OS/ARCH>', 'platform to select from an index', 'linux/amd64')
    .option('--insecure-http', 'speak plain HTTP to a registry that is not on loopback')
    .option('--json', 'print JSON')
    .action(
      async (srcArg: string, o: { platform: string; insecureHttp?: boolean; json?: boolean }) => {
        const src = openSource(parseImageReference(srcArg), registryOptions(o));
        try {
          const r = await resolveImage(src, platformOf(o.platform));
          const rv = referenceValues(r.manifestBlob, r.manifest, r.config);
          const runtime = {
            entrypoint: r.config.entrypoint ?? null,
            cmd: r.config.cmd ?? null,
            env: r.config.env ?? [],
            workingDir: r.config.workingDir ?? null,
            user: r.config.user ?? null,
          };
          if (o.json === true)
            printJson(ctx.io, { referenceValues: rv, indexDigest: r.top.digest, config: runtime });
          else {
            printReference(ctx, rv);
            ctx.io.out(
              `entrypoint ${JSON.stringify(runtime.entrypoint)} cmd ${JSON.stringify(runtime.cmd)}`,
            );
          }
        } finally {
          await src.close();
        }
      },
    );

  image
    .command('decrypt')
    .description('Decrypt an image with a private key (every layer authenticated before use)')
    .argument('<src>', 'encrypted image reference')
    .argument('<dst>', 'destination reference')
    .requiredOption(
      '--key <PRIVATE-KEY>',
      'private key file (repeatable)',
      (v: string, p: string[]) => [...p, v],
      [],
    )
    .option(
      '--no-verify-diff-ids',
      "skip checking each decrypted layer against the config's diff_id (as skopeo does; digests and HMACs are still checked)",
    )
    .option('--platform <OS/ARCH>', 'platform to select from an index', 'linux/amd64')
    .option('--insecure-http', 'speak plain HTTP to a registry that is not on loopback')
    .option('--json', 'print JSON')
    .action(
      async (
        srcArg: string,
        dstArg: string,
        o: {
          key: string[];
          verifyDiffIds: boolean;
          platform: string;
          insecureHttp?: boolean;
          json?: boolean;
        },
      ) => {
        const keys = o.key.map((f) => loadPrivateKey(readKeyFile(f), f));
        const reg = registryOptions(o);
        const src = openSource(parseImageReference(srcArg), reg);
        try {
          const rv = await copyImage(src, openDestination(parseImageReference(dstArg), reg), {
            decryptKeys: keys,
            verifyDiffIds: o.verifyDiffIds,
            platform: platformOf(o.platform),
            onProgress: progressBar(o.json !== true),
          });
          if (o.json === true) printJson(ctx.io, { referenceValues: rv });
          else {
            if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
            printReference(ctx, rv);
          }
        } finally {
          await src.close();
        }
      },
    );
}
