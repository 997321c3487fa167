/**
 * Parser of the SEV-SNP extended-report certificate table that configfs-tsm returns in
 * `auxblob` (GHCB specification 56421, section 4.1.8.1 "SNP Extended Guest Request", certificate
 * table layout; GUIDs as in go-sev-guest `abi/abi.go`).
 *
 * The table is a list of 24-byte entries {GUID (16 bytes, RFC 4122 byte order), offset u32le,
 * length u32le} ended by an all-zero entry; offsets are relative to the start of the table. The
 * bytes come from the host (untrusted): every offset and length is bounds-checked, certificates
 * may not overlap the table, and a GUID may appear only once, so a hostile host cannot make the
 * agent read out of range or send two different VCEKs.
 */
import { agentError } from '../error-codes.js';
import type { SnpPlatformCerts } from './types.js';

const ENTRY = 24;
/** More entries than any platform uses: caps work on a hostile table. */
const MAX_ENTRIES = 64;

export const SNP_CERT_GUIDS = {
  vcek: '63da758d-e664-4564-adc5-f4b93be8accd',
  vlek: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
  ask: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ark: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
} as const;

type CertName = keyof typeof SNP_CERT_GUIDS;
const NAME_BY_GUID = new Map<string, CertName>(
  Object.entries(SNP_CERT_GUIDS).map(([k, v]) => [v, k as CertName]),
);

/** One entry of the table, as found (unknown GUIDs are kept so callers can log them). */
export interface CertTableEntry {
  readonly guid: string;
  readonly offset: number;
  readonly length: number;
}

function malformed(message: string, details: Record<string, unknown>): never {
  throw agentError('AGENT_TEE_MALFORMED', `auxblob: ${message}`, { details });
}

function u32le(b: Uint8Array, off: number, field: string): number {
  if (off + 4 > b.length) malformed(`${field} truncated`, { field, offset: off });
  return (
    ((b[off] as number) | ((b[off + 1] as number) << 8) | ((b[off + 2] as number) << 16)) +
    (b[off + 3] as number) * 0x1000000
  );
}

/** Formats 16 bytes in RFC 4122 byte order as the usual dashed lowercase GUID string. */
export function formatGuid(b: Uint8Array): string {
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Encodes a dashed GUID string as its 16 table bytes (used by tests and fakes). */
export function guidBytes(guid: string): Uint8Array {
  const hex = guid.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new TypeError(`not a GUID: ${guid}`);
  return Uint8Array.from(hex.match(/../g) ?? [], (x) => parseInt(x, 16));
}

/** Parses the table's entries, checking every bound. */
export function parseCertTableEntries(table: Uint8Array): CertTableEntry[] {
  const entries: CertTableEntry[] = [];
  for (let i = 0; ; i++) {
    const off = i * ENTRY;
    if (i > MAX_ENTRIES) malformed('too many entries', { max: MAX_ENTRIES });
    if (off + ENTRY > table.length) malformed('no terminating zero entry', { offset: off });
    const guidRaw = table.subarray(off, off + 16);
    const offset = u32le(table, off + 16, `entry[${i}].offset`);
    const length = u32le(table, off + 20, `entry[${i}].length`);
    if (guidRaw.every((x) => x === 0)) {
      if (offset !== 0 || length !== 0) {
        malformed('terminator entry has a non-zero offset or length', { entry: i });
      }
      const tableEnd = off + ENTRY;
      for (const e of entries) {
        if (e.offset < tableEnd) {
          malformed('certificate overlaps the table', { guid: e.guid, offset: e.offset });
        }
      }
      return entries;
    }
    const guid = formatGuid(guidRaw);
    if (length === 0) malformed('empty certificate entry', { entry: i, guid });
    if (offset + length > table.length) {
      malformed('certificate runs past the end of auxblob', {
        entry: i,
        guid,
        offset,
        length,
        available: table.length,
      });
    }
    if (entries.some((e) => e.guid === guid)) malformed('duplicate GUID', { entry: i, guid });
    entries.push({ guid, offset, length });
  }
}

/** The VCEK/VLEK/ASK/ARK certificates (DER) in an auxblob; unknown GUIDs are skipped. */
export function parseCertTable(table: Uint8Array): SnpPlatformCerts {
  const out: { -readonly [K in CertName]?: Uint8Array } = {};
  for (const e of parseCertTableEntries(table)) {
    const name = NAME_BY_GUID.get(e.guid);
    if (name !== undefined) out[name] = table.slice(e.offset, e.offset + e.length);
  }
  return out;
}

/** Builds a certificate table (the inverse of `parseCertTable`; fakes and tests use it). */
export function buildCertTable(certs: readonly { guid: string; der: Uint8Array }[]): Uint8Array {
  const head = (certs.length + 1) * ENTRY;
  const total = head + certs.reduce((n, c) => n + c.der.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let pos = head;
  certs.forEach((c, i) => {
    out.set(guidBytes(c.guid), i * ENTRY);
    dv.setUint32(i * ENTRY + 16, pos, true);
    dv.setUint32(i * ENTRY + 20, c.der.length, true);
    out.set(c.der, pos);
    pos += c.der.length;
  });
  return out;
}
