/**
 * Byte helpers of the protocol package (engine-neutral: Uint8Array only): the decoders, which
 * refuse bad input with the protocol's error codes, over `@cloister/bytes`. Base64url is RFC
 * 4648 §5 without padding, the encoding of every binary field on the wire.
 */
import { toBase64 } from '@cloister/bytes';
import { base64url } from 'jose';
import { protocolError } from './error-codes.js';

export {
  arrayBufferView,
  bytesEqual,
  concatBytes,
  sha256,
  sha512,
  toBase64,
  toHex,
  utf8,
} from '@cloister/bytes';

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
