/**
 * Local inputs of the client commands: files named on the command line, owner keys, and where
 * the coordinator is. Every failure is a typed usage or malformed-input error naming the file.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  webcrypto,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { NAME_PATTERN } from '@cloister/protocol';
import { cliError } from '../error-codes.js';

/** Environment variables that stand in for --coordinator and --root-ca. */
export const ENV_COORDINATOR = 'CLOISTER_COORDINATOR';
export const ENV_ROOT_CA = 'CLOISTER_ROOT_CA';

const MAX_INPUT_BYTES = 16 * 1024 * 1024;

/** Reads a text file named on the command line. */
export function readInputText(path: string, what: string): string {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (cause) {
    throw cliError('CLI_FILE_NOT_FOUND', `${what} ${path} cannot be read`, {
      cause,
      details: { file: path },
    });
  }
  if (b.length > MAX_INPUT_BYTES) {
    throw cliError('CLI_BAD_INPUT', `${what} ${path} is larger than ${MAX_INPUT_BYTES} bytes`, {
      details: { file: path },
    });
  }
  return b.toString('utf8');
}

/** Reads a PEM certificate file (the saved root CA). */
export function readRootCa(path: string): string {
  const text = readInputText(path, 'root CA');
  if (!/-----BEGIN CERTIFICATE-----/.test(text)) {
    throw cliError('CLI_BAD_INPUT', `${path} is not a PEM certificate`, {
      details: { file: path },
    });
  }
  return text;
}

/** Where to reach the coordinator and how to trust it, from flags or the environment. */
export function endpointFrom(opts: { coordinator?: string; rootCa?: string }): {
  url: string;
  rootCaPem: string;
} {
  const url = opts.coordinator ?? process.env[ENV_COORDINATOR];
  if (url === undefined || url === '') {
    throw cliError('CLI_USAGE', `pass --coordinator https://host:port (or set ${ENV_COORDINATOR})`);
  }
  const rootPath = opts.rootCa ?? process.env[ENV_ROOT_CA];
  // Talking to an unverified coordinator would hand keys and secrets to whoever answers.
  if (rootPath === undefined || rootPath === '') {
    throw cliError(
      'CLI_USAGE',
      `pass --root-ca FILE (saved by \`cloister verify --save-root FILE\`, or set ${ENV_ROOT_CA})`,
    );
  }
  return { url, rootCaPem: readRootCa(rootPath) };
}

/** An owner's private key, ready to sign, with its public key as PEM. */
export interface OwnerKey {
  readonly privateKey: CryptoKey;
  readonly publicKeyPem: string;
  /** The name derived from the file (`alice.pem` -> `alice`). */
  readonly fileName: string;
}

/** Loads an owner private key (PKCS#8 or SEC1 PEM; ECDSA P-256/P-384 or Ed25519). */
export async function loadOwnerKey(path: string): Promise<OwnerKey> {
  const text = readInputText(path, 'owner key');
  let ko;
  try {
    ko = createPrivateKey(text);
  } catch (cause) {
    throw cliError('CLI_BAD_INPUT', `${path} is not a PEM private key`, {
      cause,
      details: { file: path },
    });
  }
  const type = ko.asymmetricKeyType;
  const curve = ko.asymmetricKeyDetails?.namedCurve;
  let alg: EcKeyImportParams | { name: 'Ed25519' };
  if (type === 'ec' && curve === 'prime256v1') alg = { name: 'ECDSA', namedCurve: 'P-256' };
  else if (type === 'ec' && curve === 'secp384r1') alg = { name: 'ECDSA', namedCurve: 'P-384' };
  else if (type === 'ed25519') alg = { name: 'Ed25519' };
  else {
    throw cliError('CLI_BAD_INPUT', `${path}: owner keys are ECDSA P-256, P-384 or Ed25519`, {
      details: { file: path, type: type ?? null, curve: curve ?? null },
    });
  }
  const der = ko.export({ type: 'pkcs8', format: 'der' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']);
  const publicKeyPem = createPublicKey(ko).export({ type: 'spki', format: 'pem' }).toString();
  return { privateKey, publicKeyPem, fileName: basename(path).replace(/(\.key)?\.pem$/, '') };
}

/** Writes a new file with `mode`; never overwrites (a key must not be replaced silently). */
export async function writeNewFile(path: string, data: string, mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  let fh;
  try {
    fh = await open(path, 'wx', mode);
  } catch (cause) {
    const code = (cause as { code?: string }).code;
    throw cliError(
      code === 'EEXIST' ? 'CLI_USAGE' : 'CLI_FILE_NOT_FOUND',
      code === 'EEXIST' ? `${path} exists; refusing to overwrite it` : `${path} cannot be created`,
      { cause, details: { file: path } },
    );
  }
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Generates an owner key pair: `DIR/NAME.pem` (private, 0600) and `DIR/NAME.pub.pem`. */
export async function generateOwnerKey(
  name: string,
  dir: string,
): Promise<{ privateKeyPath: string; publicKeyPath: string; publicKeyPem: string }> {
  if (!new RegExp(NAME_PATTERN).test(name)) {
    throw cliError('CLI_USAGE', `"${name}" is not a valid owner name (${NAME_PATTERN})`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const privateKeyPath = join(dir, `${name}.pem`);
  const publicKeyPath = join(dir, `${name}.pub.pem`);
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  await writeNewFile(
    privateKeyPath,
    privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    0o600,
  );
  try {
    await writeNewFile(publicKeyPath, publicKeyPem, 0o644);
  } catch (e) {
    // A private key beside an older NAME.pub.pem that does not match it would be used later
    // (by `up`, by a retried keygen that now refuses) while the manifest names the old key.
    await rm(privateKeyPath, { force: true });
    throw e;
  }
  return { privateKeyPath, publicKeyPath, publicKeyPem };
}

/** Saves a verified root CA (replacing an older one atomically: write, fsync, rename). */
export async function writeRootCa(path: string, pem: string): Promise<void> {
  await writePublicFile(path, pem);
}

/**
 * Replaces `path` with `text` (mode 0644) through a fresh temporary file renamed into place, so
 * a reader sees the old or the new content, never a part.
 */
export async function writePublicFile(path: string, text: string): Promise<void> {
  // An unpredictable name opened with O_EXCL: in a shared directory another user could plant a
  // symlink (written through) or a file of theirs (renamed into place, theirs to change later)
  // at a name they can guess.
  const tmp = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(tmp, 'wx', 0o644);
  try {
    try {
      await fh.writeFile(text.endsWith('\n') ? text : `${text}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
