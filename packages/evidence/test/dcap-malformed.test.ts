// Hand-made malformed DCAP quotes, PCK extensions and collateral: each is refused with the
// expected code and layer, never with a TypeError or RangeError.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';
import type { VerificationError } from '@cloister/errors';
import { isCloisterError } from '@cloister/errors';
import {
  parseDcapQuote,
  parseIntelCollateral,
  parsePckExtension,
  verifyDcapQuote,
  type IntelCollateralJson,
} from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

const is =
  (code: string, layer = 'PARSE') =>
  (e: unknown): boolean => {
    assert.ok(isCloisterError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.equal((e as VerificationError).layer, layer);
    return true;
  };
const le16 = (b: Uint8Array, off: number, v: number): void => {
  b[off] = v & 0xff;
  b[off + 1] = v >> 8;
};
const le32 = (b: Uint8Array, off: number, v: number): void => {
  new DataView(b.buffer, b.byteOffset).setUint32(off, v, true);
};
const copy = (p: string): Uint8Array => new Uint8Array(readVector(p));

test('empty, short and unknown-version quotes', () => {
  assert.throws(() => parseDcapQuote(new Uint8Array()), is('EVIDENCE_TRUNCATED'));
  assert.throws(() => parseDcapQuote(new Uint8Array(47)), is('EVIDENCE_UNSUPPORTED_VERSION'));
  const h = new Uint8Array(48);
  le16(h, 0, 4);
  le16(h, 2, 2);
  assert.throws(() => parseDcapQuote(h), is('EVIDENCE_TRUNCATED'));
  for (const v of [0, 1, 2, 6, 0xffff]) {
    le16(h, 0, v);
    assert.throws(() => parseDcapQuote(h), is('EVIDENCE_UNSUPPORTED_VERSION'));
  }
});

test('unknown key type, TEE type and body type are unsupported', { skip }, () => {
  let q = copy('tdx/phala-tdx-v4.quote.bin');
  le16(q, 2, 3);
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('tdx/phala-tdx-v4.quote.bin');
  le32(q, 4, 0x82);
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('sgx/phala-sgx-v3.quote.bin');
  le32(q, 4, 0x81); // TDX needs v4+
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('tdx/gtdx-v5.quote.bin');
  le16(q, 48, 4);
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('tdx/gtdx-v5.quote.bin');
  le16(q, 48, 1); // SGX body in a TDX quote
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_BAD_FIELD'));
  q = copy('tdx/gtdx-v5.quote.bin');
  le32(q, 50, 584); // size does not match type 3
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_BAD_FIELD'));
});

test('bad lengths and certification data types', { skip }, () => {
  let q = copy('tdx/phala-tdx-v4.quote.bin');
  le32(q, 632, 0xffffffff);
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_TRUNCATED'));
  q = copy('tdx/phala-tdx-v4.quote.bin');
  le32(q, 632, 4301); // eats one padding byte: contents no longer fill it
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_BAD_FIELD'));
  q = copy('tdx/phala-tdx-v4.quote.bin');
  le16(q, 636 + 128, 5); // v4 needs the nested type 6
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('sgx/phala-sgx-v3.quote.bin');
  const typeOff = 436 + 128 + 384 + 64 + 2 + 32;
  le16(q, typeOff, 4); // PCK leaf only: not supported
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_UNSUPPORTED_VERSION'));
  q = copy('sgx/phala-sgx-v3.quote.bin');
  le16(q, 436 + 128 + 384 + 64, 0xffff); // auth data longer than the quote
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_TRUNCATED'));
  for (let n = 1; n < 4600; n += 97) {
    assert.throws(
      () => parseDcapQuote(readVector('sgx/phala-sgx-v3.quote.bin').subarray(0, n)),
      (e: unknown) => isCloisterError(e),
    );
  }
});

test('trailing bytes: zeros tolerated, anything else refused', { skip }, () => {
  const q = readVector('sgx/phala-sgx-v3.quote.bin');
  const padded = new Uint8Array(q.length + 16);
  padded.set(q);
  assert.equal(parseDcapQuote(padded).length, q.length);
  padded[padded.length - 1] = 1;
  assert.throws(() => parseDcapQuote(padded), is('EVIDENCE_TRAILING_BYTES'));
});

test('PEM chain text that is not a clean certificate sequence is refused', { skip }, () => {
  const q = copy('sgx/phala-sgx-v3.quote.bin');
  const p = parseDcapQuote(q);
  const start = p.pckChain.raw.byteOffset - q.byteOffset;
  q[start] = 0x41; // text before the first BEGIN line
  assert.throws(() => parseDcapQuote(q), is('EVIDENCE_BAD_FIELD'));
  const q2 = copy('sgx/phala-sgx-v3.quote.bin');
  q2[start + 40] = 0xc3; // non-ASCII
  assert.throws(() => parseDcapQuote(q2), is('EVIDENCE_BAD_FIELD'));
});

test('an invalid attestation key point is a PARSE error', { skip }, async () => {
  const q = copy('sgx/phala-sgx-v3.quote.bin');
  q.fill(0xff, 436 + 64, 436 + 128);
  await assert.rejects(
    verifyDcapQuote(q, { now: new Date('2025-07-01T00:00:00Z') }),
    (e: unknown) => isCloisterError(e) && (e as VerificationError).layer !== undefined,
  );
});

test('PCK extension: truncated, duplicated and missing entries', () => {
  assert.throws(
    () => parsePckExtension(new Uint8Array()),
    (e: unknown) => isCloisterError(e),
  );
  assert.throws(
    () => parsePckExtension(Uint8Array.of(0x30, 0x00)),
    is('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
  assert.throws(
    () => parsePckExtension(Uint8Array.of(0x30, 0x81, 0x05)),
    is('EVIDENCE_BAD_ENCODING'),
  );
  assert.throws(
    () => parsePckExtension(Uint8Array.of(0x30, 0x80, 0x00, 0x00)),
    is('EVIDENCE_BAD_ENCODING'),
  );
  // Two PPID entries.
  const ppid = [
    0x30,
    0x1c,
    0x06,
    0x0a,
    0x2a,
    0x86,
    0x48,
    0x86,
    0xf8,
    0x4d,
    0x01,
    0x0d,
    0x01,
    0x01,
    0x04,
    0x10,
    ...new Array<number>(16).fill(0),
  ];
  assert.throws(
    () => parsePckExtension(Uint8Array.of(0x30, 60, ...ppid, ...ppid)),
    is('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
  assert.throws(
    () => parsePckExtension(Uint8Array.of(0x30, 30, ...ppid)),
    is('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
});

test('collateral: missing fields, bad hex, bad JSON, unknown versions', { skip }, () => {
  const c = JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as IntelCollateralJson;
  const bad = (o: unknown, code: string, layer = 'COLLATERAL'): void => {
    assert.throws(() => parseIntelCollateral(o as IntelCollateralJson), is(code, layer));
  };
  bad({ ...c, tcb_info: undefined }, 'COLLATERAL_MALFORMED');
  bad({ ...c, pck_crl: 'zz' }, 'EVIDENCE_BAD_ENCODING', 'PARSE');
  bad({ ...c, tcb_info_signature: 'abcd' }, 'COLLATERAL_MALFORMED');
  bad({ ...c, tcb_info: c.tcb_info.slice(0, -1) }, 'COLLATERAL_MALFORMED');
  bad(
    {
      ...c,
      tcb_info: c.tcb_info
        .replace('"version": 3', '"version": 4')
        .replace('"version":3', '"version":4'),
    },
    'EVIDENCE_UNSUPPORTED_VERSION',
    'PARSE',
  );
  bad(
    { ...c, qe_identity: c.qe_identity.replace('"version":2', '"version":1') },
    'EVIDENCE_UNSUPPORTED_VERSION',
    'PARSE',
  );
  bad({ ...c, qe_identity: c.qe_identity.replace('"UpToDate"', '"Fine"') }, 'COLLATERAL_MALFORMED');
  bad({ ...c, qe_identity: '['.repeat(100) + ']'.repeat(100) }, 'COLLATERAL_MALFORMED');
  bad({ ...c, tcb_info_issuer_chain: 'not pem' }, 'EVIDENCE_BAD_FIELD', 'PARSE');
  bad('{"a":1,"a":2}', 'COLLATERAL_MALFORMED');
  bad(42, 'COLLATERAL_MALFORMED');
});

test('a missing or invalid time is refused', { skip }, async () => {
  await assert.rejects(
    verifyDcapQuote(readVector('sgx/phala-sgx-v3.quote.bin'), { now: new Date(NaN) }),
    (e: unknown) => isCloisterError(e),
  );
});
