import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { before, test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError, VerificationError } from '@cloister/errors';
import {
  createSimReport,
  exportSimHardware,
  generateSimHardware,
  importSimHardware,
  parseCertificate,
  parseSimReport,
  simMeasurement,
  simMeasurementFraming,
  simReportFrom,
  simRootAnchor,
  trustAnchor,
  verifySimReport,
} from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { der, makeCert, makeRoot } from './pki-fixtures.js';

const NOW = new Date('2026-03-01T00:00:00Z');
let hw: SimHardware;
let report: Uint8Array;
const measurement = new Uint8Array(48).fill(0xab);
const reportData = Uint8Array.from({ length: 64 }, (_, i) => i);
const hostData = new Uint8Array(32).fill(7);

before(async () => {
  hw = await generateSimHardware({ now: NOW });
  report = await simReportFrom(hw, { measurement, reportData, hostData, svn: 5 });
});

const opts = () => ({ now: NOW, roots: [simRootAnchor(hw)], allowSimulation: true });
const hasCode = (code: string) => (e: unknown) => isCloisterError(e) && e.code === code;

test('round trip: create, parse and verify give back every field', async () => {
  const claims = await verifySimReport(report, opts());
  assert.equal(claims.tee, 'sim');
  assert.equal(claims.measurement, 'ab'.repeat(48));
  assert.equal(claims.hostData, '07'.repeat(32));
  assert.equal(claims.reportData, Buffer.from(reportData).toString('hex'));
  assert.equal(claims.svn, 5);
  assert.equal(claims.debug, false);
  const spkiHash = createHash('sha256').update(hw.platformSpkiDer).digest('hex');
  assert.equal(claims.platformId, spkiHash.slice(0, 32));
  const p = parseSimReport(report);
  assert.equal(Buffer.from(report.subarray(0, 8)).toString('latin1'), 'CLSIMRPT');
  assert.equal(p.version, 2);
  assert.equal(report.length, 0xb4 + p.platformCertDer.length + 64);
});

test('the debug flag is reported as a claim', async () => {
  const dbg = await simReportFrom(hw, { measurement, reportData, debug: true });
  const claims = await verifySimReport(dbg, opts());
  assert.equal(claims.debug, true);
  assert.equal(claims.hostData, '00'.repeat(32));
});

test('refused with POLICY_SIMULATION unless allowed and a sim root is pinned', async () => {
  for (const o of [
    { ...opts(), allowSimulation: false },
    { ...opts(), roots: [] },
    { now: NOW, roots: [simRootAnchor(hw)] } as unknown as ReturnType<typeof opts>,
  ]) {
    await assert.rejects(
      verifySimReport(report, o),
      (e: unknown) =>
        e instanceof VerificationError && e.code === 'POLICY_SIMULATION' && e.layer === 'POLICY',
    );
  }
});

test('a report from other sim hardware is refused (chain to a root that is not pinned)', async () => {
  const other = await generateSimHardware({ now: NOW });
  const foreign = await simReportFrom(other, { measurement, reportData });
  // Its platform certificate names the pinned root (every sim root has the same default name),
  // but that root's key did not sign it.
  await assert.rejects(
    verifySimReport(foreign, opts()),
    (e: unknown) =>
      e instanceof VerificationError && e.layer === 'CHAIN' && e.code === 'CHAIN_SIGNATURE_INVALID',
  );
  // Same certificate, but signed with another platform key: signature layer.
  const forged = await createSimReport({
    platformKey: other.platformKey,
    platformCertDer: hw.platformCertDer,
    platformSpkiDer: hw.platformSpkiDer,
    measurement,
    reportData,
  });
  await assert.rejects(verifySimReport(forged, opts()), hasCode('SIGNATURE_INVALID'));
  // Correct key, but a platform id derived from another key: binding layer.
  const lying = await createSimReport({
    platformKey: hw.platformKey,
    platformCertDer: hw.platformCertDer,
    platformSpkiDer: other.platformSpkiDer,
    measurement,
    reportData,
  });
  await assert.rejects(verifySimReport(lying, opts()), hasCode('BINDING_MISMATCH'));
});

test('expired sim hardware is refused', async () => {
  await assert.rejects(
    verifySimReport(report, { ...opts(), now: new Date('2040-01-01T00:00:00Z') }),
    hasCode('CHAIN_EXPIRED'),
  );
});

test('every single-byte mutation of a report is rejected with a verification error', async () => {
  for (let i = 0; i < report.length; i++) {
    const m = new Uint8Array(report);
    m[i] = (m[i] as number) ^ 0x01;
    await assert.rejects(
      verifySimReport(m, opts()),
      (e: unknown) => e instanceof VerificationError,
      `mutation at offset ${i} was accepted`,
    );
  }
});

test('malformed reports: truncation, trailing bytes, version, reserved flags, cert length', async () => {
  await assert.rejects(
    verifySimReport(report.subarray(0, report.length - 1), opts()),
    hasCode('EVIDENCE_TRUNCATED'),
  );
  await assert.rejects(verifySimReport(new Uint8Array(0), opts()), hasCode('EVIDENCE_TRUNCATED'));
  const longer = new Uint8Array(report.length + 1);
  longer.set(report);
  assert.throws(() => parseSimReport(longer), hasCode('EVIDENCE_TRAILING_BYTES'));
  // Version 1 (the P-384 format) and unknown versions are refused.
  for (const version of [1, 3]) {
    const other = new Uint8Array(report);
    other[8] = version;
    assert.throws(() => parseSimReport(other), hasCode('EVIDENCE_UNSUPPORTED_VERSION'));
  }
  const flags = new Uint8Array(report);
  flags[0x0a] = 0x02;
  assert.throws(() => parseSimReport(flags), hasCode('EVIDENCE_BAD_FIELD'));
  const zeroLen = new Uint8Array(report);
  zeroLen.fill(0, 0xb0, 0xb4);
  assert.throws(() => parseSimReport(zeroLen), hasCode('EVIDENCE_BAD_FIELD'));
  const hugeLen = new Uint8Array(report);
  hugeLen.fill(0xff, 0xb0, 0xb4);
  assert.throws(() => parseSimReport(hugeLen), hasCode('EVIDENCE_BAD_FIELD'));
  const badMagic = new Uint8Array(report);
  badMagic[0] = 0x58;
  assert.throws(() => parseSimReport(badMagic), hasCode('EVIDENCE_BAD_FIELD'));
});

test('property: arbitrary bytes never crash the parser or the verifier', async () => {
  const header = report.subarray(0, 0xb4);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 400 }),
        fc.uint8Array({ maxLength: 300 }).map((tail) => {
          const b = new Uint8Array(header.length + tail.length);
          b.set(header);
          b.set(tail, header.length);
          return b;
        }),
      ),
      async (bytes) => {
        try {
          await verifySimReport(bytes, opts());
          return false;
        } catch (e) {
          return e instanceof VerificationError;
        }
      },
    ),
    { numRuns: 300, seed: 42 },
  );
});

test('simMeasurement follows the documented encoding (computed independently)', async () => {
  const exe = new TextEncoder().encode('#!/bin/sh\necho hi\n');
  const args = ['--listen', ':8080', 'é'];
  const parts: Buffer[] = [Buffer.from('cloister/sim/measure/v1')];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const items = [Buffer.from(exe), ...args.map((a) => Buffer.from(a, 'utf8'))];
  parts.push(u32(items.length));
  for (const it of items) parts.push(u32(it.length), it);
  const expected = createHash('sha384').update(Buffer.concat(parts)).digest('hex');
  assert.equal(Buffer.from(await simMeasurement(exe, args)).toString('hex'), expected);
  // Length prefixes make the encoding injective.
  const a = await simMeasurement(exe, ['ab', 'c']);
  const b = await simMeasurement(exe, ['a', 'bc']);
  assert.notDeepEqual(a, b);
});

test('the framing hashed around a streamed executable gives simMeasurement', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 4096 }),
      fc.array(fc.string({ unit: 'grapheme', maxLength: 12 }), { maxLength: 5 }),
      fc.integer({ min: 1, max: 997 }),
      async (exe, args, piece) => {
        const { head, tail } = simMeasurementFraming(exe.length, args);
        const h = createHash('sha384').update(head);
        for (let o = 0; o < exe.length; o += piece) h.update(exe.subarray(o, o + piece));
        assert.equal(
          h.update(tail).digest('hex'),
          Buffer.from(await simMeasurement(exe, args)).toString('hex'),
        );
      },
    ),
    { numRuns: 200 },
  );
});

test('sim hardware survives export and import; a mismatched platform key is refused', async () => {
  const files = await exportSimHardware(hw);
  assert.match(files['root.crt.pem'], /^-----BEGIN CERTIFICATE-----/);
  assert.equal((JSON.parse(files['platform.key.jwk']) as { crv: string }).crv, 'P-256');
  const back = await importSimHardware(files);
  const r = await simReportFrom(back, { measurement, reportData });
  assert.equal((await verifySimReport(r, { ...opts(), roots: [simRootAnchor(back)] })).svn, 0);
  const other = await exportSimHardware(await generateSimHardware({ now: NOW }));
  await assert.rejects(
    importSimHardware({ ...files, 'platform.key.jwk': other['platform.key.jwk'] }),
    hasCode('EVIDENCE_BAD_FIELD'),
  );
  await assert.rejects(
    importSimHardware({ ...files, 'platform.key.jwk': '{}' }),
    hasCode('EVIDENCE_BAD_ENCODING'),
  );
  await assert.rejects(
    importSimHardware({ ...files, 'root.crt.pem': 'nope' }),
    hasCode('CERT_MALFORMED'),
  );
});

test('the platform chain cache never widens what verifies: time, roots, exact bytes', async () => {
  const anchor = simRootAnchor(hw);
  const at = (now: Date) => ({ now, roots: [anchor], allowSimulation: true });
  // Cached now.
  await verifySimReport(report, at(NOW));
  await verifySimReport(report, at(NOW));
  // A later time outside the platform certificate's validity still fails (ten years ahead).
  const later = new Date(NOW.getTime() + 11 * 365 * 86_400_000);
  await assert.rejects(verifySimReport(report, at(later)), hasCode('CHAIN_EXPIRED'));
  const earlier = new Date(NOW.getTime() - 2 * 86_400_000);
  await assert.rejects(verifySimReport(report, at(earlier)), hasCode('CHAIN_EXPIRED'));
  // Another pinned root (another sim platform) does not reuse the cached result.
  const other = await generateSimHardware({ now: NOW });
  await assert.rejects(
    verifySimReport(report, { now: NOW, roots: [simRootAnchor(other)], allowSimulation: true }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
  // A report whose signature is wrong fails even though its certificate is cached.
  const bad = report.slice();
  bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
  await assert.rejects(verifySimReport(bad, at(NOW)), hasCode('SIGNATURE_INVALID'));
  // Another platform's report (other certificate bytes) under the first root fails.
  const foreign = await simReportFrom(other, { measurement, reportData });
  await assert.rejects(
    verifySimReport(foreign, at(NOW)),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
});

test('the platform chain: a self-signed platform certificate is not a pinned root', async () => {
  // Other hardware's root certificate used as the platform certificate, reports signed with
  // that root's key: a self-signed certificate whose key is not the pinned one.
  const other = await generateSimHardware({ now: NOW });
  assert.ok(other.rootKey);
  const rootSpki = new Uint8Array(parseCertificate(other.rootCertDer).publicKey.rawData);
  const selfSigned = await createSimReport({
    platformKey: other.rootKey,
    platformCertDer: other.rootCertDer,
    platformSpkiDer: rootSpki,
    measurement,
    reportData,
  });
  await assert.rejects(
    verifySimReport(selfSigned, opts()),
    (e: unknown) => isCloisterError(e) && e.code === 'CHAIN_UNTRUSTED_ROOT',
  );
});

test('the platform chain: the root is checked at `now` as well as the platform certificate', async () => {
  const root = await makeRoot('CN=Short-lived sim root', {
    notBefore: new Date('2026-01-01T00:00:00Z'),
    notAfter: new Date('2026-06-01T00:00:00Z'),
  });
  const platform = await makeCert(root, 'CN=Long-lived sim platform', {
    notBefore: new Date('2026-01-01T00:00:00Z'),
    notAfter: new Date('2036-01-01T00:00:00Z'),
  });
  const r = await createSimReport({
    platformKey: platform.keys.privateKey,
    platformCertDer: der(platform.cert),
    platformSpkiDer: new Uint8Array(platform.cert.publicKey.rawData),
    measurement,
    reportData,
  });
  const roots = [trustAnchor('short-lived', der(root.cert))];
  const at = (t: string) => ({ now: new Date(t), roots, allowSimulation: true });
  await verifySimReport(r, at('2026-03-01T00:00:00Z'));
  await assert.rejects(
    verifySimReport(r, at('2026-09-01T00:00:00Z')),
    (e: unknown) => isCloisterError(e) && e.code === 'CHAIN_EXPIRED',
  );
});
