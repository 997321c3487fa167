/**
 * Byte helpers of the protocol package (engine-neutral: Uint8Array only). Base64url is RFC 4648 §5
 * without padding, the encoding of every binary field on the wire.
 */
import { base64url } from 'jose';
import { protocolError } from './error-codes.js';

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex. */
export function toHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += HEX[x];
  return s;
}

/** Strict hex (even length, case-insensitive) to bytes. */
export function fromHex(s: string, field = 'hex'): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: not an even-length hex string`, {
      details: { field },
    });
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Base64url without padding. */
export function toBase64Url(b: Uint8Array): string {
  return base64url.encode(b);
}

/**
 * Strict base64url (no padding, no whitespace, canonical final bits) to bytes. Strictness stops
 * two encodings of the same bytes from both being accepted (malleable signed fields).
 */
export function fromBase64Url(s: string, field = 'base64url'): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: not unpadded base64url`, {
      details: { field },
    });
  }
  let out: Uint8Array;
  try {
    out = base64url.decode(s);
  } catch (cause) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: not unpadded base64url`, {
      cause,
      details: { field },
    });
  }
  if (base64url.encode(out) !== s) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: non-canonical base64url`, {
      details: { field },
    });
  }
  return out;
}

/** Standard base64 with padding (used inside PEM). */
export function toBase64(b: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < b.length; i += 0x8000)
    bin += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(bin);
}

function fromBase64Std(s: string, field: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: not base64`, { details: { field } });
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** PEM-encodes DER bytes under `label` (64-character lines, trailing newline). */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = toBase64(der);
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Decodes every PEM block with `label` in `text`, in order. Throws when there is none or when a
 * block's body is not base64.
 */
export function fromPemAll(text: string, label: string, field = 'pem'): Uint8Array[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`, 'g');
  const out: Uint8Array[] = [];
  for (const m of text.matchAll(re))
    out.push(fromBase64Std((m[1] ?? '').replace(/\s+/g, ''), field));
  if (out.length === 0) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: no PEM ${label} block`, {
      details: { field, label },
    });
  }
  return out;
}

/** Decodes exactly one PEM block with `label`. */
export function fromPem(text: string, label: string, field = 'pem'): Uint8Array {
  const all = fromPemAll(text, label, field);
  if (all.length !== 1) {
    throw protocolError('PROTOCOL_BAD_ENCODING', `${field}: expected one PEM ${label} block`, {
      details: { field, label, found: all.length },
    });
  }
  return all[0] as Uint8Array;
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

export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** Big-endian unsigned integer of `width` bytes (up to 2^53-1). */
export function uintBe(value: number, width: 1 | 2 | 4 | 8): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0 || (width < 8 && value >= 2 ** (8 * width))) {
    throw new RangeError(`${value} does not fit ${width} bytes`);
  }
  const out = new Uint8Array(width);
  let v = value;
  for (let i = width - 1; i >= 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

/** Equality with no early exit (length leaks only). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

function buf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

/** Node's one-shot hash (Node >= 20.12), reached without depending on Node's types. */
type NodeHash = (algorithm: string, data: Uint8Array, outputEncoding: 'buffer') => Uint8Array;
const nodeHash = (
  (
    globalThis as {
      process?: { getBuiltinModule?: (id: string) => { hash?: NodeHash } | undefined };
    }
  ).process?.getBuiltinModule?.('node:crypto') as { hash?: NodeHash } | undefined
)?.hash;

/**
 * A digest: Node's synchronous one when the engine has it (a SHA-256 of a key costs 3 µs there
 * against 40-130 µs through WebCrypto's thread-pool job, and an activation takes four), else
 * WebCrypto.
 */
async function digest(name: 'SHA-256' | 'SHA-512', data: Uint8Array): Promise<Uint8Array> {
  if (nodeHash !== undefined) {
    const d = nodeHash(name === 'SHA-256' ? 'sha256' : 'sha512', data, 'buffer');
    return new Uint8Array(d.buffer, d.byteOffset, d.length); // a plain Uint8Array view, no copy
  }
  return new Uint8Array(await globalThis.crypto.subtle.digest(name, buf(data)));
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return digest('SHA-256', data);
}
export async function sha512(data: Uint8Array): Promise<Uint8Array> {
  return digest('SHA-512', data);
}
export { buf as arrayBufferView };
