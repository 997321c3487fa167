/**
 * Synthetic X.509 material for the path-builder tests: small ECDSA P-256 hierarchies and CRLs
 * made with @peculiar/x509, and DER surgery to re-sign a certificate or CRL under an arbitrary
 * AlgorithmIdentifier with a node:crypto key (so signature algorithms and their parameters can
 * be tested independently of what any generator supports).
 */
import 'reflect-metadata';
import { constants, KeyObject, sign } from 'node:crypto';
import { arrayBufferView, concatBytes } from '@cloister/bytes';
import * as x509 from '@peculiar/x509';
import { readDer } from '../src/pki/der.js';

x509.cryptoProvider.set(globalThis.crypto);

const subtle = globalThis.crypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
export const FROM = new Date('2025-01-01T00:00:00Z');
export const TO = new Date('2030-01-01T00:00:00Z');
export const NOW = new Date('2026-01-01T00:00:00Z');

export const der = (c: x509.X509Certificate | x509.X509Crl): Uint8Array =>
  new Uint8Array(c.rawData);

export const ecKeys = (): Promise<CryptoKeyPair> =>
  subtle.generateKey(EC, true, ['sign', 'verify']);

/** A certificate and its key pair. */
export interface Ca {
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPair;
}

export interface CertOptions {
  readonly serial?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly keys?: CryptoKeyPair;
  /** basicConstraints (critical); `null` leaves it out. Roots default to cA TRUE, others to none. */
  readonly basicConstraints?: { readonly ca: boolean; readonly pathLen?: number } | null;
  /** keyUsage (critical, `x509.KeyUsageFlags`); `null` leaves it out. Defaults as basicConstraints. */
  readonly keyUsage?: number | null;
  /** Extensions beside basicConstraints and keyUsage (see {@link ExtensionSpec}). */
  readonly extensions?: readonly ExtensionSpec[];
}

/** An extension as (OID, extnValue content, critical?), non-critical unless the flag says so. */
export type ExtensionSpec = readonly [string, Uint8Array, boolean?];

const toExtensions = (specs: readonly ExtensionSpec[] = []): x509.Extension[] =>
  specs.map(([oid, v, critical]) => new x509.Extension(oid, critical === true, arrayBufferView(v)));

export const KU = x509.KeyUsageFlags;

/** What a CA certificate carries: basicConstraints cA TRUE, keyUsage keyCertSign and cRLSign. */
export const CA = {
  basicConstraints: { ca: true },
  keyUsage: KU.keyCertSign | KU.cRLSign,
} as const satisfies CertOptions;

/** What an end-entity certificate such as an Intel PCK carries: cA FALSE, digitalSignature. */
export const END_ENTITY = {
  basicConstraints: { ca: false },
  keyUsage: KU.digitalSignature | KU.nonRepudiation,
} as const satisfies CertOptions;

function extensionsOf(o: CertOptions, defaults: CertOptions): x509.Extension[] {
  const bc = o.basicConstraints === undefined ? defaults.basicConstraints : o.basicConstraints;
  const ku = o.keyUsage === undefined ? defaults.keyUsage : o.keyUsage;
  return [
    ...(bc === null || bc === undefined
      ? []
      : [new x509.BasicConstraintsExtension(bc.ca, bc.pathLen, true)]),
    ...(ku === null || ku === undefined ? [] : [new x509.KeyUsagesExtension(ku, true)]),
    ...toExtensions(o.extensions),
  ];
}

/**
 * basicConstraints cA TRUE (with `pathLen`) and keyUsage (default keyCertSign and cRLSign), both
 * critical, for tests that build certificates with the generator directly.
 */
export function caExtensions(o: { pathLen?: number; keyUsage?: number } = {}): x509.Extension[] {
  return extensionsOf(
    {
      basicConstraints: { ca: true, ...(o.pathLen === undefined ? {} : { pathLen: o.pathLen }) },
      keyUsage: o.keyUsage ?? CA.keyUsage,
    },
    {},
  );
}

/** A self-signed root (a CA unless `o` says otherwise). */
export async function makeRoot(name: string, o: CertOptions = {}): Promise<Ca> {
  const keys = o.keys ?? (await ecKeys());
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name,
    keys,
    serialNumber: o.serial ?? '01',
    notBefore: o.notBefore ?? FROM,
    notAfter: o.notAfter ?? TO,
    signingAlgorithm: SIGN,
    extensions: extensionsOf(o, CA),
  });
  return { cert, keys };
}

/** A certificate `issuer` signs (spread {@link CA} into `o` for an intermediate). */
export async function makeCert(issuer: Ca, name: string, o: CertOptions = {}): Promise<Ca> {
  const keys = o.keys ?? (await ecKeys());
  const cert = await x509.X509CertificateGenerator.create({
    subject: name,
    issuer: issuer.cert.subject,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    serialNumber: o.serial ?? '02',
    notBefore: o.notBefore ?? FROM,
    notAfter: o.notAfter ?? TO,
    signingAlgorithm: SIGN,
    extensions: extensionsOf(o, {}),
  });
  return { cert, keys };
}

export interface CrlOptions {
  readonly revoke?: readonly string[];
  readonly revokedAt?: Date;
  readonly thisUpdate?: Date;
  readonly nextUpdate?: Date;
  /** Signs with this key instead of the issuer's (a forged CRL). */
  readonly signer?: CryptoKey;
  /** CRL extensions (RFC 5280 section 5.2). */
  readonly extensions?: readonly ExtensionSpec[];
  /** Extensions of every revoked entry (section 5.3). */
  readonly entryExtensions?: readonly ExtensionSpec[];
}

/** A CRL naming `issuer`. */
export async function makeCrl(issuer: Ca, o: CrlOptions = {}): Promise<x509.X509Crl> {
  return x509.X509CrlGenerator.create({
    issuer: issuer.cert.subject,
    thisUpdate: o.thisUpdate ?? FROM,
    nextUpdate: o.nextUpdate ?? TO,
    entries: (o.revoke ?? []).map((serialNumber) => ({
      serialNumber,
      revocationDate: o.revokedAt ?? FROM,
      extensions: toExtensions(o.entryExtensions),
    })),
    extensions: toExtensions(o.extensions),
    signingKey: o.signer ?? issuer.keys.privateKey,
    signingAlgorithm: SIGN,
  });
}

/** Root -> intermediate -> leaf, the shape of every vendor chain. */
export async function hierarchy(
  o: { root?: CertOptions; inter?: CertOptions; leaf?: CertOptions; prefix?: string } = {},
) {
  const p = o.prefix ?? 'Test';
  const root = await makeRoot(`CN=${p} Root, O=Cloister Test`, o.root);
  const inter = await makeCert(root, `CN=${p} Intermediate, O=Cloister Test`, {
    ...CA,
    serial: '02',
    ...o.inter,
  });
  const leaf = await makeCert(inter, `CN=${p} Leaf, O=Cloister Test`, { serial: '03', ...o.leaf });
  return { root, inter, leaf };
}

// DER surgery.

/** One DER TLV. */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  const n = content.length;
  const len: number[] = [];
  if (n < 0x80) len.push(n);
  else {
    for (let v = n; v > 0; v = Math.floor(v / 256)) len.unshift(v & 0xff);
    len.unshift(0x80 | len.length);
  }
  return concatBytes(Uint8Array.of(tag, ...len), content);
}

export const seq = (...xs: Uint8Array[]): Uint8Array => tlv(0x30, concatBytes(...xs));
const oid = (hex: string): Uint8Array => tlv(0x06, Buffer.from(hex, 'hex'));
const int = (n: number): Uint8Array => tlv(0x02, Uint8Array.of(n));
const NULL = Uint8Array.of(0x05, 0x00);

/** The complete TLVs inside a SEQUENCE. */
export function children(d: Uint8Array): Uint8Array[] {
  const top = readDer(d, 0, 'test');
  const out: Uint8Array[] = [];
  for (let off = 0; off < top.content.length;) {
    const n = readDer(top.content, off, 'test');
    out.push(top.content.subarray(off, n.end));
    off = n.end;
  }
  return out;
}

export type Hash = 'SHA-1' | 'SHA-256' | 'SHA-384' | 'SHA-512';
const HASH_OID: Record<Hash, string> = {
  'SHA-1': '2b0e03021a',
  'SHA-256': '608648016503040201',
  'SHA-384': '608648016503040202',
  'SHA-512': '608648016503040203',
};
export const NODE_HASH: Record<Hash, string> = {
  'SHA-1': 'sha1',
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
};
const hashId = (h: Hash): Uint8Array => seq(oid(HASH_OID[h]), NULL);

/** AlgorithmIdentifiers. */
export const ALG = {
  ecdsa: (h: Hash): Uint8Array =>
    seq(
      oid(
        {
          'SHA-1': '2a8648ce3d0401',
          'SHA-256': '2a8648ce3d040302',
          'SHA-384': '2a8648ce3d040303',
          'SHA-512': '2a8648ce3d040304',
        }[h],
      ),
    ),
  pkcs1: (h: Hash): Uint8Array =>
    seq(
      oid(
        {
          'SHA-1': '2a864886f70d010105',
          'SHA-256': '2a864886f70d01010b',
          'SHA-384': '2a864886f70d01010c',
          'SHA-512': '2a864886f70d01010d',
        }[h],
      ),
      NULL,
    ),
  /** RSASSA-PSS; `undefined` fields are left out (their DEFAULT applies). */
  pss: (p: { hash?: Hash; mgfHash?: Hash; salt?: number; trailer?: number }): Uint8Array =>
    seq(
      oid('2a864886f70d01010a'),
      seq(
        ...(p.hash === undefined ? [] : [tlv(0xa0, hashId(p.hash))]),
        ...(p.mgfHash === undefined
          ? []
          : [tlv(0xa1, seq(oid('2a864886f70d010108'), hashId(p.mgfHash)))]),
        ...(p.salt === undefined ? [] : [tlv(0xa2, int(p.salt))]),
        ...(p.trailer === undefined ? [] : [tlv(0xa3, int(p.trailer))]),
      ),
    ),
};

/**
 * `cert` with its TBSCertificate signature algorithm set to `alg` (and the outer one to
 * `outerAlg`, by default the same), its key optionally replaced by `spki`, signed by `signTbs`.
 */
export async function resign(
  cert: Uint8Array,
  o: {
    alg: Uint8Array;
    outerAlg?: Uint8Array;
    spki?: Uint8Array;
    signTbs: (tbs: Uint8Array) => Uint8Array | Promise<Uint8Array>;
  },
): Promise<Uint8Array> {
  const [tbs] = children(cert);
  const f = children(tbs as Uint8Array);
  f[2] = o.alg; // [0] version, serial, signature, issuer, validity, subject, spki, [3] extensions
  if (o.spki !== undefined) f[6] = o.spki;
  const newTbs = seq(...f);
  const sig = await o.signTbs(newTbs);
  return seq(newTbs, o.outerAlg ?? o.alg, tlv(0x03, concatBytes(Uint8Array.of(0), sig)));
}

/**
 * `crl` with its TBSCertList signature algorithm set to `alg` (and the outer one to `outerAlg`,
 * by default the same), signed by `signTbs`.
 */
export async function resignCrl(
  crl: Uint8Array,
  o: {
    alg: Uint8Array;
    outerAlg?: Uint8Array;
    signTbs: (tbs: Uint8Array) => Uint8Array | Promise<Uint8Array>;
  },
): Promise<Uint8Array> {
  const [tbs] = children(crl);
  const f = children(tbs as Uint8Array);
  // version INTEGER OPTIONAL, signature, issuer, thisUpdate, nextUpdate, revoked, [0] extensions
  f[f[0]?.[0] === 0x02 ? 1 : 0] = o.alg;
  const newTbs = seq(...f);
  const sig = await o.signTbs(newTbs);
  return seq(newTbs, o.outerAlg ?? o.alg, tlv(0x03, concatBytes(Uint8Array.of(0), sig)));
}

/** A node:crypto signer for `resign` and `resignCrl`. */
export function nodeSigner(
  key: KeyObject,
  hash: Hash,
  pss?: { saltLength: number },
): (tbs: Uint8Array) => Uint8Array {
  return (tbs) =>
    new Uint8Array(
      sign(NODE_HASH[hash], tbs, {
        key,
        ...(pss === undefined
          ? {}
          : { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength }),
      }),
    );
}

/** The node:crypto form of a WebCrypto key (for `nodeSigner`). */
export const nodeKey = (k: CryptoKey): KeyObject => KeyObject.from(k);

/** A plain certificate to re-sign (self-issued, ECDSA; its key and signature get replaced). */
export async function baseCert(name = 'CN=Resigned, O=Cloister Test'): Promise<Uint8Array> {
  return der((await makeRoot(name)).cert);
}
