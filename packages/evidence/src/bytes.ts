/**
 * Bounded reads over untrusted bytes. Every read names the field it reads, so a truncated or
 * malformed input fails with a PARSE error that says where, never with a RangeError.
 * Reads return views (`subarray`), not copies.
 */
import { evidenceError } from './error-codes.js';

export { bytesEqual, concatBytes, toBase64, toHex, utf8 } from '@cloister/bytes';

function need(b: Uint8Array, off: number, len: number, field: string): void {
  if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > b.length) {
    throw evidenceError(
      'EVIDENCE_TRUNCATED',
      `${field}: needs ${len} bytes at offset ${off}, input has ${b.length}`,
      {
        details: { field, offset: off, length: len, available: b.length },
      },
    );
  }
}

/** A view of `len` bytes at `off`. */
export function bytesAt(b: Uint8Array, off: number, len: number, field: string): Uint8Array {
  need(b, off, len, field);
  return b.subarray(off, off + len);
}

export function u8(b: Uint8Array, off: number, field: string): number {
  need(b, off, 1, field);
  return b[off] as number;
}

export function u16le(b: Uint8Array, off: number, field: string): number {
  need(b, off, 2, field);
  return (b[off] as number) | ((b[off + 1] as number) << 8);
}

export function u32le(b: Uint8Array, off: number, field: string): number {
  need(b, off, 4, field);
  return (
    ((b[off] as number) | ((b[off + 1] as number) << 8) | ((b[off + 2] as number) << 16)) +
    (b[off + 3] as number) * 0x1000000
  );
}

export function u64le(b: Uint8Array, off: number, field: string): bigint {
  return BigInt(u32le(b, off, field)) | (BigInt(u32le(b, off + 4, field)) << 32n);
}

export function u16be(b: Uint8Array, off: number, field: string): number {
  need(b, off, 2, field);
  return ((b[off] as number) << 8) | (b[off + 1] as number);
}

export function u32be(b: Uint8Array, off: number, field: string): number {
  need(b, off, 4, field);
  return (
    (b[off] as number) * 0x1000000 +
    (((b[off + 1] as number) << 16) | ((b[off + 2] as number) << 8) | (b[off + 3] as number))
  );
}

export function u64be(b: Uint8Array, off: number, field: string): bigint {
  return (BigInt(u32be(b, off, field)) << 32n) | BigInt(u32be(b, off + 4, field));
}

/** Parses hex (case-insensitive, optional whitespace between bytes is not allowed). */
export function fromHex(s: string, field = 'hex'): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not an even-length hex string`, {
      details: { field },
    });
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Standard or URL-safe base64 (padding optional) to bytes, strictly. */
export function fromBase64(s: string, field = 'base64'): Uint8Array {
  const std = s.replace(/-/g, '+').replace(/_/g, '/').replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(std) || std.replace(/=+$/, '').length % 4 === 1) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not base64`, { details: { field } });
  }
  const bin = atob(std.padEnd(Math.ceil(std.length / 4) * 4, '='));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function isAllZero(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/** Strict UTF-8 decode (fatal on invalid sequences) as a PARSE error. */
export function fromUtf8(b: Uint8Array, field: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch (cause) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not UTF-8`, {
      cause,
      details: { field },
    });
  }
}
