/**
 * A minimal DER reader (ITU-T X.690, section 8.1 identifier and length octets, section 10.1
 * definite-length minimal encoding) for the places the verifiers must walk DER themselves: the
 * signature-relevant parts of X.509 certificates and CRLs (pki/cert-cache.ts, pki/signature.ts),
 * the Intel SGX PCK certificate extension (OID 1.2.840.113741.1.13.1) and the splitting of
 * concatenated DER certificates in quote certification data.
 *
 * Every read goes through the bounded readers, so malformed input fails with a PARSE error.
 * Only single-byte tags (tag numbers < 31) and definite lengths of up to 4 octets are accepted;
 * indefinite and non-minimal lengths are rejected (DER forbids them).
 */
import { bytesAt, u8 } from '../bytes.js';
import { evidenceError } from '../error-codes.js';

/** One TLV: its tag byte, its content view and the offset just past it. */
export interface DerNode {
  readonly tag: number;
  readonly content: Uint8Array;
  /** Offset (in the parent buffer) of the first byte after this TLV. */
  readonly end: number;
}

export const DER_INTEGER = 0x02;
export const DER_BIT_STRING = 0x03;
export const DER_OCTET_STRING = 0x04;
export const DER_NULL = 0x05;
export const DER_OID = 0x06;
export const DER_ENUMERATED = 0x0a;
export const DER_SEQUENCE = 0x30;
export const DER_BOOLEAN = 0x01;

function bad(field: string, why: string): never {
  throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: ${why}`, { details: { field } });
}

/** Reads the TLV at `off` of `b`. */
export function readDer(b: Uint8Array, off: number, field: string): DerNode {
  const tag = u8(b, off, `${field}.tag`);
  if ((tag & 0x1f) === 0x1f) bad(field, 'multi-byte DER tags are not used here');
  const first = u8(b, off + 1, `${field}.length`);
  let len: number;
  let hdr: number;
  if (first < 0x80) {
    len = first;
    hdr = 2;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 4) bad(field, 'indefinite or oversized DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + u8(b, off + 2 + i, `${field}.length`);
    if (len < 0x80 || (n > 1 && u8(b, off + 2, `${field}.length`) === 0)) {
      bad(field, 'non-minimal DER length');
    }
    hdr = 2 + n;
  }
  const content = bytesAt(b, off + hdr, len, `${field}.content`);
  return { tag, content, end: off + hdr + len };
}

/** Reads every TLV of a constructed value's content (a SEQUENCE body), which must be filled exactly. */
export function readDerChildren(content: Uint8Array, field: string, max = 64): DerNode[] {
  const out: DerNode[] = [];
  let off = 0;
  while (off < content.length) {
    if (out.length >= max) bad(field, `more than ${max} elements`);
    const n = readDer(content, off, `${field}[${out.length}]`);
    out.push(n);
    off = n.end;
  }
  return out;
}

/** Expects a TLV with `tag`. */
export function expectTag(n: DerNode, tag: number, field: string): Uint8Array {
  if (n.tag !== tag)
    bad(field, `expected DER tag 0x${tag.toString(16)}, got 0x${n.tag.toString(16)}`);
  return n.content;
}

/**
 * Decodes a DER INTEGER or ENUMERATED that must be a small non-negative number (an SVN or an
 * enumeration): minimal encoding, at most 4 content octets, not negative.
 */
export function derSmallUint(n: DerNode, tag: number, field: string): number {
  const c = expectTag(n, tag, field);
  if (c.length === 0 || c.length > 5) bad(field, 'integer length out of range');
  const b0 = c[0] as number;
  if (b0 & 0x80) bad(field, 'negative integer');
  if (c.length > 1 && b0 === 0 && ((c[1] as number) & 0x80) === 0)
    bad(field, 'non-minimal integer');
  let v = 0;
  for (const x of c) v = v * 256 + x;
  if (v > 0xffffffff) bad(field, 'integer out of range');
  return v;
}

/** Dotted text of a DER OBJECT IDENTIFIER's content. */
export function derOidText(n: DerNode, field: string): string {
  const c = expectTag(n, DER_OID, field);
  if (c.length === 0 || c.length > 64) bad(field, 'bad OID length');
  const arcs: number[] = [];
  let v = 0;
  let start = true;
  for (let i = 0; i < c.length; i++) {
    const x = c[i] as number;
    if (start && x === 0x80) bad(field, 'non-minimal OID arc');
    start = false;
    v = v * 128 + (x & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) bad(field, 'OID arc too large');
    if ((x & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = v < 80 ? Math.floor(v / 40) : 2;
        arcs.push(first, v - first * 40);
      } else arcs.push(v);
      v = 0;
      start = true;
    } else if (i === c.length - 1) bad(field, 'truncated OID arc');
  }
  return arcs.join('.');
}
