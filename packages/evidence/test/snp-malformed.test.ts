/**
 * Malformed SEV-SNP reports: each is refused by the parser with a typed PARSE error, and random
 * inputs never escape as TypeError/RangeError.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readVector, requireVectors } from '@cloister/testkit';
import { isCloisterError, VerificationError } from '@cloister/errors';
import { parseSnpReport, snpProductFromCpuid, verifySnpReport } from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

function hasCode(code: string) {
  return (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.ok(e instanceof VerificationError);
    assert.equal(e.layer, 'PARSE');
    return true;
  };
}

function patched(path: string, patch: (b: Uint8Array, dv: DataView) => void): Uint8Array {
  const b = readVector(path).slice();
  patch(b, new DataView(b.buffer, b.byteOffset, b.byteLength));
  return b;
}

const V2 = 'snp/gsev-milan-v2.report.bin';
const V3 = 'snp/trustee-milan-vlek-v3.report.bin';
const V5 = 'snp/oak-genoa-v5.report.bin';
const TURIN = 'snp/oak-turin-v5.report.bin';

test('size must be exactly 1184 bytes', { skip }, () => {
  const good = readVector(V5);
  assert.throws(() => parseSnpReport(new Uint8Array(0)), hasCode('EVIDENCE_TRUNCATED'));
  assert.throws(() => parseSnpReport(good.subarray(0, 1183)), hasCode('EVIDENCE_TRUNCATED'));
  const long = new Uint8Array(1185);
  long.set(good);
  assert.throws(() => parseSnpReport(long), hasCode('EVIDENCE_TRAILING_BYTES'));
  assert.throws(
    () => parseSnpReport('not bytes' as unknown as Uint8Array),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
});

test('versions below 2 and above 5 are unsupported; 4 reads as the v3 layout', { skip }, () => {
  for (const version of [0, 1, 6, 0xffffffff]) {
    const b = patched(V5, (_, dv) => dv.setUint32(0, version, true));
    assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_UNSUPPORTED_VERSION'));
  }
  const v4 = parseSnpReport(patched(V3, (_, dv) => dv.setUint32(0, 4, true)));
  assert.equal(v4.version, 4);
  assert.deepEqual(v4.cpuid, { family: 0x19, model: 0x01, stepping: 0x01 });
  assert.equal(v4.launchMitVector, undefined);
  // A v5 report relabelled v4 has mitigation vectors where v4 has reserved zeros.
  assert.throws(
    () => parseSnpReport(patched(V5, (_, dv) => dv.setUint32(0, 4, true))),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
});

test('signature_algo must be 1 (ECDSA P-384 with SHA-384)', { skip }, () => {
  for (const algo of [0, 2, 0x100]) {
    const b = patched(V5, (_, dv) => dv.setUint32(0x34, algo, true));
    assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_UNSUPPORTED_VERSION'));
  }
});

test('policy: bit 17 must be set and bits 26-63 clear', { skip }, () => {
  const clear17 = patched(V5, (b) => (b[0x0a] = (b[0x0a] as number) & ~0x02));
  assert.throws(() => parseSnpReport(clear17), hasCode('EVIDENCE_BAD_FIELD'));
  for (const bit of [26, 31, 32, 47, 63]) {
    const b = patched(V5, (bytes) => {
      const i = 0x08 + (bit >> 3);
      bytes[i] = (bytes[i] as number) | (1 << (bit & 7));
    });
    assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_BAD_FIELD'), `bit ${bit}`);
  }
  // Bits 0-25 are meaningful, not errors: for example DEBUG (19) is a claim.
  const dbg = parseSnpReport(patched(V5, (b) => (b[0x0a] = (b[0x0a] as number) | 0x08)));
  assert.equal(dbg.debug, true);
});

test('flags: signing key must be VCEK or VLEK; reserved bits clear', { skip }, () => {
  for (const flags of [2 << 2, 7 << 2, 1 << 5, 0x80000000]) {
    const b = patched(V5, (_, dv) => dv.setUint32(0x48, flags, true));
    assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_BAD_FIELD'), `flags ${flags}`);
  }
  assert.equal(parseSnpReport(readVector(V3)).signingKey, 'vlek');
  assert.equal(parseSnpReport(readVector(V5)).signingKey, 'vcek');
});

test('vmpl must be 0-3', { skip }, () => {
  const b = patched(V5, (_, dv) => dv.setUint32(0x30, 4, true));
  assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_BAD_FIELD'));
});

test('reserved regions must be zero', { skip }, () => {
  const cases: [string, number][] = [
    [V5, 0x4c],
    [V5, 0x18b],
    [V5, 0x19f],
    [V5, 0x1eb],
    [V5, 0x1ef],
    [V5, 0x208],
    [V5, 0x29f],
    [V3, 0x1f8],
    [V2, 0x188], // v2 has no CPUID fields
    [V5, 0x330], // signature area after r and s
    [V5, 0x49f],
    [V5, 0x2a0 + 48], // r above the P-384 scalar
    [V5, 0x2e8 + 71], // s above the P-384 scalar
    [V5, 0x180 + 2], // reserved byte of reported_tcb (Milan/Genoa layout)
    [TURIN, 0x180 + 4], // reserved byte of reported_tcb (Turin layout)
    [TURIN, 0x1a0 + 8], // Turin chip_id is 8 bytes
  ];
  for (const [path, off] of cases) {
    const b = patched(path, (bytes) => (bytes[off] = 0x5a));
    assert.throws(
      () => parseSnpReport(b),
      hasCode('EVIDENCE_BAD_FIELD'),
      `offset 0x${off.toString(16)}`,
    );
  }
});

test('product from CPUID', () => {
  assert.equal(snpProductFromCpuid(0x19, 0x00), 'Milan');
  assert.equal(snpProductFromCpuid(0x19, 0x0f), 'Milan');
  assert.equal(snpProductFromCpuid(0x19, 0x10), 'Genoa');
  assert.equal(snpProductFromCpuid(0x19, 0x1f), 'Genoa');
  assert.equal(snpProductFromCpuid(0x19, 0xa0), 'Genoa');
  assert.equal(snpProductFromCpuid(0x19, 0xaf), 'Genoa');
  assert.equal(snpProductFromCpuid(0x19, 0x20), undefined);
  assert.equal(snpProductFromCpuid(0x19, 0xb0), undefined);
  assert.equal(snpProductFromCpuid(0x1a, 0x02), 'Turin');
  assert.equal(snpProductFromCpuid(0x17, 0x31), undefined);
});

test('an unknown CPUID family is unsupported, not guessed', { skip }, () => {
  const b = patched(V5, (bytes) => (bytes[0x188] = 0x17));
  assert.throws(() => parseSnpReport(b), hasCode('EVIDENCE_UNSUPPORTED_VERSION'));
  const bergamo = parseSnpReport(patched(V5, (bytes) => (bytes[0x189] = 0xa0)));
  assert.equal(bergamo.product, 'Genoa');
});

test('the Turin TCB layout puts FMC first', { skip }, () => {
  const r = parseSnpReport(readVector(TURIN));
  assert.equal(r.product, 'Turin');
  assert.equal(
    Array.from(r.rawTcb.reported, (x) => x.toString(16).padStart(2, '0')).join(''),
    '0001000200000047',
  );
});

test('property: parse never throws anything but a CloisterError', { skip }, () => {
  const base = readVector(V5);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 1300 }), (bytes) => {
      try {
        parseSnpReport(bytes);
      } catch (e) {
        assert.ok(isCloisterError(e), String(e));
      }
    }),
    { numRuns: 300, seed: 0x5e5 },
  );
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat({ max: 1183 }), fc.nat({ max: 255 })), {
        minLength: 1,
        maxLength: 8,
      }),
      (patches) => {
        const b = base.slice();
        for (const [off, val] of patches) b[off] = val;
        try {
          const r = parseSnpReport(b);
          assert.equal(r.bytes.length, 1184);
        } catch (e) {
          assert.ok(isCloisterError(e), String(e));
        }
      },
    ),
    { numRuns: 1000, seed: 0x5e6 },
  );
});

test(
  'property: a patched report never verifies and never throws a TypeError',
  { skip },
  async () => {
    const base = readVector(V5);
    const vcek = readVector('snp/oak-genoa-v5.vcek.der');
    const now = new Date('2026-01-01T00:00:00Z');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: 1183 }), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        async (patches) => {
          const b = base.slice();
          for (const [off, x] of patches) b[off] = (b[off] as number) ^ x;
          await assert.rejects(verifySnpReport(b, { now, vcek }), (e: unknown) =>
            isCloisterError(e),
          );
        },
      ),
      { numRuns: 100, seed: 0x5e7 },
    );
  },
);
