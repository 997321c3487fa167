// Property tests: on random, truncated and randomly altered quotes and collateral, parsing and
// verification either succeed or throw a CloisterError (never TypeError / RangeError).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { isCloisterError } from '@cloister/errors';
import {
  parseDcapQuote,
  parseIntelCollateral,
  parsePckExtension,
  verifyDcapQuote,
  type IntelCollateralJson,
} from '@cloister/evidence';

const dir = requireVectors();

function onlyOurs(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    assert.ok(isCloisterError(e), `not a CloisterError: ${String(e)}`);
  }
}

test('random bytes: parse succeeds or throws a CloisterError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2048 }), fc.constantFrom(3, 4, 5), (b, v) => {
      const q = new Uint8Array(b);
      if (q.length >= 4) {
        q[0] = v;
        q[1] = 0;
        q[2] = 2;
        q[3] = 0;
      }
      onlyOurs(() => parseDcapQuote(q));
      onlyOurs(() => parsePckExtension(b));
    }),
    { numRuns: 500, seed: 0xdca9 },
  );
});

test(
  'truncated and altered real quotes: verify resolves or rejects with a CloisterError',
  { skip: dir === undefined },
  async () => {
    const quotes = [
      readVector('sgx/phala-sgx-v3.quote.bin'),
      readVector('tdx/phala-tdx-v4.quote.bin'),
      readVector('tdx/gtdx-v5.quote.bin'),
    ];
    const collateral = JSON.parse(
      readVectorText('tdx/phala-tdx-v4.collateral.json'),
    ) as IntelCollateralJson;
    await fc.assert(
      fc.asyncProperty(
        fc.nat(2),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        async (which, cut, edits) => {
          const src = quotes[which] as Uint8Array;
          const q = new Uint8Array(src.subarray(0, cut % (src.length + 1)));
          for (const [o, v] of edits) if (q.length > 0) q[o % q.length] = v;
          try {
            await verifyDcapQuote(q, { collateral, now: new Date('2025-07-01T00:00:00Z') });
          } catch (e) {
            assert.ok(isCloisterError(e), `not a CloisterError: ${String(e)}`);
          }
        },
      ),
      { numRuns: 300, seed: 0x5eed },
    );
  },
);

test(
  'random collateral text: parse succeeds or throws a CloisterError',
  { skip: dir === undefined },
  () => {
    const c = JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as IntelCollateralJson;
    fc.assert(
      fc.property(
        fc.constantFrom(
          'tcb_info',
          'qe_identity',
          'pck_crl',
          'root_ca_crl',
          'tcb_info_issuer_chain',
        ),
        fc.nat(),
        fc.string({ maxLength: 8 }),
        (k, at, ins) => {
          const s = c[k as keyof IntelCollateralJson];
          const i = at % (s.length + 1);
          onlyOurs(() =>
            parseIntelCollateral({ ...c, [k]: s.slice(0, i) + ins + s.slice(i + ins.length) }),
          );
        },
      ),
      { numRuns: 300, seed: 0xc011 },
    );
    fc.assert(
      fc.property(fc.json(), (j) => onlyOurs(() => parseIntelCollateral(j))),
      { numRuns: 200, seed: 7 },
    );
  },
);
