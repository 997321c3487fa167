/**
 * Edge cases of the caching collateral fetcher: a response body without a Content-Length is
 * still capped while it is read, and an answer for another platform or chip is refused before
 * it reaches the cache, so one bad answer is not served again until its self-declared expiry.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  hasCode,
  readVector,
  readVectorText,
  requireVectors,
  startFakeVendorServices,
} from '@cloister/testkit';
import type { FakeVendorServices } from '@cloister/testkit';
import { cachingFetcher, toHex } from '@cloister/evidence';
import type { IntelCollateralJson } from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

let fake: FakeVendorServices;
const MILAN_CHIP =
  '3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d';
const TURIN_CHIP = '3b42092f69c656d3';
const MILAN_QUERY = {
  product: 'Milan' as const,
  signingKey: 'vcek' as const,
  hwid: MILAN_CHIP,
  reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
};

before(async () => {
  if (skip) return;
  const sgx = JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as IntelCollateralJson;
  const tdx = JSON.parse(readVectorText('tdx/phala-tdx-v4.collateral.json')) as IntelCollateralJson;
  fake = await startFakeVendorServices({
    intel: [
      { tee: 'sgx', fmspc: '00a067110000', ca: 'processor', collateral: sgx },
      { tee: 'tdx', fmspc: 'b0c06f000000', ca: 'platform', collateral: tdx },
    ],
    vceks: [
      {
        product: 'Milan',
        hwid: MILAN_CHIP,
        spl: { blSPL: '2', teeSPL: '0', snpSPL: '5', ucodeSPL: '68' },
        der: readVector('snp/gsev-milan-v2.vcek.der'),
      },
      {
        product: 'Turin',
        hwid: TURIN_CHIP,
        spl: { blSPL: '1', teeSPL: '0', snpSPL: '2', ucodeSPL: '71', fmcSPL: '0' },
        der: readVector('snp/oak-turin-v5.vcek.der'),
      },
    ],
    chains: [
      { kind: 'vcek', product: 'Milan', pem: readVectorText('snp/amd-ask-ark-milan-vcek.pem') },
    ],
  });
});

after(async () => {
  if (!skip) await fake.close();
});

/** A fetch that answers the first request whose path starts with `from` as if it were `to`. */
function rewriteOnce(from: string, to: string): typeof globalThis.fetch {
  let done = false;
  return (input, init) => {
    const u = new URL(input as string);
    if (!done && (u.pathname + u.search).startsWith(from)) {
      done = true;
      return globalThis.fetch(`${fake.url}${to}`, init);
    }
    return globalThis.fetch(input, init);
  };
}

test('a body without Content-Length is capped while it is read, not after', async () => {
  let pulled = 0;
  const chunk = new Uint8Array(64 * 1024);
  const f = cachingFetcher({
    amdBaseUrl: 'https://kds.test',
    amdCrl: false,
    minIntervalMs: 0,
    maxResponseBytes: 4096,
    fetch: () => {
      // An endless chunked answer: a cap applied only after the whole body is buffered would
      // hold the caller until memory runs out.
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (pulled >= 32 * 1024 * 1024) {
            c.close();
            return;
          }
          pulled += chunk.length;
          c.enqueue(chunk);
        },
      });
      return Promise.resolve(new Response(body, { status: 200 }));
    },
  });
  await assert.rejects(
    f.snp({ ...MILAN_QUERY, signingKey: 'vlek' }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  assert.ok(pulled < 1024 * 1024, `read ${pulled} bytes of a 4 KiB limit`);
});

test('TCB info for another FMSPC is refused and not cached', { skip }, async () => {
  const f = cachingFetcher({
    intelBaseUrl: fake.url,
    minIntervalMs: 0,
    now: () => new Date('2025-07-01T00:00:00Z'),
    // A mirror that once answers the SGX FMSPC with the TDX platform's TCB info.
    fetch: rewriteOnce(
      '/sgx/certification/v4/tcb?fmspc=00a067110000',
      '/tdx/certification/v4/tcb?fmspc=b0c06f000000',
    ),
  });
  const q = { tee: 'sgx' as const, fmspc: '00a067110000', ca: 'processor' as const };
  await assert.rejects(f.intel(q), hasCode('COLLATERAL_MISMATCH', 'COLLATERAL'));
  // The next query asks again instead of replaying the wrong answer until its nextUpdate.
  const got = await f.intel(q);
  assert.match(got.tcb_info, /"fmspc":"00a067110000"/i);
});

test('a VCEK for another chip is refused and not cached', { skip }, async () => {
  const f = cachingFetcher({
    amdBaseUrl: fake.url,
    amdCrl: false,
    minIntervalMs: 0,
    now: () => new Date('2025-01-01T00:00:00Z'),
    fetch: rewriteOnce(
      `/vcek/v1/Milan/${MILAN_CHIP}`,
      `/vcek/v1/Turin/${TURIN_CHIP}?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71&fmcSPL=0`,
    ),
  });
  await assert.rejects(f.snp(MILAN_QUERY), hasCode('COLLATERAL_MISMATCH', 'COLLATERAL'));
  const c = await f.snp(MILAN_QUERY);
  assert.ok(c.endorsementKeyCert);
  assert.equal(toHex(c.endorsementKeyCert), toHex(readVector('snp/gsev-milan-v2.vcek.der')));
});

test('a VCEK for another TCB of the same chip is refused', { skip }, async () => {
  const f = cachingFetcher({
    amdBaseUrl: fake.url,
    amdCrl: false,
    minIntervalMs: 0,
    // A KDS that ignores the SPL parameters and answers with the chip's only VCEK.
    fetch: (input, init) => {
      const u = new URL(input as string);
      if (u.pathname === `/vcek/v1/Milan/${MILAN_CHIP}`)
        u.search = '?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68';
      return globalThis.fetch(`${fake.url}${u.pathname}${u.search}`, init);
    },
  });
  await assert.rejects(
    f.snp({ ...MILAN_QUERY, reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 69 } }),
    hasCode('COLLATERAL_MISMATCH', 'COLLATERAL'),
  );
});
