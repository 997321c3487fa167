/**
 * The two X.509 extensions that say what a certificate's key may sign: basicConstraints (RFC
 * 5280 section 4.2.1.9) and keyUsage (section 4.2.1.3), decoded from their extnValue with the
 * bounded DER reader (ITU-T X.690 section 10). pki/path.ts enforces them on every certificate
 * that issues another certificate or a CRL.
 *
 * Decoded here rather than through the X.509 library, which reads BER: these values decide
 * whether a key may act as a CA, so they are held to one exact encoding and anything else is
 * CERT_MALFORMED, never read generously. The one leniency is the count of unused bits in
 * keyUsage: DER's named-bit-list rule (X.690 section 11.2.2) wants trailing zero bits dropped,
 * but AMD's ASK and ASVK certificates encode keyCertSign alone as `03 02 01 04` (one unused bit
 * where the rule gives two). Unused bits must still be zero.
 */
import { isCloisterError } from '@cloister/errors';
import { evidenceError } from '../error-codes.js';
import {
  DER_BIT_STRING,
  DER_BOOLEAN,
  DER_INTEGER,
  DER_SEQUENCE,
  derSmallUint,
  readDer,
  readDerChildren,
} from './der.js';

export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';

/** keyUsage bits (RFC 5280 section 4.2.1.3) as a mask: bit n of the BIT STRING is `1 << n`. */
export const KEY_USAGE = {
  digitalSignature: 1 << 0,
  nonRepudiation: 1 << 1,
  keyEncipherment: 1 << 2,
  dataEncipherment: 1 << 3,
  keyAgreement: 1 << 4,
  keyCertSign: 1 << 5,
  cRLSign: 1 << 6,
  encipherOnly: 1 << 7,
  decipherOnly: 1 << 8,
} as const;

/** A decoded basicConstraints extension. */
export interface BasicConstraints {
  readonly ca: boolean;
  /** pathLenConstraint, when present (only with cA TRUE). */
  readonly pathLen: number | undefined;
}

function bad(field: string, extension: string, why: string): never {
  throw evidenceError('CERT_MALFORMED', `${field}: malformed ${extension}: ${why}`, {
    details: { field, extension },
  });
}

/** Runs `decode`, turning a DER reader error into CERT_MALFORMED for `extension`. */
function decoding<T>(field: string, extension: string, decode: () => T): T {
  try {
    return decode();
  } catch (cause) {
    if (!isCloisterError(cause) || cause.code === 'CERT_MALFORMED') throw cause;
    throw evidenceError('CERT_MALFORMED', `${field}: malformed ${extension}`, {
      cause,
      details: { field, extension },
    });
  }
}

/**
 * Decodes a basicConstraints extnValue: `SEQUENCE { cA BOOLEAN DEFAULT FALSE,
 * pathLenConstraint INTEGER (0..MAX) OPTIONAL }`, exactly. In DER, cA TRUE is the octet 0xff
 * and cA FALSE (the default) is left out, never written (X.690 sections 11.1 and 11.5); RFC
 * 5280 forbids a pathLenConstraint without cA TRUE. Throws CERT_MALFORMED otherwise.
 */
export function parseBasicConstraints(value: Uint8Array, field: string): BasicConstraints {
  const ext = 'basicConstraints';
  return decoding(field, ext, () => {
    const top = readDer(value, 0, field);
    if (top.tag !== DER_SEQUENCE || top.end !== value.length) bad(field, ext, 'not one SEQUENCE');
    const parts = readDerChildren(top.content, field, 2);
    let i = 0;
    let ca = false;
    if (parts[0]?.tag === DER_BOOLEAN) {
      const b = parts[0].content;
      if (b.length !== 1 || b[0] !== 0xff) bad(field, ext, 'cA is not the DER encoding of TRUE');
      ca = true;
      i++;
    }
    let pathLen: number | undefined;
    const next = parts[i];
    if (next !== undefined) {
      pathLen = derSmallUint(next, DER_INTEGER, `${field}.pathLenConstraint`);
      if (!ca) bad(field, ext, 'pathLenConstraint without cA');
      i++;
    }
    if (i !== parts.length) bad(field, ext, 'unexpected element');
    return { ca, pathLen };
  });
}

/**
 * Decodes a keyUsage extnValue (`BIT STRING`, at most the nine bits RFC 5280 defines) into a
 * mask of {@link KEY_USAGE} bits. At least one bit must be set (RFC 5280 section 4.2.1.3) and
 * the unused bits must be zero. Throws CERT_MALFORMED otherwise.
 */
export function parseKeyUsage(value: Uint8Array, field: string): number {
  const ext = 'keyUsage';
  return decoding(field, ext, () => {
    const n = readDer(value, 0, field);
    if (n.tag !== DER_BIT_STRING || n.end !== value.length) bad(field, ext, 'not one BIT STRING');
    const unused = n.content[0];
    const bits = n.content.subarray(1);
    if (unused === undefined || unused > 7) bad(field, ext, 'bad unused-bit count');
    if (bits.length === 0 || bits.length > 2) bad(field, ext, 'bad length');
    if (((bits[bits.length - 1] as number) & ((1 << unused) - 1)) !== 0) {
      bad(field, ext, 'unused bits set');
    }
    let mask = 0;
    bits.forEach((octet, i) => {
      for (let j = 0; j < 8; j++) if (octet & (0x80 >> j)) mask |= 1 << (i * 8 + j);
    });
    if (mask === 0) bad(field, ext, 'no bit set');
    if (mask >= KEY_USAGE.decipherOnly << 1) bad(field, ext, 'a bit beyond decipherOnly set');
    return mask;
  });
}
