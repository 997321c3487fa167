/**
 * SEV-SNP verification against a synthetic AMD-shaped hierarchy (test ARK -> ASK/ASVK ->
 * VCEK/VLEK, same names and extensions as AMD's), for the cases no real vector covers: CRL
 * revocation of an ASK, expired or forged CRLs, missing or contradicting VCEK extensions, the
 * OCTET STRING-wrapped hwID form, VLEK without cspID, a non-P-384 key, and Bergamo models.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as asn1js from 'asn1js';
import * as x509 from '@peculiar/x509';
import { isCloisterError, VerificationError } from '@cloister/errors';
import { trustAnchor, verifySnpReport } from '@cloister/evidence';
import type { SnpProductRoots } from '@cloister/evidence';
import { caExtensions, KU } from './pki-fixtures.js';

const subtle = globalThis.crypto.subtle;
const ALG = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-384' } as const;
const NOW = new Date('2026-01-01T00:00:00Z');
const FROM = new Date('2025-01-01T00:00:00Z');
const TO = new Date('2030-01-01T00:00:00Z');
const AMD = 'OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices';

function hasCode(code: string, layer?: string) {
  return (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (layer !== undefined) assert.ok(e instanceof VerificationError && e.layer === layer);
    return true;
  };
}

const keys = (): Promise<CryptoKeyPair> => subtle.generateKey(ALG, true, ['sign', 'verify']);
const der = (c: x509.X509Certificate): Uint8Array => new Uint8Array(c.rawData);

const intExt = (oid: string, n: number): x509.Extension =>
  new x509.Extension(oid, false, new asn1js.Integer({ value: n }).toBER());
const strExt = (oid: string, s: string): x509.Extension =>
  new x509.Extension(oid, false, new asn1js.IA5String({ value: s }).toBER());

interface Tcb {
  bl: number;
  tee: number;
  snp: number;
  ucode: number;
}

interface LeafOptions {
  kind?: 'vcek' | 'vlek';
  productName?: string;
  tcb?: Tcb;
  hwId?: Uint8Array;
  wrapHwId?: boolean;
  omit?: readonly string[];
  cspId?: string | null;
  keyPair?: CryptoKeyPair;
  /** A keyUsage extension (`KU` flags); AMD's VCEKs and VLEKs carry none. */
  keyUsage?: number;
}

const ARC = '1.3.6.1.4.1.3704.1';
const CHIP = Uint8Array.from({ length: 64 }, (_, i) => (i * 7 + 3) & 0xff);
const TCB: Tcb = { bl: 3, tee: 0, snp: 8, ucode: 115 };

async function hierarchy(
  product: 'Milan' | 'Genoa',
  o: { askValidity?: { from: Date; to: Date } } = {},
) {
  const arkKeys = await keys();
  const askKeys = await keys();
  const asvkKeys = await keys();
  const ark = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=ARK-${product}, ${AMD}`,
    keys: arkKeys,
    serialNumber: '01',
    notBefore: FROM,
    notAfter: TO,
    signingAlgorithm: SIGN,
    extensions: caExtensions(),
  });
  // AMD's ASK and ASVK: cA TRUE, pathLenConstraint 0, keyCertSign only.
  const inter = (cn: string, k: CryptoKeyPair, serial: string, validity = { from: FROM, to: TO }) =>
    x509.X509CertificateGenerator.create({
      subject: `CN=${cn}, ${AMD}`,
      issuer: ark.subject,
      publicKey: k.publicKey,
      signingKey: arkKeys.privateKey,
      serialNumber: serial,
      notBefore: validity.from,
      notAfter: validity.to,
      signingAlgorithm: SIGN,
      extensions: caExtensions({ pathLen: 0, keyUsage: KU.keyCertSign }),
    });
  const ask = await inter(`SEV-${product}`, askKeys, '02', o.askValidity);
  const asvk = await inter(`SEV-VLEK-${product}`, asvkKeys, '03');
  const roots: SnpProductRoots = {
    product,
    ark: trustAnchor(`ARK-${product}`, der(ark)),
    ask,
    asvk,
  };

  async function leaf(o: LeafOptions = {}) {
    const kind = o.kind ?? 'vcek';
    const k = o.keyPair ?? (await keys());
    const tcb = o.tcb ?? TCB;
    const hw = o.hwId ?? CHIP;
    const hwValue =
      o.wrapHwId === true ? new asn1js.OctetString({ valueHex: hw }).toBER() : new Uint8Array(hw);
    const exts: [string, x509.Extension][] = [
      ['structVersion', intExt(`${ARC}.1`, 1)],
      ['productName1', strExt(`${ARC}.2`, o.productName ?? `${product}-B0`)],
      ['blSPL', intExt(`${ARC}.3.1`, tcb.bl)],
      ['teeSPL', intExt(`${ARC}.3.2`, tcb.tee)],
      ['snpSPL', intExt(`${ARC}.3.3`, tcb.snp)],
      ['ucodeSPL', intExt(`${ARC}.3.8`, tcb.ucode)],
    ];
    if (kind === 'vcek') exts.push(['hwID', new x509.Extension(`${ARC}.4`, false, hwValue)]);
    if (kind === 'vlek' && o.cspId !== null) {
      exts.push(['cspID', strExt(`${ARC}.5`, o.cspId ?? 'CN=csp.example')]);
    }
    if (o.keyUsage !== undefined) {
      exts.push(['keyUsage', new x509.KeyUsagesExtension(o.keyUsage, true)]);
    }
    const issuer = kind === 'vcek' ? ask : asvk;
    const cert = await x509.X509CertificateGenerator.create({
      subject: `CN=SEV-${kind.toUpperCase()}, ${AMD}`,
      issuer: issuer.subject,
      publicKey: k.publicKey,
      signingKey: kind === 'vcek' ? askKeys.privateKey : asvkKeys.privateKey,
      serialNumber: '00',
      notBefore: FROM,
      notAfter: TO,
      signingAlgorithm: SIGN,
      extensions: exts.filter(([n]) => !(o.omit ?? []).includes(n)).map(([, e]) => e),
    });
    return { cert: der(cert), keys: k };
  }

  async function crl(o: { revoke?: string[]; next?: Date; signer?: CryptoKey } = {}) {
    const c = await x509.X509CrlGenerator.create({
      issuer: ark.subject,
      thisUpdate: FROM,
      nextUpdate: o.next ?? TO,
      entries: (o.revoke ?? []).map((serialNumber) => ({ serialNumber, revocationDate: FROM })),
      signingKey: o.signer ?? arkKeys.privateKey,
      signingAlgorithm: SIGN,
    });
    return new Uint8Array(c.rawData);
  }

  return { roots, leaf, crl, askKeys, ark };
}

interface ReportOptions {
  signingKey?: 0 | 1;
  family?: number;
  model?: number;
  tcb?: Tcb;
  chip?: Uint8Array;
}

/** A v3 report with the Milan/Genoa TCB layout, signed by `key`. */
async function report(key: CryptoKey, o: ReportOptions = {}): Promise<Uint8Array> {
  const b = new Uint8Array(0x4a0);
  const dv = new DataView(b.buffer);
  dv.setUint32(0x00, 3, true);
  dv.setBigUint64(0x08, 0x30000n, true);
  dv.setUint32(0x34, 1, true);
  dv.setUint32(0x48, (o.signingKey ?? 0) << 2, true);
  const tcb = o.tcb ?? TCB;
  for (const off of [0x38, 0x180, 0x1e0, 0x1f0]) {
    b[off] = tcb.bl;
    b[off + 1] = tcb.tee;
    b[off + 6] = tcb.snp;
    b[off + 7] = tcb.ucode;
  }
  b.fill(0xab, 0x50, 0x90); // report_data
  b.fill(0xcd, 0x90, 0xc0); // measurement
  b[0x188] = o.family ?? 0x19;
  b[0x189] = o.model ?? 0x01;
  b[0x18a] = 0x01;
  b.set(o.chip ?? CHIP, 0x1a0);
  b[0x1e8] = 4;
  b[0x1e9] = 55;
  b[0x1ea] = 1;
  const sig = new Uint8Array(await subtle.sign(SIGN, key, b.subarray(0, 0x2a0)));
  for (let i = 0; i < 48; i++) {
    b[0x2a0 + i] = sig[47 - i] as number; // r, little-endian
    b[0x2e8 + i] = sig[95 - i] as number; // s, little-endian
  }
  return b;
}

test('synthetic hierarchy: a well-formed report verifies; wrapped hwID is accepted', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  const a = await h.leaf();
  const res = await verifySnpReport(await report(a.keys.privateKey), {
    now: NOW,
    vcek: a.cert,
    roots,
  });
  assert.equal(res.product, 'Milan');
  assert.deepEqual(res.claims.reportedTcb, { bootloader: 3, tee: 0, snp: 8, microcode: 115 });
  assert.equal(res.claims.firmware.minor, 55);

  const w = await h.leaf({ wrapHwId: true });
  await verifySnpReport(await report(w.keys.privateKey), { now: NOW, vcek: w.cert, roots });
});

test('synthetic hierarchy: CRL revocation, expiry and forgery', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  const a = await h.leaf();
  const r = await report(a.keys.privateKey);
  const clean = await h.crl({ revoke: ['7f'] });
  await verifySnpReport(r, { now: NOW, vcek: a.cert, roots, collateral: { crl: clean } });
  // The ASK is revoked: a leaked intermediate stops vouching, even with the chain cached.
  const revoked = await h.crl({ revoke: ['02'] });
  await assert.rejects(
    verifySnpReport(r, { now: NOW, vcek: a.cert, roots, collateral: { crl: revoked } }),
    hasCode('CHAIN_REVOKED', 'CHAIN'),
  );
  const stale = await h.crl({ next: new Date('2025-06-01T00:00:00Z') });
  await assert.rejects(
    verifySnpReport(r, { now: NOW, vcek: a.cert, roots, collateral: { crl: stale } }),
    hasCode('COLLATERAL_EXPIRED', 'COLLATERAL'),
  );
  const forged = await h.crl({ signer: h.askKeys.privateKey });
  await assert.rejects(
    verifySnpReport(r, { now: NOW, vcek: a.cert, roots, collateral: { crl: forged } }),
    hasCode('COLLATERAL_SIGNATURE_INVALID', 'COLLATERAL'),
  );
  await assert.rejects(
    verifySnpReport(r, { now: NOW, vcek: a.cert, roots, collateral: { crl: new Uint8Array(8) } }),
    hasCode('CERT_MALFORMED', 'PARSE'),
  );
});

test('synthetic hierarchy: a VCEK or VLEK with a keyUsage must allow digitalSignature', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  for (const kind of ['vcek', 'vlek'] as const) {
    const run = async (keyUsage?: number) => {
      const l = await h.leaf({ kind, ...(keyUsage === undefined ? {} : { keyUsage }) });
      const r = await report(
        l.keys.privateKey,
        kind === 'vcek' ? {} : { signingKey: 1, chip: new Uint8Array(64) },
      );
      return verifySnpReport(r, { now: NOW, vcek: l.cert, roots });
    };
    for (const bad of [KU.keyAgreement, KU.nonRepudiation | KU.keyEncipherment]) {
      await assert.rejects(run(bad), (e: unknown) => {
        hasCode('CHAIN_ISSUER_CONSTRAINT', 'CHAIN')(e);
        assert.equal((e as VerificationError).details?.['rule'], 'keyUsage.digitalSignature');
        return true;
      });
    }
    // AMD's shape (no keyUsage) and a keyUsage with digitalSignature verify.
    assert.equal((await run()).signingKey, kind);
    assert.equal((await run(KU.digitalSignature)).signingKey, kind);
  }
});

test('synthetic hierarchy: VCEK extensions must be present and match', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  for (const omit of ['productName1', 'blSPL', 'teeSPL', 'snpSPL', 'ucodeSPL', 'hwID']) {
    const l = await h.leaf({ omit: [omit] });
    await assert.rejects(
      verifySnpReport(await report(l.keys.privateKey), { now: NOW, vcek: l.cert, roots }),
      hasCode('CHAIN_BAD_EXTENSION', 'CHAIN'),
      omit,
    );
  }
  const cases: LeafOptions[] = [
    { tcb: { ...TCB, bl: 4 } },
    { tcb: { ...TCB, snp: 7 } },
    { tcb: { ...TCB, ucode: 116 } },
    { hwId: CHIP.map((x) => x ^ 1) },
    { hwId: CHIP.subarray(0, 8) },
    { productName: 'Genoa' },
    { productName: 'Rome' },
  ];
  for (const o of cases) {
    const l = await h.leaf(o);
    await assert.rejects(
      verifySnpReport(await report(l.keys.privateKey), { now: NOW, vcek: l.cert, roots }),
      (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
      JSON.stringify(o),
    );
  }
});

test('synthetic hierarchy: VLEK needs cspID and the VLEK flag', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  const v = await h.leaf({ kind: 'vlek' });
  const masked = new Uint8Array(64);
  const res = await verifySnpReport(
    await report(v.keys.privateKey, { signingKey: 1, chip: masked }),
    { now: NOW, vcek: v.cert, roots },
  );
  assert.equal(res.signingKey, 'vlek');
  const noCsp = await h.leaf({ kind: 'vlek', cspId: null });
  await assert.rejects(
    verifySnpReport(await report(noCsp.keys.privateKey, { signingKey: 1 }), {
      now: NOW,
      vcek: noCsp.cert,
      roots,
    }),
    hasCode('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
  // VLEK certificate, report flagged VCEK: the ASK does not sign VLEKs.
  await assert.rejects(
    verifySnpReport(await report(v.keys.privateKey, { signingKey: 0 }), {
      now: NOW,
      vcek: v.cert,
      roots,
    }),
    (e: unknown) => e instanceof VerificationError && e.layer === 'CHAIN',
  );
});

test('synthetic hierarchy: signature by another key, and a non-P-384 key', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  const a = await h.leaf();
  const other = await keys();
  await assert.rejects(
    verifySnpReport(await report(other.privateKey), { now: NOW, vcek: a.cert, roots }),
    hasCode('SIGNATURE_INVALID', 'SIGNATURE'),
  );
  const p256 = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const l = await h.leaf({ keyPair: p256 });
  await assert.rejects(
    verifySnpReport(await report(a.keys.privateKey), { now: NOW, vcek: l.cert, roots }),
    hasCode('CHAIN_BAD_EXTENSION', 'CHAIN'),
  );
});

test('synthetic hierarchy: Bergamo (family 0x19, model 0xA0) is a Genoa-family product', async () => {
  const h = await hierarchy('Genoa');
  const l = await h.leaf({ productName: 'Genoa' });
  const res = await verifySnpReport(await report(l.keys.privateKey, { model: 0xa0 }), {
    now: NOW,
    vcek: l.cert,
    roots: { Genoa: h.roots },
  });
  assert.equal(res.product, 'Genoa');
});

test('synthetic hierarchy: the shared path builder refuses what does not chain to the pinned ARK', async () => {
  const h = await hierarchy('Milan');
  const roots = { Milan: h.roots };
  const a = await h.leaf();
  const r = await report(a.keys.privateKey);
  const derOf = (c: x509.X509Certificate) => new Uint8Array(c.rawData);
  // The evidence may carry the ASK and ARK.
  await verifySnpReport(r, {
    now: NOW,
    vcek: a.cert,
    roots,
    collateral: { chain: [derOf(h.roots.ask), derOf(h.ark)] },
  });
  // A certificate beside the evidence that is not on the path (the ASVK, beside a VCEK) is
  // ignored, never trusted.
  const withAsvk = await verifySnpReport(r, {
    now: NOW,
    vcek: a.cert,
    roots,
    collateral: { chain: [derOf(h.roots.asvk)] },
  });
  assert.deepEqual(
    withAsvk.chain.path.map((c) => c.subject),
    [`CN=SEV-VCEK, ${AMD}`, h.roots.ask.subject, h.ark.subject],
  );
  // An impostor hierarchy with AMD's names: its VCEK is not signed by the pinned ASK, and with
  // its own ASK and ARK carried the chain ends in an ARK whose key is not pinned.
  const fake = await hierarchy('Milan');
  const f = await fake.leaf();
  const fr = await report(f.keys.privateKey);
  await assert.rejects(
    verifySnpReport(fr, { now: NOW, vcek: f.cert, roots }),
    hasCode('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
  );
  await assert.rejects(
    verifySnpReport(fr, {
      now: NOW,
      vcek: f.cert,
      roots,
      collateral: { chain: [derOf(fake.roots.ask), derOf(fake.ark)] },
    }),
    hasCode('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
  );
  // A VLEK offered for a report flagged VCEK: only the ASK is offered, which did not issue it.
  const v = await h.leaf({ kind: 'vlek' });
  await assert.rejects(
    verifySnpReport(await report(v.keys.privateKey, { signingKey: 0 }), {
      now: NOW,
      vcek: v.cert,
      roots,
    }),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
});

test('synthetic hierarchy: the intermediate is checked at `now` too, and a foreign CRL is a mismatch', async () => {
  const h = await hierarchy('Milan', {
    askValidity: { from: FROM, to: new Date('2025-06-01T00:00:00Z') },
  });
  const roots = { Milan: h.roots };
  const a = await h.leaf();
  const r = await report(a.keys.privateKey);
  await verifySnpReport(r, { now: new Date('2025-03-01T00:00:00Z'), vcek: a.cert, roots });
  await assert.rejects(
    verifySnpReport(r, { now: NOW, vcek: a.cert, roots }),
    hasCode('CHAIN_EXPIRED', 'CHAIN'),
  );
  // The CRL of another ARK (Genoa's) names no issuer on a Milan chain.
  const ok = await hierarchy('Milan');
  const genoa = await hierarchy('Genoa');
  const l = await ok.leaf();
  await assert.rejects(
    verifySnpReport(await report(l.keys.privateKey), {
      now: NOW,
      vcek: l.cert,
      roots: { Milan: ok.roots },
      collateral: { crl: await genoa.crl() },
    }),
    hasCode('COLLATERAL_MISMATCH', 'COLLATERAL'),
  );
});
