/**
 * The ocicrypt keyprovider `cmd` protocol (containers/ocicrypt `keywrap/keyprovider/
 * keyprovider.go`, `docs/keyprovider.md`): one JSON request on stdin, one JSON answer on stdout.
 *
 *   keywrap:   {"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"cloister":["<b64 arg>"]}},
 *               "optsdata":"<b64 PrivateOptions>"}}  →  {"keywrapresults":{"annotation":"<b64>"}}
 *   keyunwrap: {"op":"keyunwrap","keyunwrapparams":{"annotation":"<b64>"}}
 *              →  {"keyunwrapresults":{"optsdata":"<b64 PrivateOptions>"}}
 *
 * The annotation bytes are a JWE (JSON serialization) to the coordinator key, so images made by
 * `skopeo copy --encryption-key provider:cloister:KEY` and by `cloister image convert
 * --coordinator-key KEY` are the same format. Unwrapping needs the coordinator's private key;
 * inside an attested agent it comes from key release, here from `CLOISTER_KEYPROVIDER_KEY`.
 * The rest of the DecryptConfig ocicrypt sends (other schemes' private keys, passwords) is
 * ignored and never logged.
 */
import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { imageError } from './error-codes.js';
import { loadPrivateKey, loadPublicKey, type WrapRecipient } from './keys.js';
import { CLOISTER_PROVIDER, parsePrivateOptions, unwrapJwe, wrapJwe } from './ocicrypt.js';

/** Environment variables the keyprovider reads. */
export const KEYPROVIDER_ENV = {
  /** Path of the coordinator public key used when `provider:cloister` has no argument. */
  publicKey: 'CLOISTER_COORDINATOR_KEY',
  /** Path of the private key used to unwrap (supplied by the agent after attestation). */
  privateKey: 'CLOISTER_KEYPROVIDER_KEY',
} as const;

export interface KeyproviderContext {
  /** Reads a key file (injectable for tests). */
  readonly readKey?: (path: string) => Promise<Uint8Array>;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Private keys already in memory (the agent after key release); tried before the env file. */
  readonly privateKeys?: readonly KeyObject[];
}

function protocolError(msg: string, cause?: unknown): Error {
  return imageError('IMAGE_KEYPROVIDER_PROTOCOL', msg, cause === undefined ? {} : { cause });
}

function record(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw protocolError(`${what} must be an object`);
  return v as Record<string, unknown>;
}

function b64bytes(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v))
    throw protocolError(`${what} must be base64`);
  return new Uint8Array(Buffer.from(v, 'base64'));
}

async function coordinatorRecipient(
  arg: string | undefined,
  ctx: KeyproviderContext,
): Promise<WrapRecipient> {
  const read = ctx.readKey ?? ((p: string) => readFile(p).then((b) => new Uint8Array(b)));
  const env = ctx.env ?? process.env;
  const path =
    arg !== undefined && arg !== '' && arg !== 'Enabled' ? arg : env[KEYPROVIDER_ENV.publicKey];
  if (path === undefined || path === '')
    throw imageError(
      'IMAGE_KEY_INVALID',
      `no coordinator key: use provider:${CLOISTER_PROVIDER}:KEYFILE or set ${KEYPROVIDER_ENV.publicKey}`,
      {},
    );
  let bytes: Uint8Array;
  try {
    bytes = await read(path);
  } catch (cause) {
    throw imageError('IMAGE_KEY_INVALID', `cannot read coordinator key ${path}`, {
      cause,
      details: { file: path },
    });
  }
  return loadPublicKey(bytes, path);
}

async function unwrapKeys(ctx: KeyproviderContext): Promise<KeyObject[]> {
  const keys = [...(ctx.privateKeys ?? [])];
  const env = ctx.env ?? process.env;
  const path = env[KEYPROVIDER_ENV.privateKey];
  if (path !== undefined && path !== '') {
    const read = ctx.readKey ?? ((p: string) => readFile(p).then((b) => new Uint8Array(b)));
    let bytes: Uint8Array;
    try {
      bytes = await read(path);
    } catch (cause) {
      throw imageError('IMAGE_KEY_INVALID', `cannot read ${KEYPROVIDER_ENV.privateKey}`, { cause });
    }
    keys.push(loadPrivateKey(bytes, path));
  }
  if (keys.length === 0)
    throw imageError(
      'IMAGE_NO_KEY',
      `no private key: set ${KEYPROVIDER_ENV.privateKey} (the agent supplies it after attestation)`,
      {},
    );
  return keys;
}

/** Handles one keyprovider request (the bytes read from stdin) and returns the answer bytes. */
export async function handleKeyproviderRequest(
  input: Uint8Array,
  ctx: KeyproviderContext = {},
): Promise<Uint8Array> {
  if (input.length > 1024 * 1024) throw protocolError('request is larger than 1 MiB');
  let req: Record<string, unknown>;
  try {
    req = record(JSON.parse(Buffer.from(input).toString('utf8')), 'request');
  } catch (cause) {
    if ((cause as { code?: string }).code === 'IMAGE_KEYPROVIDER_PROTOCOL') throw cause;
    throw protocolError('request is not JSON', cause);
  }
  if (req.op === 'keywrap') {
    const p = record(req.keywrapparams, 'keywrapparams');
    const ec = record(p.ec, 'keywrapparams.ec');
    const params =
      ec.Parameters === undefined || ec.Parameters === null
        ? {}
        : record(ec.Parameters, 'ec.Parameters');
    const mine = params[CLOISTER_PROVIDER];
    // One entry per `provider:cloister[:KEY]` skopeo was given, all in one request (ocicrypt
    // EncryptWithKeyProvider): the layer key is wrapped to each, none is dropped silently.
    const args: (string | undefined)[] =
      Array.isArray(mine) && mine.length > 0
        ? mine.map((m, i) =>
            Buffer.from(b64bytes(m, `Parameters.${CLOISTER_PROVIDER}[${i}]`)).toString('utf8'),
          )
        : [undefined];
    const opts = b64bytes(p.optsdata, 'keywrapparams.optsdata');
    parsePrivateOptions(opts); // refuse to wrap something that is not layer-key options
    const recipients: WrapRecipient[] = [];
    for (const arg of args) recipients.push(await coordinatorRecipient(arg, ctx));
    const jwe = await wrapJwe(opts, recipients);
    return Buffer.from(
      JSON.stringify({ keywrapresults: { annotation: Buffer.from(jwe).toString('base64') } }),
    );
  }
  if (req.op === 'keyunwrap') {
    const p = record(req.keyunwrapparams, 'keyunwrapparams');
    const annotation = b64bytes(p.annotation, 'keyunwrapparams.annotation');
    const opts = await unwrapJwe(annotation, await unwrapKeys(ctx));
    parsePrivateOptions(opts);
    return Buffer.from(
      JSON.stringify({ keyunwrapresults: { optsdata: Buffer.from(opts).toString('base64') } }),
    );
  }
  throw protocolError(`unknown op ${JSON.stringify(req.op)}`);
}

/** Runs the keyprovider over process streams; resolves to the exit code (0 ok, 1 failure). */
export async function runKeyprovider(
  stdin: AsyncIterable<Buffer | string>,
  write: (s: Uint8Array) => void,
  writeErr: (s: string) => void,
  ctx: KeyproviderContext = {},
): Promise<number> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of stdin) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    total += b.length;
    if (total > 1024 * 1024) {
      writeErr('cloister keyprovider: request too large\n');
      return 1;
    }
    chunks.push(b);
  }
  try {
    write(await handleKeyproviderRequest(new Uint8Array(Buffer.concat(chunks)), ctx));
    return 0;
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'INTERNAL';
    writeErr(`cloister keyprovider: ${code}: ${(e as Error).message}\n`);
    return 1;
  }
}
