/**
 * Edge cases of the vendor chains where a certificate that is genuine, but of the wrong kind,
 * could vouch for what only a vendor CA may vouch for:
 *  - Intel: TCB Info and QE Identity are signed by the Intel SGX TCB Signing certificate, which
 *    the Intel SGX Root CA issues directly (Intel QVL `TCBSigningChain`). A PCK certificate also
 *    chains to that root (through a PCK CA), and its key lives on a platform: a key extracted
 *    from one out-of-date platform must not be able to sign TCB levels that call it up to date.
 *  - AMD: a VCEK is issued by the ASK, the ASK by the ARK (spec 57230). A VCEK key extracted
 *    from one chip must not be able to certify "VCEKs" for other chips or newer TCBs.
 * Where such a certificate issues another (the AMD case), the path builder's CA rules
 * (pki/path.ts) refuse it too, since a VCEK is not a CA; the chain-shape rules are tested on
 * their own as well.
 * Synthetic hierarchies in the vendors' shape, since no real vector comes with private keys.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as asn1js from 'asn1js';
import * as x509 from '@peculiar/x509';
import { arrayBufferView as buf } from '@cloister/bytes';
import type { CloisterError } from '@cloister/errors';
import { toHex, trustAnchor, verifyDcapQuote, verifySnpReport } from '@cloister/evidence';
import type { SnpProductRoots } from '@cloister/evidence';
import { hasCode } from '@cloister/testkit';
import {
  DCAP_NOW,
  intelCollateral,
  intelShaped,
  makePck,
  pem,
  QE_IDENTITY,
  sgxQuote,
  TCB_INFO,
} from './dcap-fixtures.js';
import { caExtensions, der, KU } from './pki-fixtures.js';

const subtle = globalThis.crypto.subtle;

/** The CHAIN error `code` whose details name `rule`. */
const hasRule =
  (code: string, rule: string) =>
  (e: unknown): boolean =>
    hasCode(code, 'CHAIN')(e) && (e as CloisterError).details?.['rule'] === rule;

async function signP256(key: CryptoKey, text: string): Promise<string> {
  const data = new TextEncoder().encode(text);
  return toHex(
    new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, buf(data))),
  );
}

test('DCAP: TCB Info or QE Identity signed by a PCK key (chained through its PCK CA) is refused', async () => {
  const h = await intelShaped();
  const roots = [trustAnchor('test root', der(h.root.cert))];
  const quote = await sgxQuote(h.pck, [h.pck, h.pckCa, h.root]);
  // The genuine collateral verifies.
  const ok = await verifyDcapQuote(quote, {
    collateral: await intelCollateral(h),
    now: DCAP_NOW,
    roots,
  });
  assert.equal(ok.tcbStatus, 'UpToDate');

  // The key of another platform's PCK certificate (genuine, under the genuine PCK CA).
  const leaked = await makePck(h.pckCa, '0d');
  const leakedChain = pem(leaked, h.pckCa, h.root);
  const forgedTcb = await intelCollateral(h, {
    tcb_info_issuer_chain: leakedChain,
    tcb_info_signature: await signP256(leaked.keys.privateKey, TCB_INFO),
  });
  await assert.rejects(
    verifyDcapQuote(quote, { collateral: forgedTcb, now: DCAP_NOW, roots }),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
  const forgedQe = await intelCollateral(h, {
    qe_identity_issuer_chain: leakedChain,
    qe_identity_signature: await signP256(leaked.keys.privateKey, QE_IDENTITY),
  });
  await assert.rejects(
    verifyDcapQuote(quote, { collateral: forgedQe, now: DCAP_NOW, roots }),
    hasCode('CHAIN_INCOMPLETE', 'CHAIN'),
  );
});

const SNP_SIGN = { name: 'ECDSA', hash: 'SHA-384' } as const;
const SNP_KEY = { name: 'ECDSA', namedCurve: 'P-384' } as const;
const NOW = new Date('2026-01-01T00:00:00Z');
const FROM = new Date('2025-01-01T00:00:00Z');
const TO = new Date('2030-01-01T00:00:00Z');
const AMD = 'OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices';
const ARC = '1.3.6.1.4.1.3704.1';
const snpKeys = (): Promise<CryptoKeyPair> => subtle.generateKey(SNP_KEY, true, ['sign', 'verify']);
const intExt = (oid: string, n: number): x509.Extension =>
  new x509.Extension(oid, false, new asn1js.Integer({ value: n }).toBER());

interface Tcb {
  readonly bl: number;
  readonly tee: number;
  readonly snp: number;
  readonly ucode: number;
}

/** A Milan VCEK for `chip` at `tcb`, named `subject`, issued by `issuer` with `signer`. */
function vcek(
  subject: string,
  issuer: string,
  signer: CryptoKey,
  key: CryptoKey,
  chip: Uint8Array,
  tcb: Tcb,
  extra: readonly x509.Extension[] = [],
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    subject,
    issuer,
    publicKey: key,
    signingKey: signer,
    serialNumber: '00',
    notBefore: FROM,
    notAfter: TO,
    signingAlgorithm: SNP_SIGN,
    extensions: [
      intExt(`${ARC}.1`, 1),
      new x509.Extension(`${ARC}.2`, false, new asn1js.IA5String({ value: 'Milan-B0' }).toBER()),
      intExt(`${ARC}.3.1`, tcb.bl),
      intExt(`${ARC}.3.2`, tcb.tee),
      intExt(`${ARC}.3.3`, tcb.snp),
      intExt(`${ARC}.3.8`, tcb.ucode),
      new x509.Extension(`${ARC}.4`, false, buf(chip)),
      ...extra,
    ],
  });
}

/** A v3 Milan report for `chip` at `tcb`, signed by `key`. */
async function snpReport(key: CryptoKey, chip: Uint8Array, tcb: Tcb): Promise<Uint8Array> {
  const b = new Uint8Array(0x4a0);
  const dv = new DataView(b.buffer);
  dv.setUint32(0x00, 3, true);
  dv.setBigUint64(0x08, 0x30000n, true);
  dv.setUint32(0x34, 1, true);
  for (const off of [0x38, 0x180, 0x1e0, 0x1f0]) {
    b[off] = tcb.bl;
    b[off + 1] = tcb.tee;
    b[off + 6] = tcb.snp;
    b[off + 7] = tcb.ucode;
  }
  b[0x188] = 0x19;
  b[0x189] = 0x01;
  b[0x18a] = 0x01;
  b.set(chip, 0x1a0);
  b[0x1e9] = 55;
  b[0x1ea] = 1;
  const sig = new Uint8Array(await subtle.sign(SNP_SIGN, key, b.subarray(0, 0x2a0)));
  for (let i = 0; i < 48; i++) {
    b[0x2a0 + i] = sig[47 - i] as number;
    b[0x2e8 + i] = sig[95 - i] as number;
  }
  return b;
}

test('SNP: a "VCEK" certified by another chip’s VCEK key (VCEK <- VCEK <- ASK <- ARK) is refused', async () => {
  const arkKeys = await snpKeys();
  const askKeys = await snpKeys();
  const ark = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=ARK-Milan, ${AMD}`,
    keys: arkKeys,
    serialNumber: '01',
    notBefore: FROM,
    notAfter: TO,
    signingAlgorithm: SNP_SIGN,
    extensions: caExtensions(),
  });
  const inter = (cn: string, serial: string, pathLen: number | null = 0) =>
    x509.X509CertificateGenerator.create({
      subject: `CN=${cn}, ${AMD}`,
      issuer: ark.subject,
      publicKey: askKeys.publicKey,
      signingKey: arkKeys.privateKey,
      serialNumber: serial,
      notBefore: FROM,
      notAfter: TO,
      signingAlgorithm: SNP_SIGN,
      extensions: caExtensions({
        ...(pathLen === null ? {} : { pathLen }),
        keyUsage: KU.keyCertSign,
      }),
    });
  const ask = await inter('SEV-Milan', '02');
  const asvk = await inter('SEV-VLEK-Milan', '03');
  const roots: SnpProductRoots = {
    product: 'Milan',
    ark: trustAnchor('ARK-Milan', der(ark)),
    ask,
    asvk,
  };
  const oldTcb: Tcb = { bl: 2, tee: 0, snp: 5, ucode: 68 };
  const newTcb: Tcb = { bl: 9, tee: 0, snp: 30, ucode: 250 };
  const chipA = new Uint8Array(64).fill(0xa1);
  const chipB = new Uint8Array(64).fill(0xb2);

  // Chip A's genuine VCEK at an old TCB; its key has been extracted.
  const leakedKeys = await snpKeys();
  const leaked = await vcek(
    `CN=SEV-VCEK, ${AMD}`,
    ask.subject,
    askKeys.privateKey,
    leakedKeys.publicKey,
    chipA,
    oldTcb,
  );
  const genuine = await verifySnpReport(await snpReport(leakedKeys.privateKey, chipA, oldTcb), {
    now: NOW,
    vcek: der(leaked),
    roots: { Milan: roots },
  });
  assert.equal(genuine.claims.reportedTcb.snp, 5);

  // With it, a "VCEK" for chip B at a current TCB, certified by chip A's VCEK.
  const forgedKeys = await snpKeys();
  const forged = await vcek(
    `CN=SEV-VCEK, OU=Forged, ${AMD}`,
    leaked.subject,
    leakedKeys.privateKey,
    forgedKeys.publicKey,
    chipB,
    newTcb,
  );
  const forgedReport = await snpReport(forgedKeys.privateKey, chipB, newTcb);
  const run = (beside: x509.X509Certificate, r = roots) =>
    verifySnpReport(forgedReport, {
      now: NOW,
      vcek: der(forged),
      collateral: { chain: [der(beside)] },
      roots: { Milan: r },
    });
  // A VCEK, as AMD issues it, has no basicConstraints: it is not a CA and issues nothing.
  await assert.rejects(run(leaked), hasRule('CHAIN_ISSUER_CONSTRAINT', 'basicConstraints.cA'));
  // Were a VCEK ever issued with cA TRUE, the ASK's pathLenConstraint 0 still refuses it ...
  const leakedCa = await vcek(
    leaked.subject,
    ask.subject,
    askKeys.privateKey,
    leakedKeys.publicKey,
    chipA,
    oldTcb,
    caExtensions(),
  );
  await assert.rejects(run(leakedCa), hasRule('CHAIN_ISSUER_CONSTRAINT', 'pathLenConstraint'));
  // ... and under an ASK without one, the chain shape (exactly VCEK, ASK, ARK) does.
  const unlimited = { ...roots, ask: await inter('SEV-Milan', '04', null) };
  await assert.rejects(run(leakedCa, unlimited), hasCode('CHAIN_INCOMPLETE', 'CHAIN'));
});
