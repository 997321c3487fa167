/**
 * Synthetic Intel DCAP material in Intel's shape, under an own root, for what the real vectors
 * cannot show (revoked certificates, CRLs signed by another key): the hierarchy (root <- TCB
 * Signing, root <- PCK Platform CA <- PCK), collateral in the dcap-qvl JSON form whose TCB Info
 * and QE Identity that TCB Signing key signs, and SGX v3 quotes whose PCK chain it issues.
 */
import { arrayBufferView as buf, concatBytes } from '@cloister/bytes';
import { toHex, type IntelCollateralJson } from '@cloister/evidence';
import {
  CA,
  der,
  END_ENTITY,
  makeCert,
  makeCrl,
  makeRoot,
  seq,
  tlv,
  type Ca,
  type CertOptions,
  type CrlOptions,
} from './pki-fixtures.js';

const subtle = globalThis.crypto.subtle;

/** Inside every window below: certificates 2025..2030, TCB Info and QE Identity June..August. */
export const DCAP_NOW = new Date('2025-07-01T00:00:00Z');
const ISSUE = '2025-06-01T00:00:00Z';
const NEXT = '2025-08-01T00:00:00Z';
const FMSPC = '00906ed50000';
const MRSIGNER = '8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff';
const QE_ATTRIBUTES = '11000000000000000000000000000000';

export const TCB_INFO = JSON.stringify({
  id: 'SGX',
  version: 3,
  issueDate: ISSUE,
  nextUpdate: NEXT,
  fmspc: FMSPC,
  pceId: '0000',
  tcbType: 0,
  tcbEvaluationDataNumber: 17,
  tcbLevels: [
    {
      tcb: { sgxtcbcomponents: new Array(16).fill({ svn: 0 }), pcesvn: 13 },
      tcbDate: '2024-03-13T00:00:00Z',
      tcbStatus: 'UpToDate',
    },
  ],
});

export const QE_IDENTITY = JSON.stringify({
  id: 'QE',
  version: 2,
  issueDate: ISSUE,
  nextUpdate: NEXT,
  tcbEvaluationDataNumber: 17,
  miscselect: '00000000',
  miscselectMask: 'FFFFFFFF',
  attributes: QE_ATTRIBUTES,
  attributesMask: 'FBFFFFFFFFFFFFFF0000000000000000',
  mrsigner: MRSIGNER,
  isvprodid: 1,
  tcbLevels: [{ tcb: { isvsvn: 8 }, tcbDate: '2024-03-13T00:00:00Z', tcbStatus: 'UpToDate' }],
});

const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
/** OID 1.2.840.113741.1.13.1 followed by the arcs `sub` (each below 128). */
const sgxOid = (...sub: number[]): Uint8Array =>
  tlv(0x06, concatBytes(hex('2a864886f84d010d01'), Uint8Array.from(sub)));
const octets = (b: Uint8Array): Uint8Array => tlv(0x04, b);
const small = (tag: number, n: number): Uint8Array => tlv(tag, Uint8Array.of(n));

/** The value of the SGX PCK extension: all TCB components 0, PCESVN 13, the TCB Info's FMSPC. */
function sgxExtension(): Uint8Array {
  const tcb: Uint8Array[] = [];
  for (let i = 1; i <= 16; i++) tcb.push(seq(sgxOid(2, i), small(0x02, 0)));
  tcb.push(seq(sgxOid(2, 17), small(0x02, 13)), seq(sgxOid(2, 18), octets(new Uint8Array(16))));
  return seq(
    seq(sgxOid(1), octets(new Uint8Array(16).fill(1))),
    seq(sgxOid(2), seq(...tcb)),
    seq(sgxOid(3), octets(new Uint8Array(2))),
    seq(sgxOid(4), octets(hex(FMSPC))),
    seq(sgxOid(5), small(0x0a, 0)),
  );
}

/** What Intel's PCK Platform and Processor CAs carry: cA TRUE, pathLenConstraint 0. */
export const INTEL_PCK_CA = { ...CA, basicConstraints: { ca: true, pathLen: 0 } } as const;

/** A PCK certificate `ca` issues (it must be named as an Intel PCK CA); `o` replaces options. */
export const makePck = (
  ca: Ca,
  serial: string,
  name = 'CN=Test PCK Certificate, O=Cloister Test',
  o: CertOptions = {},
): Promise<Ca> =>
  makeCert(ca, name, {
    ...END_ENTITY,
    serial,
    extensions: [['1.2.840.113741.1.13.1', sgxExtension()]],
    ...o,
  });

/**
 * Root (serial 01) <- TCB Signing (0a); root <- PCK Platform CA (0b) <- PCK (0c), with Intel's
 * basicConstraints and keyUsage (root pathLenConstraint 1, PCK CA 0).
 */
export async function intelShaped() {
  const root = await makeRoot('CN=Test SGX Root CA, O=Cloister Test', {
    basicConstraints: { ca: true, pathLen: 1 },
  });
  const tcbSigning = await makeCert(root, 'CN=Test TCB Signing, O=Cloister Test', {
    ...END_ENTITY,
    serial: '0a',
  });
  const pckCa = await makeCert(root, 'CN=Intel SGX PCK Platform CA, O=Cloister Test', {
    ...INTEL_PCK_CA,
    serial: '0b',
  });
  const pck = await makePck(pckCa, '0c');
  return { root, tcbSigning, pckCa, pck };
}
export type IntelShaped = Awaited<ReturnType<typeof intelShaped>>;

export const pem = (...cas: Ca[]): string => cas.map((c) => c.cert.toString('pem')).join('\n');
export const crlHex = async (issuer: Ca, o: CrlOptions = {}): Promise<string> =>
  toHex(der(await makeCrl(issuer, o)));

async function signP1363(key: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, buf(data)));
}

/** Collateral in the dcap-qvl form for `h`; `o` replaces members. */
export async function intelCollateral(
  h: IntelShaped,
  o: Partial<IntelCollateralJson> = {},
): Promise<IntelCollateralJson> {
  const text = new TextEncoder();
  const key = h.tcbSigning.keys.privateKey;
  return {
    tcb_info_issuer_chain: pem(h.tcbSigning, h.root),
    tcb_info: TCB_INFO,
    tcb_info_signature: toHex(await signP1363(key, text.encode(TCB_INFO))),
    qe_identity_issuer_chain: pem(h.tcbSigning, h.root),
    qe_identity: QE_IDENTITY,
    qe_identity_signature: toHex(await signP1363(key, text.encode(QE_IDENTITY))),
    pck_crl_issuer_chain: pem(h.pckCa, h.root),
    pck_crl: await crlHex(h.pckCa),
    root_ca_crl: await crlHex(h.root),
    ...o,
  };
}

const u16 = (n: number): Uint8Array => Uint8Array.of(n & 0xff, n >>> 8);
const u32 = (n: number): Uint8Array => Uint8Array.of(n, n >>> 8, n >>> 16, n >>> 24);

/**
 * An SGX quote v3 (sgx_quote_3_t) signed by a fresh attestation key, its QE report signed by
 * `pck` and matching {@link QE_IDENTITY}; `chain` is carried as the PEM certification data.
 */
export async function sgxQuote(pck: Ca, chain: readonly Ca[]): Promise<Uint8Array> {
  const att = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
  const attKey = new Uint8Array(await subtle.exportKey('raw', att.publicKey)).subarray(1);
  const header = concatBytes(u16(3), u16(2), u32(0), u16(8), u16(13), new Uint8Array(36));
  const body = new Uint8Array(384).fill(0x5a);
  const authData = new Uint8Array(32).fill(7);
  const qeReport = new Uint8Array(384);
  qeReport.set(hex(QE_ATTRIBUTES), 0x30);
  qeReport.set(hex(MRSIGNER), 0x80);
  qeReport.set(u16(1), 0x100); // ISVPRODID
  qeReport.set(u16(8), 0x102); // ISVSVN
  const bound = new Uint8Array(await subtle.digest('SHA-256', buf(concatBytes(attKey, authData))));
  qeReport.set(bound, 0x140);
  const pemChain = new TextEncoder().encode(`${pem(...chain)}\n\u0000`);
  const sigData = concatBytes(
    await signP1363(att.privateKey, concatBytes(header, body)),
    attKey,
    qeReport,
    await signP1363(pck.keys.privateKey, qeReport),
    u16(authData.length),
    authData,
    u16(5),
    u32(pemChain.length),
    pemChain,
  );
  return concatBytes(header, body, u32(sigData.length), sigData);
}
