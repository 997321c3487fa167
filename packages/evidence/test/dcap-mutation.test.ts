// Every single-byte mutation (xor 0x01 at every offset) of every real SGX / TDX quote is either
// rejected with a CloisterError by a check that differs from the original outcome, or, only
// where the byte is outside every signed or checked field (PEM whitespace and base64 padding
// bits of the PCK chain), leaves the outcome and the decoded certificates unchanged.
// Trailing zero padding is outside the signatures but checked: a non-zero byte there is refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { isCloisterError } from '@cloister/errors';
import {
  fromBase64,
  parseDcapQuote,
  parseIntelCollateral,
  verifyDcapQuote,
  type IntelCollateralJson,
  type ParsedIntelCollateral,
} from '@cloister/evidence';

const dir = requireVectors();

interface Case {
  readonly name: string;
  readonly quote: () => Uint8Array;
  readonly collateral?: string;
  readonly now: string;
}

const CASES: readonly Case[] = [
  {
    name: 'sgx v3',
    quote: () => readVector('sgx/phala-sgx-v3.quote.bin'),
    collateral: 'sgx/phala-sgx-v3.collateral.json',
    now: '2025-07-01T00:00:00Z',
  },
  {
    name: 'tdx v4',
    quote: () => readVector('tdx/phala-tdx-v4.quote.bin'),
    collateral: 'tdx/phala-tdx-v4.collateral.json',
    now: '2025-07-01T00:00:00Z',
  },
  {
    name: 'tdx v5 nomatch',
    quote: () => readVector('tdx/phala-tdx-v5-nomatch.quote.bin'),
    collateral: 'tdx/phala-fmspc90c06f-2026-02.collateral.json',
    now: '2026-03-01T00:00:00Z',
  },
  {
    name: 'tdx v5 gtdx',
    quote: () => readVector('tdx/gtdx-v5.quote.bin'),
    collateral: 'tdx/phala-fmspc90c06f-2026-02.collateral.json',
    now: '2026-03-01T00:00:00Z',
  },
  {
    name: 'tdx v4 spr',
    // Without the ASCII trailer go-tdx-guest appended for its own tests (refused as a whole).
    quote: () => {
      const q = readVector('tdx/gtdx-v4-spr.quote.bin');
      return q.subarray(0, parseDcapQuote(q.subarray(0, q.length - 39)).length);
    },
    collateral: 'tdx/gtdx-v4-spr.collateral.json',
    now: '2023-06-28T00:00:00Z',
  },
  {
    name: 'azure tdx (no collateral)',
    quote: () =>
      fromBase64(
        (
          JSON.parse(readVectorText('azure-cvm/trustee-az-tdx.evidence.json')) as {
            td_quote: string;
          }
        ).td_quote,
      ),
    now: '2025-01-01T00:00:00Z',
  },
];

type Outcome = { ok: string } | { code: string } | { bug: unknown };

async function outcome(
  bytes: Uint8Array,
  collateral: ParsedIntelCollateral | undefined,
  now: Date,
): Promise<Outcome> {
  try {
    const r = await verifyDcapQuote(bytes, { collateral, now });
    return { ok: JSON.stringify(r) };
  } catch (e) {
    return isCloisterError(e) ? { code: e.code } : { bug: e };
  }
}

function chainDer(bytes: Uint8Array): string | undefined {
  try {
    return parseDcapQuote(bytes)
      .pckChain.certificates.map((c) => Buffer.from(c).toString('hex'))
      .join(',');
  } catch {
    return undefined;
  }
}

for (const c of CASES) {
  test(`every byte of ${c.name} is covered`, { skip: dir === undefined }, async (t) => {
    const started = performance.now();
    const quote = new Uint8Array(c.quote());
    const now = new Date(c.now);
    const collateral =
      c.collateral === undefined
        ? undefined
        : parseIntelCollateral(JSON.parse(readVectorText(c.collateral)) as IntelCollateralJson);
    const base = await outcome(quote, collateral, now);
    assert.ok(!('bug' in base));
    const baseCode = 'code' in base ? base.code : undefined;
    const parsed = parseDcapQuote(quote);
    const baseChain = chainDer(quote);
    const chainStart = parsed.pckChain.raw.byteOffset - quote.byteOffset;
    const chainEnd = chainStart + parsed.pckChain.raw.length;
    const counts = { rejected: 0, unchanged: 0, padding: 0 };
    const BATCH = 32;
    for (let start = 0; start < quote.length; start += BATCH) {
      const offs = [];
      for (let i = start; i < Math.min(quote.length, start + BATCH); i++) offs.push(i);
      const results = await Promise.all(
        offs.map(async (i) => {
          const m = new Uint8Array(quote);
          m[i] = (m[i] as number) ^ 0x01;
          return { i, m, o: await outcome(m, collateral, now) };
        }),
      );
      for (const { i, m, o } of results) {
        if ('bug' in o) assert.fail(`offset ${i}: not a CloisterError: ${String(o.bug)}`);
        if (i >= parsed.length) {
          assert.deepEqual(o, { code: 'EVIDENCE_TRAILING_BYTES' }, `offset ${i} (padding)`);
          counts.padding++;
          continue;
        }
        const rejectedDifferently = 'code' in o && o.code !== baseCode;
        if (rejectedDifferently) {
          counts.rejected++;
          continue;
        }
        // Only the PEM text may change without effect, and then only when the certificates
        // it decodes to are byte-for-byte the same (whitespace, unused base64 bits).
        assert.ok(
          i >= chainStart && i < chainEnd,
          `offset ${i}: mutation not detected (${JSON.stringify(o).slice(0, 80)})`,
        );
        assert.deepEqual(o, base, `offset ${i}: outcome changed`);
        assert.equal(chainDer(m), baseChain, `offset ${i}: certificates changed but were accepted`);
        counts.unchanged++;
      }
    }
    t.diagnostic(
      `${c.name}: ${quote.length} offsets ${JSON.stringify(counts)} in ${Math.round(performance.now() - started)} ms`,
    );
  });
}
