/**
 * Property test: thousands of random and mutated requests at every route. Whatever arrives,
 * the coordinator answers 2xx or a 4xx problem+json with a code: never a 5xx, never a crash,
 * and a refused request changes nothing (the history head stays put).
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ZERO_HASH, toBase64Url } from '@cloister/protocol';
import { agentKey, baseManifest, signTransition, simEvidence, startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

const ROUTES: [string, string][] = [
  ['POST', '/v1/activate/challenge'],
  ['POST', '/v1/activate'],
  ['POST', '/v1/attest'],
  ['GET', '/v1/manifest'],
  ['PUT', '/v1/manifest'],
  ['GET', '/v1/manifest/history'],
  ['PUT', '/v1/secrets/dbPassword'],
  ['PUT', '/v1/secrets/apiKey'],
  ['GET', '/v1/status'],
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/metrics'],
  ['GET', '/v1/openapi.json'],
  ['DELETE', '/v1/activate'],
  ['GET', '/v1/secrets/..%2f..'],
];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Replaces, deletes or corrupts the value at a random path of `v`. */
function mutate(v: Json, path: number[], replacement: Json, mode: number): Json {
  if (path.length === 0 || v === null || typeof v !== 'object') {
    if (typeof v === 'string' && mode === 2 && v.length > 0) {
      const i = (path[0] ?? 0) % v.length;
      return v.slice(0, i) + String.fromCharCode((v.charCodeAt(i) ^ 1) & 0xffff) + v.slice(i + 1);
    }
    return replacement;
  }
  const keys = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
  if (keys.length === 0) return replacement;
  const k = keys[(path[0] ?? 0) % keys.length] as string | number;
  if (Array.isArray(v)) {
    const out = [...v];
    out[k as number] = mutate(out[k as number] as Json, path.slice(1), replacement, mode);
    return out;
  }
  const out: { [k: string]: Json } = { ...v };
  if (path.length === 1 && mode === 1) {
    delete out[k as string];
    return out;
  }
  out[k as string] = mutate(out[k as string] as Json, path.slice(1), replacement, mode);
  return out;
}

describe('random and mutated requests', () => {
  let f: Fixture;
  const valid: Record<string, Json> = {};
  before(async () => {
    f = await startFixture();
    const m = baseManifest({}, { alice: f.alice });
    const sig = await signTransition(m, 0, ZERO_HASH, 'set', f.install);
    const r = await f.coord.server.inject({
      method: 'PUT',
      url: '/v1/manifest',
      payload: { manifest: m, signatures: [sig] },
    });
    assert.equal(r.statusCode, 200, r.body);
    const agent = await agentKey();
    const nonce = (
      await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' })
    ).json<{ nonce: string }>().nonce;
    valid['/v1/activate'] = JSON.parse(
      JSON.stringify({
        workload: 'backend',
        nonce,
        evidence: await simEvidence(f.hw, nonce, agent),
        csr: agent.csr,
        bundleKey: agent.bundleKey,
      }),
    ) as Json;
    valid['/v1/manifest'] = JSON.parse(
      JSON.stringify({ manifest: m, kind: 'update', signatures: [sig] }),
    ) as Json;
    valid['/v1/attest'] = { nonce };
    const secret = {
      value: toBase64Url(new TextEncoder().encode('pw')),
      version: 0,
      signature: { owner: 'alice', alg: 'ES256', signature: sig.signature },
    };
    valid['/v1/secrets/dbPassword'] = secret;
    valid['/v1/secrets/apiKey'] = secret;
  });
  after(async () => f.cleanup());

  it('never answers 5xx and never changes the history for bad requests', async () => {
    const head = (await f.coord.server.inject({ method: 'GET', url: '/v1/status' })).json<{
      historyHead: string;
    }>().historyHead;
    const statuses = new Map<number, number>();
    const body = fc.oneof(
      {
        weight: 3,
        arbitrary: fc
          .tuple(
            fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
            fc.jsonValue(),
            fc.integer({ min: 0, max: 2 }),
          )
          .map((x) => ({ kind: 'mutate' as const, x })),
      },
      { weight: 1, arbitrary: fc.jsonValue().map((x) => ({ kind: 'json' as const, x })) },
      {
        weight: 1,
        arbitrary: fc.string({ maxLength: 200 }).map((x) => ({ kind: 'raw' as const, x })),
      },
      {
        weight: 1,
        arbitrary: fc.uint8Array({ maxLength: 300 }).map((x) => ({ kind: 'bytes' as const, x })),
      },
    );
    const contentType = fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'application/octet-stream',
      'application/x-www-form-urlencoded',
      '',
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        body,
        contentType,
        async ([method, url], b, ct) => {
          let payload: string | Buffer | undefined;
          if (b.kind === 'mutate') {
            const base = valid[url];
            payload = JSON.stringify(
              base === undefined ? b.x[1] : mutate(base, b.x[0], b.x[1] as Json, b.x[2]),
            );
          } else if (b.kind === 'json') payload = JSON.stringify(b.x);
          else if (b.kind === 'raw') payload = b.x;
          else payload = Buffer.from(b.x);
          const hasBody = method !== 'GET' && method !== 'HEAD';
          const r = await f.coord.server.inject({
            method: method as 'POST',
            url,
            ...(hasBody ? { payload } : {}),
            headers: hasBody && ct !== '' ? { 'content-type': ct } : {},
          });
          statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
          assert.ok(r.statusCode < 500, `${method} ${url} -> ${r.statusCode} ${r.body}`);
          if (r.statusCode >= 400) {
            assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
            assert.match(r.json<{ code: string }>().code, /^[A-Z_]+$/);
          }
        },
      ),
      { numRuns: 2000, seed: 20261129 },
    );
    const after = (await f.coord.server.inject({ method: 'GET', url: '/v1/status' })).json<{
      historyHead: string;
    }>().historyHead;
    assert.equal(after, head);
    assert.ok((statuses.get(400) ?? 0) > 100, JSON.stringify([...statuses]));
  });

  it('never answers 5xx before the first manifest either', async () => {
    const fresh = await startFixture();
    try {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...ROUTES), fc.jsonValue(), async ([method, url], x) => {
          const base = valid[url];
          const payload = JSON.stringify(base === undefined ? x : { ...(base as object), junk: x });
          const hasBody = method !== 'GET';
          const r = await fresh.coord.server.inject({
            method: method as 'POST',
            url,
            ...(hasBody ? { payload, headers: { 'content-type': 'application/json' } } : {}),
          });
          // /readyz answers 503 by design until a manifest is set.
          const allowed = url === '/readyz' ? r.statusCode === 503 : r.statusCode < 500;
          assert.ok(allowed, `${method} ${url} -> ${r.statusCode} ${r.body}`);
        }),
        { numRuns: 300, seed: 7 },
      );
      // Valid bodies too: the activation and the secret upload meet "no manifest yet".
      for (const url of ['/v1/activate', '/v1/secrets/dbPassword', '/v1/attest']) {
        const r = await fresh.coord.server.inject({
          method: url === '/v1/secrets/dbPassword' ? 'PUT' : 'POST',
          url,
          payload: valid[url] as object,
        });
        assert.ok(r.statusCode < 500 && r.statusCode !== 0, `${url} -> ${r.statusCode} ${r.body}`);
      }
      const st = (await fresh.coord.server.inject({ method: 'GET', url: '/v1/status' })).json<{
        state: string;
      }>();
      assert.equal(st.state, 'accepting-manifest');
    } finally {
      await fresh.cleanup();
    }
  });
});
