/**
 * Real SEV-SNP evidence through the coordinator: the report verifies against AMD's pinned roots
 * (the full hardware verifier path), and is then refused at the BINDING layer because its report
 * data was made for someone else's nonce and key. Mutations of the report are refused with a
 * 4xx naming the layer, never a 5xx.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { readVector, requireVectors } from '@cloister/testkit';
import { toBase64Url } from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { agentKey, installManifest, startFixture } from './helpers.js';
import type { Fixture } from './helpers.js';

const skip = requireVectors() === undefined;
const OAK_MEASUREMENT =
  'c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc';

describe('hardware evidence (SEV-SNP vector)', { skip }, () => {
  let f: Fixture;
  before(async () => {
    f = await startFixture({ now: () => new Date('2026-01-01T00:00:00Z') });
    const m = {
      version: 1,
      trustDomain: 'snp.example',
      packages: { web: { tee: 'sev-snp', measurement: OAK_MEASUREMENT } },
      workloads: { web: { package: 'web' } },
    } as Manifest;
    await installManifest(f, m);
  });
  after(async () => f.cleanup());

  async function send(report: Uint8Array, certs: Uint8Array[]) {
    const agent = await agentKey();
    const { nonce } = (
      await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' })
    ).json<{ nonce: string }>();
    return f.coord.server.inject({
      method: 'POST',
      url: '/v1/activate',
      payload: {
        workload: 'web',
        nonce,
        csr: agent.csr,
        bundleKey: agent.bundleKey,
        evidence: { type: 'sev-snp', data: toBase64Url(report), certs: certs.map(toBase64Url) },
      },
    });
  }

  it('verifies a real report, then refuses it at BINDING (report data made for another nonce)', async () => {
    const r = await send(readVector('snp/oak-genoa-v5.report.bin'), [
      readVector('snp/oak-genoa-v5.vcek.der'),
    ]);
    assert.equal(r.statusCode, 403, r.body);
    const p = r.json<{ code: string; layer: string; details: { rule: string; actual: string } }>();
    assert.equal(p.code, 'COORDINATOR_BINDING_MISMATCH');
    assert.equal(p.layer, 'BINDING');
    assert.equal(p.details.actual.slice(0, 16), '8100555af0ad8e75');
  });

  it('accepts the VCEK with its ASK and ARK as separate DER certificates', async () => {
    const chainPem = new TextDecoder().decode(readVector('snp/amd-ask-ark-genoa-vcek.pem'));
    const ders = [
      ...chainPem.matchAll(/-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/g),
    ].map((x) => new Uint8Array(Buffer.from((x[1] ?? '').replace(/\s/g, ''), 'base64')));
    assert.equal(ders.length, 2);
    const r = await send(readVector('snp/oak-genoa-v5.report.bin'), [
      readVector('snp/oak-genoa-v5.vcek.der'),
      ...ders,
    ]);
    assert.equal(r.json<{ code: string }>().code, 'COORDINATOR_BINDING_MISMATCH', r.body);
  });

  it('refuses a report without its VCEK and mutated reports with a 4xx naming the layer', async () => {
    const report = readVector('snp/oak-genoa-v5.report.bin');
    const vcek = readVector('snp/oak-genoa-v5.vcek.der');
    const noCert = await send(report, []);
    assert.equal(noCert.statusCode, 403, noCert.body);
    assert.equal(noCert.json<{ layer: string }>().layer, 'CHAIN');
    const layers = new Set<string>();
    for (const off of [0x00, 0x08, 0x50, 0x90, 0x1a0, 0x2a0, 0x4a0 - 1]) {
      const m = new Uint8Array(report);
      m[off] = (m[off] ?? 0) ^ 0x01;
      const r = await send(m, [vcek]);
      assert.ok(
        r.statusCode >= 400 && r.statusCode < 500,
        `offset ${off}: ${r.statusCode} ${r.body}`,
      );
      layers.add(r.json<{ layer: string }>().layer);
    }
    assert.ok(layers.has('SIGNATURE') || layers.has('PARSE'), [...layers].join());
  });
});
