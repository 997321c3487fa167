/**
 * Byte helpers shared by the engine-neutral packages (`@cloister/evidence`,
 * `@cloister/protocol`): Uint8Array in and out, no Node types. Parsers that reject input
 * stay in their packages, which own the error codes; these functions cannot fail. Also the
 * one place those packages find the engine's native crypto (`nodeCrypto`) for their fast paths.
 */

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex. */
export function toHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += HEX[x];
  return s;
}

/** Standard base64 with padding. */
export function toBase64(b: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < b.length; i += 0x8000)
    bin += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** UTF-8 encode. */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** Equality with no early exit (the length leaks, nothing else). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

/** The bytes as an ArrayBuffer-backed array (WebCrypto's types want one): a copy only if needed. */
export function arrayBufferView(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

/**
 * The parts of Node's `node:crypto` the engine-neutral packages use for their fast paths, typed
 * here so that they need no Node types: the one-shot hash (Node >= 20.12) and ECDSA
 * verification with a WebCrypto key.
 */
export interface NodeCrypto {
  readonly hash?: (algorithm: string, data: Uint8Array, outputEncoding: 'buffer') => Uint8Array;
  readonly verify: (
    algorithm: string,
    data: Uint8Array,
    key: { key: unknown; dsaEncoding: 'ieee-p1363' },
    signature: Uint8Array,
  ) => boolean;
  readonly KeyObject: { from(key: CryptoKey): unknown };
}

/**
 * `node:crypto` when the engine is Node (>= 20.16, `process.getBuiltinModule`), else undefined:
 * each fast path falls back to WebCrypto, which every engine has.
 */
export const nodeCrypto = (
  globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }
).process?.getBuiltinModule?.('node:crypto') as NodeCrypto | undefined;

const nodeHash = nodeCrypto?.hash;

type DigestName = 'SHA-256' | 'SHA-384' | 'SHA-512';
const NODE_NAME: Record<DigestName, string> = {
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
};

/** Above this, a digest goes to WebCrypto's thread pool instead of blocking the caller. */
const SYNC_DIGEST_MAX = 1024 * 1024;

/**
 * A digest: Node's synchronous one-shot hash when the engine has it and the input is small
 * (about 3 µs for a key or a report, against 40-130 µs for a WebCrypto job sent to the thread
 * pool and back; an activation takes four on each side), else WebCrypto, which also keeps a
 * large input (an executable being measured) from stalling the event loop.
 */
async function digest(name: DigestName, data: Uint8Array): Promise<Uint8Array> {
  if (nodeHash !== undefined && data.length <= SYNC_DIGEST_MAX) {
    const d = nodeHash(NODE_NAME[name], data, 'buffer');
    return new Uint8Array(d.buffer, d.byteOffset, d.length); // a plain Uint8Array view, no copy
  }
  return new Uint8Array(await globalThis.crypto.subtle.digest(name, arrayBufferView(data)));
}

export function sha256(data: Uint8Array): Promise<Uint8Array> {
  return digest('SHA-256', data);
}
export function sha384(data: Uint8Array): Promise<Uint8Array> {
  return digest('SHA-384', data);
}
export function sha512(data: Uint8Array): Promise<Uint8Array> {
  return digest('SHA-512', data);
}
