/**
 * The caching collateral fetcher against the fake Intel PCS / AMD KDS on 127.0.0.1 (never the
 * real hosts): paths, header chains, exact signed substrings, caching until nextUpdate, answers
 * for another platform refused before they are cached, bodies capped while read,
 * Retry-After, per-host spacing, failures, and off-by-default.
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
import { cachingFetcher, toHex, verifySnpReport } from '@cloister/evidence';
import type { CachingFetcherOptions, IntelCollateralJson } from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

let fake: FakeVendorServices;
let sgx: IntelCollateralJson;
let tdx: IntelCollateralJson;
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
  sgx = JSON.parse(readVectorText('sgx/phala-sgx-v3.collateral.json')) as IntelCollateralJson;
  tdx = JSON.parse(readVectorText('tdx/phala-tdx-v4.collateral.json')) as IntelCollateralJson;
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
      {
        kind: 'vcek',
        product: 'Milan',
        pem: readVectorText('snp/amd-ask-ark-milan-vcek.pem'),
        // Not AMD's: a CRL by another issuer, to show the verifier applies what was fetched.
        crl: Uint8Array.from(Buffer.from(sgx.root_ca_crl, 'hex')),
      },
      { kind: 'vcek', product: 'Turin', pem: readVectorText('snp/amd-ask-ark-turin-vcek.pem') },
      { kind: 'vlek', product: 'Milan', pem: readVectorText('snp/amd-ask-ark-milan-vlek.pem') },
    ],
  });
});

after(async () => {
  if (!skip) await fake.close();
});

function fetcher(extra: Partial<CachingFetcherOptions> & { clock?: { t: Date } } = {}) {
  const sleeps: number[] = [];
  const clock = extra.clock ?? { t: new Date('2025-07-01T00:00:00Z') };
  const f = cachingFetcher({
    intelBaseUrl: fake.url,
    amdBaseUrl: fake.url,
    now: () => clock.t,
    minIntervalMs: 0,
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
    ...extra,
  });
  return { f, sleeps, clock };
}

const since = (n: number): string[] => fake.requests.slice(n).map((r) => r.url);

test('off by default: no base URL, no request, COLLATERAL_MISSING', async () => {
  const f = cachingFetcher({
    fetch: () => Promise.reject(new Error('must not be called')),
  });
  await assert.rejects(
    f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' }),
    hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
  );
  await assert.rejects(
    f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    }),
    hasCode('COLLATERAL_MISSING', 'COLLATERAL'),
  );
});

test('Intel PCS: v4 paths, header chains and the exact signed substrings', { skip }, async () => {
  const { f } = fetcher();
  const n = fake.requests.length;
  const got = await f.intel({ tee: 'sgx', fmspc: '00A067110000', ca: 'processor' });
  assert.deepEqual(got, sgx);
  assert.deepEqual(since(n).sort(), [
    '/sgx/certification/v4/pckcrl?ca=processor&encoding=der',
    '/sgx/certification/v4/qe/identity',
    '/sgx/certification/v4/rootcacrl',
    '/sgx/certification/v4/tcb?fmspc=00a067110000',
  ]);
  const t = await f.intel({ tee: 'tdx', fmspc: 'b0c06f000000', ca: 'platform' });
  assert.deepEqual(t, tdx);
  assert.ok(since(n).includes('/tdx/certification/v4/tcb?fmspc=b0c06f000000'));
  assert.ok(since(n).includes('/tdx/certification/v4/qe/identity'));
});

test('Intel collateral is cached until its nextUpdate', { skip }, async () => {
  const { f, clock } = fetcher();
  await f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' });
  const n = fake.requests.length;
  await f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' });
  assert.deepEqual(since(n), [], 'served from the cache');
  // TCB info, QE identity and the PCK CRL expire on 2025-07-19; the root CRL lasts to 2026.
  clock.t = new Date('2025-07-20T00:00:00Z');
  await f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' });
  assert.deepEqual(since(n).sort(), [
    '/sgx/certification/v4/pckcrl?ca=processor&encoding=der',
    '/sgx/certification/v4/qe/identity',
    '/sgx/certification/v4/tcb?fmspc=00a067110000',
  ]);
});

test(
  'AMD KDS: VCEK by hwID and SPLs, cert_chain, and the fetched collateral verifies',
  { skip },
  async () => {
    const { f } = fetcher({ amdCrl: false });
    const n = fake.requests.length;
    const c = await f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP.toUpperCase(),
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    });
    assert.deepEqual(since(n).sort(), [
      `/vcek/v1/Milan/${MILAN_CHIP}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68`,
      '/vcek/v1/Milan/cert_chain',
    ]);
    assert.ok(c.endorsementKeyCert);
    assert.equal(toHex(c.endorsementKeyCert), toHex(readVector('snp/gsev-milan-v2.vcek.der')));
    assert.equal(c.chain?.length, 2);
    const res = await verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
      now: new Date('2025-01-01T00:00:00Z'),
      collateral: c,
    });
    assert.equal(res.product, 'Milan');

    // Turin: 8-byte hwID and fmcSPL.
    const m = fake.requests.length;
    const t = await f.snp({
      product: 'Turin',
      signingKey: 'vcek',
      hwid: TURIN_CHIP + '00'.repeat(56),
      reportedTcb: { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 },
    });
    assert.ok(
      since(m).includes(
        `/vcek/v1/Turin/${TURIN_CHIP}?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71&fmcSPL=0`,
      ),
    );
    const tr = await verifySnpReport(readVector('snp/oak-turin-v5.report.bin'), {
      now: new Date('2026-01-01T00:00:00Z'),
      collateral: t,
    });
    assert.deepEqual(tr.claims.reportedTcb, {
      fmc: 0,
      bootloader: 1,
      tee: 0,
      snp: 2,
      microcode: 71,
    });

    // Cached: the VCEK until its notAfter, the chain until the ASK's.
    const k = fake.requests.length;
    await f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    });
    assert.deepEqual(since(k), []);
  },
);

test(
  'AMD KDS: the CRL is fetched with the chain and applied by the verifier',
  { skip },
  async () => {
    const { f } = fetcher();
    const c = await f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    });
    assert.ok(c.crl);
    assert.ok(fake.requests.some((r) => r.url === '/vcek/v1/Milan/crl'));
    // This fake CRL is not ARK-Milan's: verification must refuse it rather than ignore it.
    await assert.rejects(
      verifySnpReport(readVector('snp/gsev-milan-v2.report.bin'), {
        now: new Date('2025-01-01T00:00:00Z'),
        collateral: c,
      }),
      hasCode('COLLATERAL_MISMATCH', 'COLLATERAL'),
    );
    // Turin has no CRL on the fake: a missing CRL is a fetch failure, not silently skipped.
    await assert.rejects(
      f.snp({
        product: 'Turin',
        signingKey: 'vcek',
        hwid: TURIN_CHIP,
        reportedTcb: { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 },
      }),
      hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
    );
  },
);

test('AMD KDS: a VLEK query fetches the ASVK chain only', { skip }, async () => {
  const { f } = fetcher({ amdCrl: false });
  const n = fake.requests.length;
  const c = await f.snp({
    product: 'Milan',
    signingKey: 'vlek',
    hwid: '00'.repeat(64),
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 217 },
  });
  assert.deepEqual(since(n), ['/vlek/v1/Milan/cert_chain']);
  assert.equal(c.endorsementKeyCert, undefined);
  const res = await verifySnpReport(readVector('snp/trustee-milan-vlek-v3.report.bin'), {
    now: new Date('2025-06-01T00:00:00Z'),
    vcek: readVector('snp/trustee-milan-vlek-v3.vlek.der'),
    collateral: c,
  });
  assert.equal(res.signingKey, 'vlek');
});

test('429 is retried after Retry-After; too many or too long fails', { skip }, async () => {
  const { f, sleeps } = fetcher({ amdCrl: false });
  fake.failNext(1, { status: 429, headers: { 'retry-after': '2' } });
  const c = await f.snp({
    product: 'Turin',
    signingKey: 'vcek',
    hwid: TURIN_CHIP,
    reportedTcb: { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 },
  });
  assert.ok(c.endorsementKeyCert);
  assert.ok(sleeps.includes(2000), `slept ${JSON.stringify(sleeps)}`);

  const g = fetcher({ amdCrl: false, maxRetries: 2 });
  fake.failNext(3, { status: 429, headers: { 'retry-after': '1' } });
  await assert.rejects(
    g.f.snp({
      product: 'Genoa',
      signingKey: 'vlek',
      hwid: '00'.repeat(64),
      reportedTcb: { bootloader: 1, tee: 0, snp: 1, microcode: 1 },
    }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  assert.deepEqual(g.sleeps, [1000, 1000]);

  // Retry-After as an HTTP date, read against the injected clock.
  const d = fetcher({ amdCrl: false });
  const at = new Date(d.clock.t.getTime() + 5000).toUTCString();
  fake.failNext(1, { status: 429, headers: { 'retry-after': at } });
  await d.f.snp({
    product: 'Milan',
    signingKey: 'vlek',
    hwid: '00'.repeat(64),
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 217 },
  });
  assert.deepEqual(d.sleeps, [5000]);

  const h = fetcher({ amdCrl: false });
  fake.failNext(1, { status: 429, headers: { 'retry-after': '3600' } });
  await assert.rejects(
    h.f.snp({
      product: 'Genoa',
      signingKey: 'vlek',
      hwid: '00'.repeat(64),
      reportedTcb: { bootloader: 1, tee: 0, snp: 1, microcode: 1 },
    }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  assert.deepEqual(h.sleeps, []);
});

test('requests to one host are spaced by minIntervalMs', { skip }, async () => {
  const { f, sleeps } = fetcher({ minIntervalMs: 10_000 });
  await f.intel({ tee: 'tdx', fmspc: 'b0c06f000000', ca: 'platform' });
  // Four resources on one host: the 2nd, 3rd and 4th request each wait for the spacing.
  assert.equal(sleeps.length, 3);
  for (const s of sleeps) assert.ok(s > 0 && s <= 10_000);
});

test('errors: HTTP status, unreachable host, bad headers, bad queries', { skip }, async () => {
  const { f } = fetcher();
  fake.failNext(1, { status: 500 });
  await assert.rejects(
    f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  await assert.rejects(
    f.intel({ tee: 'sgx', fmspc: 'ffffffffffff', ca: 'processor' }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  const dead = cachingFetcher({ intelBaseUrl: 'http://127.0.0.1:1', minIntervalMs: 0 });
  await assert.rejects(
    dead.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
  const g = fetcher();
  fake.failNext(1, {
    status: 200,
    headers: { 'TCB-Info-Issuer-Chain': 'not%20a%20pem' },
    body: `{"tcbInfo":${sgx.tcb_info},"signature":"${sgx.tcb_info_signature}"}`,
  });
  await assert.rejects(
    g.f.intel({ tee: 'sgx', fmspc: '00a067110000', ca: 'processor' }),
    hasCode('COLLATERAL_MALFORMED', 'COLLATERAL'),
  );
  // Inputs never reach a URL unchecked (no path or query injection).
  const n = fake.requests.length;
  await assert.rejects(
    f.intel({ tee: 'sgx', fmspc: '00a0671100&x=1', ca: 'processor' }),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
  await assert.rejects(
    f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: '../../crl',
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    }),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
  await assert.rejects(
    f.snp({
      product: 'Milan',
      signingKey: 'vcek',
      hwid: MILAN_CHIP,
      reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 300 },
    }),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
  assert.deepEqual(since(n), []);
});

test('a service that does not answer fails after timeoutMs', { skip }, async () => {
  const { f } = fetcher({ amdCrl: false, timeoutMs: 200 });
  fake.failNext(1, { hang: true, status: 0 });
  await assert.rejects(
    f.snp({
      product: 'Genoa',
      signingKey: 'vlek',
      hwid: '00'.repeat(64),
      reportedTcb: { bootloader: 1, tee: 0, snp: 1, microcode: 1 },
    }),
    hasCode('COLLATERAL_FETCH_FAILED', 'COLLATERAL'),
  );
});

test('concurrent queries for one resource share one request', { skip }, async () => {
  const { f } = fetcher({ amdCrl: false });
  const n = fake.requests.length;
  const q = {
    product: 'Milan' as const,
    signingKey: 'vcek' as const,
    hwid: MILAN_CHIP,
    reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
  };
  await Promise.all([f.snp(q), f.snp(q), f.snp(q)]);
  assert.equal(since(n).length, 2);
});

// Answers for another platform or chip never reach the cache; a body is capped while read.
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
