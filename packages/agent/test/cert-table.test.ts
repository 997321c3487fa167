import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import {
  buildCertTable,
  parseCertTable,
  parseCertTableEntries,
  SNP_CERT_GUIDS,
  formatGuid,
  guidBytes,
} from '../src/providers/cert-table.js';

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

test('GUID bytes are in RFC 4122 order', () => {
  const b = guidBytes(SNP_CERT_GUIDS.vcek);
  assert.equal(b[0], 0x63);
  assert.equal(b[15], 0xcd);
  assert.equal(formatGuid(b), SNP_CERT_GUIDS.vcek);
});

test('round trip; unknown GUIDs are skipped', () => {
  const vlek = new Uint8Array(50).fill(7);
  const t = buildCertTable([
    { guid: '00000000-0000-0000-0000-000000000001', der: new Uint8Array(10).fill(9) },
    { guid: SNP_CERT_GUIDS.vlek, der: vlek },
  ]);
  const certs = parseCertTable(t);
  assert.deepEqual(certs, { vlek });
  // Trailing zero padding (the kernel hands out page-sized buffers) is fine.
  const padded = new Uint8Array(t.length + 4096);
  padded.set(t);
  assert.deepEqual(parseCertTable(padded), { vlek });
});

test('malformed tables are refused with AGENT_TEE_MALFORMED', () => {
  const base = buildCertTable([{ guid: SNP_CERT_GUIDS.vcek, der: new Uint8Array(40).fill(1) }]);
  const cases: [string, (t: Uint8Array) => Uint8Array][] = [
    ['empty', () => new Uint8Array(0)],
    ['truncated entry', (t) => t.subarray(0, 30)],
    ['no terminator', (t) => t.subarray(0, 24)],
    ['cert past end', (t) => t.subarray(0, t.length - 1)],
    [
      'zero length',
      (t) => {
        const c = t.slice();
        c.fill(0, 20, 24);
        return c;
      },
    ],
    [
      'overlaps table',
      (t) => {
        const c = t.slice();
        c[16] = 4;
        return c;
      },
    ],
    [
      'terminator with length',
      (t) => {
        const c = t.slice();
        c[24 + 20] = 1;
        return c;
      },
    ],
    [
      'duplicate GUID',
      () =>
        buildCertTable([
          { guid: SNP_CERT_GUIDS.ask, der: new Uint8Array(4) },
          { guid: SNP_CERT_GUIDS.ask, der: new Uint8Array(4) },
        ]),
    ],
    [
      'too many entries',
      () =>
        buildCertTable(
          Array.from({ length: 70 }, (_, i) => ({
            guid: `00000000-0000-0000-0000-${(i + 1).toString(16).padStart(12, '0')}`,
            der: new Uint8Array(1),
          })),
        ),
    ],
  ];
  for (const [name, mutate] of cases) {
    assert.equal(
      code(() => parseCertTable(mutate(base))),
      'AGENT_TEE_MALFORMED',
      name,
    );
  }
});

test('property: any bytes either parse within bounds or throw our error', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
      try {
        for (const e of parseCertTableEntries(bytes)) {
          assert.ok(e.offset + e.length <= bytes.length);
          assert.ok(e.length > 0);
        }
      } catch (e) {
        assert.ok(isCloisterError(e), String(e));
        assert.equal(e.code, 'AGENT_TEE_MALFORMED');
      }
    }),
    { numRuns: 2000, seed: 42 },
  );
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 64 }), { maxLength: 4 }),
      fc.nat({ max: 300 }),
      fc.integer({ min: 0, max: 255 }),
      (ders, pos, val) => {
        const guids = Object.values(SNP_CERT_GUIDS);
        const t = buildCertTable(ders.map((der, i) => ({ guid: guids[i] as string, der })));
        if (pos < t.length) t[pos] = val;
        try {
          parseCertTable(t);
        } catch (e) {
          assert.ok(isCloisterError(e), String(e));
        }
      },
    ),
    { numRuns: 1000, seed: 7 },
  );
});
