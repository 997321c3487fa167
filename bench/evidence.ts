/**
 * Evidence verification throughput: SGX and TDX quotes and SEV-SNP reports from the real vectors,
 * verified by Cloister and, on the same inputs in the same run, by @phala/dcap-qvl (Intel) and
 * @tinfoilsh/verifier (SNP), and compared with the ECDSA verify limit `openssl speed` measures on
 * this machine (P-256 for Intel quotes, P-384 for SNP): one quote needs at least one ECDSA verify
 * that depends on the evidence (the attestation key's signature over the quote; the report
 * signature by the VCEK), so `openssl speed`'s verifies/s per core is the physical ceiling.
 *
 * Cloister's caches skip re-verifying unchanged certificate chains and collateral; every check
 * that depends on the evidence runs on every call.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { verifyDcapQuote, verifySnpReport } from '@cloister/evidence';
import type { IntelCollateralJson } from '@cloister/evidence';
import { vectorsDir, MISSING_VECTORS } from '@cloister/testkit';
import { fmt, measureRate, opensslEcdsaVerify } from './measure.js';
import type { Rate } from './measure.js';

interface PhalaQvl {
  verify(quote: Uint8Array, collateral: IntelCollateralJson, nowSecs: number): { status: string };
}

interface TinfoilSev {
  Report: new (bytes: Uint8Array) => unknown;
  CertificateChain: {
    fromReport(report: unknown, vcekDer: Uint8Array): Promise<{ verifyChain(): Promise<boolean> }>;
  };
  verifyAttestation(chain: unknown, report: unknown): Promise<boolean>;
}

const require = createRequire(import.meta.url);

async function loadTinfoil(): Promise<TinfoilSev> {
  // The package exports only its top-level API; its SEV modules are loaded by file.
  const dist = join(dirname(require.resolve('@tinfoilsh/verifier')), 'sev');
  const [report, chain, verify] = await Promise.all(
    ['report.js', 'cert-chain.js', 'verify.js'].map(
      (f) => import(pathToFileURL(join(dist, f)).href) as Promise<Record<string, unknown>>,
    ),
  );
  return {
    Report: report?.['Report'] as TinfoilSev['Report'],
    CertificateChain: chain?.['CertificateChain'] as TinfoilSev['CertificateChain'],
    verifyAttestation: verify?.['verifyAttestation'] as TinfoilSev['verifyAttestation'],
  };
}

function line(
  label: string,
  ours: Rate,
  peer: Rate | undefined,
  peerName: string,
  limit: number,
  limitName: string,
): void {
  console.log(
    `${label.padEnd(28)} cloister ${fmt(ours.perSecond).padStart(7)}/s (${fmt(ours.perCpuSecond).padStart(7)} per CPU-s)` +
      (peer === undefined
        ? ''
        : ` | ${peerName} ${fmt(peer.perSecond).padStart(6)}/s -> ${fmt(ours.perSecond / peer.perSecond, 1)}x`) +
      ` | ${limitName} ${fmt(limit)}/s per core -> ${fmt((100 * ours.perCpuSecond) / limit, 1)}% of limit`,
  );
}

export async function benchEvidence(): Promise<void> {
  const dir = vectorsDir();
  if (dir === undefined) {
    console.log(MISSING_VECTORS);
    return;
  }
  const read = (p: string): Uint8Array => new Uint8Array(readFileSync(join(dir, p)));
  const json = (p: string): IntelCollateralJson =>
    JSON.parse(readFileSync(join(dir, p), 'utf8')) as IntelCollateralJson;

  const p256 = opensslEcdsaVerify('p256');
  const p384 = opensslEcdsaVerify('p384');
  console.log(
    `openssl speed (median of 3, one core): ECDSA P-256 verify ${fmt(p256)}/s, P-384 verify ${fmt(p384)}/s`,
  );

  const phala = require('@phala/dcap-qvl') as PhalaQvl;
  const intel = [
    {
      label: 'SGX quote v3',
      quote: 'sgx/phala-sgx-v3.quote.bin',
      collateral: 'sgx/phala-sgx-v3.collateral.json',
      at: '2025-07-01T00:00:00Z',
    },
    {
      label: 'TDX quote v4',
      quote: 'tdx/phala-tdx-v4.quote.bin',
      collateral: 'tdx/phala-tdx-v4.collateral.json',
      at: '2025-07-01T00:00:00Z',
    },
    {
      label: 'TDX quote v5',
      quote: 'tdx/gtdx-v5.quote.bin',
      collateral: 'tdx/phala-fmspc90c06f-2026-02.collateral.json',
      at: '2026-03-01T00:00:00Z',
    },
  ];
  for (const v of intel) {
    const quote = read(v.quote);
    const collateral = json(v.collateral);
    const now = new Date(v.at);
    const ours = await measureRate(() => verifyDcapQuote(quote, { collateral, now }));
    let peer: Rate | undefined;
    try {
      phala.verify(quote, collateral, now.getTime() / 1000);
      peer = await measureRate(() => phala.verify(quote, collateral, now.getTime() / 1000), {
        runs: 3,
      });
    } catch (e) {
      console.log(`  @phala/dcap-qvl cannot verify ${v.label}: ${(e as Error).message}`);
    }
    line(v.label, ours, peer, '@phala/dcap-qvl', p256, 'P-256 verify');
  }

  const tinfoil = await loadTinfoil();
  const snp = [
    {
      label: 'SNP Milan v2',
      report: 'snp/gsev-milan-v2.report.bin',
      vcek: 'snp/gsev-milan-v2.vcek.der',
      at: '2025-01-01T00:00:00Z',
    },
    {
      label: 'SNP Milan v5 (GCP)',
      report: 'snp/teekit-gcp-milan-v5.report.bin',
      vcek: 'snp/teekit-gcp-milan-v5.vcek.pem',
      at: '2026-01-01T00:00:00Z',
    },
    {
      label: 'SNP Genoa v5',
      report: 'snp/oak-genoa-v5.report.bin',
      vcek: 'snp/oak-genoa-v5.vcek.der',
      at: '2026-01-01T00:00:00Z',
    },
    {
      label: 'SNP Turin v5',
      report: 'snp/oak-turin-v5.report.bin',
      vcek: 'snp/oak-turin-v5.vcek.der',
      at: '2026-01-01T00:00:00Z',
    },
  ];
  // Azure's Genoa evidence carries a v3 report (inside the HCL report, at 0x20) that the peer,
  // which handles Genoa v3 only, can verify too.
  const azure = JSON.parse(
    readFileSync(join(dir, 'azure-cvm/trustee-az-snp-genoa.evidence.json'), 'utf8'),
  ) as { report: number[]; vcek: string };
  const inputs = [
    ...snp.map((v) => ({ ...v, reportBytes: read(v.report), vcekBytes: read(v.vcek) })),
    {
      label: 'SNP Genoa v3 (Azure)',
      vcek: 'x.pem',
      at: '2026-01-01T00:00:00Z',
      reportBytes: new Uint8Array(azure.report).subarray(0x20, 0x20 + 1184),
      vcekBytes: new TextEncoder().encode(azure.vcek),
    },
  ];
  for (const v of inputs) {
    const report = v.reportBytes;
    const vcek = v.vcekBytes;
    const now = new Date(v.at);
    const ours = await measureRate(() => verifySnpReport(report, { vcek, now }));
    let peer: Rate | undefined;
    const vcekDer = v.vcek.endsWith('.pem') ? pemToDer(vcek) : vcek;
    const peerOnce = async (): Promise<void> => {
      const r = new tinfoil.Report(report);
      const chain = await tinfoil.CertificateChain.fromReport(r, vcekDer);
      if (!(await chain.verifyChain()) || !(await tinfoil.verifyAttestation(chain, r)))
        throw new Error('not verified');
    };
    try {
      await peerOnce();
      peer = await measureRate(peerOnce, { runs: 3 });
    } catch (e) {
      console.log(`  @tinfoilsh/verifier cannot verify ${v.label}: ${(e as Error).message}`);
    }
    line(v.label, ours, peer, '@tinfoilsh/verifier', p384, 'P-384 verify');
  }
}

function pemToDer(pem: Uint8Array): Uint8Array {
  const b64 = new TextDecoder()
    .decode(pem)
    .replace(/-----[^-]+-----/g, '')
    .replace(/\s+/g, '');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}
