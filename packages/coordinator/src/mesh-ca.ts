/**
 * The mesh certificate authority (RFC 5280 profiles; SPIFFE X.509-SVID for workload leaves).
 *
 * - The root (ECDSA P-256) is created once and kept across manifests: clients that pin it keep
 *   working through updates.
 * - An intermediate is created for every accepted manifest: clients that pin the intermediate
 *   see every manifest change as a broken connection, so an update cannot go unnoticed, and
 *   leaves issued under an old manifest do not chain to the new intermediate.
 * - Leaves are short-lived (24 h by default) and carry exactly one URI SAN,
 *   `spiffe://<trustDomain>/<workload>` (X.509-SVID §2), issued for a public key the agent proved
 *   it holds (CSR signature) and that attestation evidence bound. They also carry DNS
 *   SANs (the workload name, `localhost` for external ingresses) so standard TLS clients, which
 *   check host names and ignore URI SANs, can verify them.
 *
 * Leaves are issued on every activation, so issuing them is on the hot path. `issueLeaf` builds
 * the DER TBSCertificate (RFC 5280 §4.1) once per issuer and workload with @peculiar/x509 and
 * then only overwrites the fixed-length fields that change (serial, validity, instance id, key)
 * before signing it: the certificate is byte for byte what the library would produce for the
 * same values, without re-running its ASN.1 generator (and re-parsing its output) each time.
 */
import 'reflect-metadata';
import { KeyObject, randomBytes, sign as nodeSign, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { COORDINATOR_CERT_URI } from '@cloister/protocol';
import { coordinatorError } from './error-codes.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIG: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const subtle = webcrypto.subtle as unknown as SubtleCrypto;

/** A certificate with its private key, as stored (DER, PKCS#8; the store encrypts both). */
export interface StoredCa {
  readonly certDer: string; // base64
  readonly keyPkcs8: string; // base64
}

/** A CA usable for signing. */
export interface LoadedCa {
  readonly cert: x509.X509Certificate;
  readonly key: CryptoKey;
}

/** An issued certificate. */
export interface IssuedCert {
  readonly der: Uint8Array;
  readonly pem: string;
  readonly serial: string;
  readonly notAfter: Date;
}

/** Random positive 128-bit serial, hex (RFC 5280 §4.1.2.2: unique, at most 20 octets). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] ?? 0) & 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

async function exportCa(cert: x509.X509Certificate, key: CryptoKey): Promise<StoredCa> {
  const pkcs8 = await subtle.exportKey('pkcs8', key);
  return {
    certDer: Buffer.from(cert.rawData).toString('base64'),
    keyPkcs8: Buffer.from(pkcs8).toString('base64'),
  };
}

/** Re-imports a stored CA. */
export async function loadCa(stored: StoredCa): Promise<LoadedCa> {
  const cert = new x509.X509Certificate(Buffer.from(stored.certDer, 'base64'));
  const key = await subtle.importKey('pkcs8', Buffer.from(stored.keyPkcs8, 'base64'), EC, false, [
    'sign',
  ]);
  return { cert, key };
}

/** Creates the root CA (20 years; the root outlives manifests). */
export async function createRootCa(now: Date): Promise<{ stored: StoredCa; ca: LoadedCa }> {
  const keys = await subtle.generateKey(EC, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=Cloister Coordinator Root CA',
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 20 * 365 * 86_400_000),
    keys,
    signingAlgorithm: SIG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { stored: await exportCa(cert, keys.privateKey), ca: { cert, key: keys.privateKey } };
}

/** Creates the intermediate (mesh) CA of one manifest, signed by the root. */
export async function createIntermediateCa(
  root: LoadedCa,
  trustDomain: string,
  manifestHash: string,
  now: Date,
): Promise<{ stored: StoredCa; ca: LoadedCa }> {
  const keys = await subtle.generateKey(EC, true, ['sign', 'verify']);
  const notAfter = new Date(
    Math.min(now.getTime() + 5 * 365 * 86_400_000, root.cert.notAfter.getTime()),
  );
  notExpired(notAfter, now, root);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=Cloister Mesh CA ${manifestHash.slice(0, 16)}, O=${escapeDn(trustDomain)}`,
    issuer: root.cert.subjectName,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: root.key,
    signingAlgorithm: SIG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert),
    ],
  });
  return { stored: await exportCa(cert, keys.privateKey), ca: { cert, key: keys.privateKey } };
}

/**
 * Refuses to sign under an issuer past its notAfter. The certificate would end before it
 * begins: dead on arrival, and an instance recorded with an expiry in the past holds no
 * maxInstances slot, so every activation would still get its secrets.
 */
function notExpired(notAfter: Date, now: Date, issuer: LoadedCa): void {
  // Negated so that an invalid date (NaN) is refused too.
  if (!(notAfter.getTime() > now.getTime())) {
    throw coordinatorError(
      'COORDINATOR_CA_EXPIRED',
      `cannot issue: the issuing CA expired at ${issuer.cert.notAfter.toISOString()}`,
      { details: { notAfter: issuer.cert.notAfter.toISOString(), now: now.toISOString() } },
    );
  }
}

function escapeDn(s: string): string {
  return s.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
}

/**
 * The DER prefix of every P-256 SubjectPublicKeyInfo with an uncompressed point (RFC 5480 §2):
 * SEQUENCE { SEQUENCE { id-ecPublicKey, secp256r1 }, BIT STRING 0x00 0x04 ... }, 91 bytes in
 * all. Agents send exactly this form (what WebCrypto and OpenSSL export).
 */
const P256_SPKI_PREFIX = Uint8Array.from(
  Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex'),
);
const P256_SPKI_LENGTH = 91;

function checkP256Spki(spkiDer: Uint8Array): void {
  if (spkiDer.length !== P256_SPKI_LENGTH || !P256_SPKI_PREFIX.every((b, i) => spkiDer[i] === b)) {
    throw coordinatorError(
      'COORDINATOR_KEY_INVALID',
      'the agent key is not an uncompressed P-256 SubjectPublicKeyInfo',
      { details: { rule: 'key', expected: 'P-256 SPKI, 91 bytes', actual: spkiDer.length } },
    );
  }
}

/** The P-256 SPKI of an uncompressed point (0x04 || X || Y). */
export function p256Spki(point: Uint8Array): Uint8Array {
  if (point.length !== 65 || point[0] !== 4) {
    throw coordinatorError('COORDINATOR_KEY_INVALID', 'not an uncompressed P-256 point', {
      details: { rule: 'key', expected: '65 bytes starting 0x04', actual: point.length },
    });
  }
  const spki = new Uint8Array(P256_SPKI_LENGTH);
  spki.set(P256_SPKI_PREFIX);
  spki.set(point.subarray(1), P256_SPKI_PREFIX.length);
  return spki;
}

/** P-256 (FIPS 186-4 D.1.2.3): the field prime and the curve's b; a = -3. */
const P256_P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;
const P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function bigIntOf(b: Uint8Array): bigint {
  return BigInt(`0x${Buffer.from(b).toString('hex')}`);
}

/**
 * Whether X || Y (32 + 32 bytes) is a point of P-256: both coordinates below p and
 * y^2 = x^3 - 3x + b (mod p). For a prime-order curve (cofactor 1) that is full public key
 * validation (SEC 1 v2 §3.2.2.1); it costs a few BigInt products instead of the scalar
 * multiplication OpenSSL 3.0 adds when it imports a key.
 */
export function onP256(xy: Uint8Array): boolean {
  if (xy.length !== 64) return false;
  const x = bigIntOf(xy.subarray(0, 32));
  const y = bigIntOf(xy.subarray(32));
  if (x >= P256_P || y >= P256_P) return false;
  const rhs = (((x * x * x - 3n * x + P256_B) % P256_P) + P256_P) % P256_P;
  return (y * y) % P256_P === rhs;
}

/**
 * The agent's certificate key of the `publicKey` form, checked: an uncompressed P-256
 * SubjectPublicKeyInfo whose point is on the curve; COORDINATOR_KEY_INVALID otherwise (a key
 * nobody could use goes into no certificate). The `csr` form is checked by `spkiFromCsr`.
 */
export function agentSpki(spkiDer: Uint8Array): Uint8Array {
  checkP256Spki(spkiDer);
  if (!onP256(spkiDer.subarray(P256_SPKI_PREFIX.length))) {
    throw coordinatorError('COORDINATOR_KEY_INVALID', 'the agent key is not a point of P-256', {
      details: { rule: 'key', expected: 'a P-256 point', actual: 'off the curve' },
    });
  }
  return spkiDer;
}

/** Imports an agent's P-256 SubjectPublicKeyInfo; COORDINATOR_KEY_INVALID on anything else. */
export async function importAgentSpki(spkiDer: Uint8Array): Promise<CryptoKey> {
  checkP256Spki(spkiDer);
  try {
    return await subtle.importKey('spki', new Uint8Array(spkiDer), EC, true, ['verify']);
  } catch (cause) {
    throw coordinatorError('COORDINATOR_KEY_INVALID', 'the agent key is not a P-256 public key', {
      cause,
    });
  }
}

/**
 * Parses and verifies a PKCS#10 CSR (PEM or base64 DER) and returns its SPKI DER. The signature
 * check proves the agent holds the private key, so nobody can get a certificate for a key bound
 * into someone else's evidence.
 */
export async function spkiFromCsr(csr: string): Promise<Uint8Array> {
  let req: x509.Pkcs10CertificateRequest;
  try {
    req = new x509.Pkcs10CertificateRequest(
      csr.includes('-----BEGIN') ? csr : Buffer.from(csr, 'base64'),
    );
  } catch (cause) {
    throw coordinatorError('COORDINATOR_KEY_INVALID', 'the CSR is not a PKCS#10 request', {
      cause,
    });
  }
  let ok = false;
  try {
    ok = await req.verify();
  } catch (cause) {
    throw coordinatorError('COORDINATOR_KEY_INVALID', 'the CSR signature cannot be checked', {
      cause,
    });
  }
  if (!ok) throw coordinatorError('COORDINATOR_KEY_INVALID', 'the CSR signature does not verify');
  const spki = new Uint8Array(req.publicKey.rawData);
  checkP256Spki(spki);
  return spki;
}

/** The SPIFFE ID of a workload. */
export function spiffeId(trustDomain: string, workload: string): string {
  return `spiffe://${trustDomain}/${encodeURIComponent(workload)}`;
}

/** The AKI extension of each issuer, computed once (it hashes the issuer key every time). */
const akiCache = new WeakMap<x509.X509Certificate, Promise<x509.AuthorityKeyIdentifierExtension>>();
function akiOf(issuer: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  let aki = akiCache.get(issuer);
  if (aki === undefined) {
    aki = x509.AuthorityKeyIdentifierExtension.create(issuer);
    akiCache.set(issuer, aki);
  }
  return aki;
}

/** The DNS names of a workload's leaf: its name, and `localhost` when an ingress is external. */
export function leafDnsNames(
  workload: string,
  ingress: readonly { readonly external?: boolean }[],
): string[] {
  // A dNSName must be a host name (RFC 5280 §4.2.1.6, RFC 1034 preferred syntax): workload
  // names with `_` are not, and get the URI SAN only.
  const names = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(workload.toLowerCase())
    ? [workload.toLowerCase()]
    : [];
  if (ingress.some((i) => i.external === true)) names.push('localhost');
  return names;
}

/** ecdsa-with-SHA256 AlgorithmIdentifier, DER (RFC 5758 §3.2: parameters absent). */
const ECDSA_SHA256_ALG = Uint8Array.from(Buffer.from('300a06082a8648ce3d040302', 'hex'));

/** DER length octets (X.690 §8.1.3, definite form). */
function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

function derTlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const len = parts.reduce((a, p) => a + p.length, 0);
  return Buffer.concat([Uint8Array.of(tag), derLength(len), ...parts]);
}

/** Offset and total length of the first TLV at `off` in our own DER (header + content). */
function tlvAt(der: Uint8Array, off: number): { content: number; end: number } {
  const first = der[off + 1] ?? 0;
  let len = first;
  let hdr = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[off + 2 + i] ?? 0);
    hdr = 2 + n;
  }
  return { content: off + hdr, end: off + hdr + len };
}

/** UTCTime text (RFC 5280 §4.1.2.5.1: YYMMDDHHMMSSZ, for 1950..2049). */
function utcTime(d: Date): string {
  return d
    .toISOString()
    .replace(/^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/, '$1$2$3$4$5$6Z');
}
const utcTimeOk = (d: Date): boolean => d.getUTCFullYear() >= 1950 && d.getUTCFullYear() < 2050;

/**
 * A leaf TBSCertificate made by @peculiar/x509 with placeholder values, and where each
 * per-certificate field sits in it. Every such field has a fixed length: a 16-byte positive
 * serial, UTCTime validity, a 32-hex-digit instance id and a 91-byte P-256 SPKI.
 */
interface LeafTemplate {
  readonly tbs: Uint8Array;
  readonly serial: number;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly instance: number;
  readonly spki: number;
}

/** Finds `needle` in `hay`; it must occur exactly once (else the template is unusable). */
function onlyIndex(hay: Uint8Array, needle: Uint8Array, what: string): number {
  const b = Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength);
  const i = b.indexOf(needle);
  if (i < 0 || b.indexOf(needle, i + 1) >= 0) throw new Error(`leaf template: ${what} not unique`);
  return i;
}

const INSTANCE_ID = /^[0-9a-f]{32}$/;

async function leafTemplate(
  issuer: LoadedCa,
  trustDomain: string,
  workload: string,
  dnsNames: readonly string[],
): Promise<LeafTemplate> {
  const keys = await subtle.generateKey(EC, true, ['sign', 'verify']);
  const spki = await spkiDer(keys.publicKey);
  const sn = serial();
  const instance = randomBytes(16).toString('hex');
  const nb = new Date('2001-02-03T04:05:06Z');
  const na = new Date('2002-03-04T05:06:07Z');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: sn,
    subject: `CN=${escapeDn(workload)}, OU=${instance}`,
    issuer: issuer.cert.subjectName,
    notBefore: nb,
    notAfter: na,
    publicKey: keys.publicKey,
    signingKey: issuer.key,
    signingAlgorithm: SIG,
    extensions: leafExtensions(trustDomain, workload, dnsNames, await akiOf(issuer.cert)),
  });
  const der = new Uint8Array(cert.rawData);
  const outer = tlvAt(der, 0);
  const tbsTlv = tlvAt(der, outer.content);
  const tbs = der.slice(outer.content, tbsTlv.end);
  const alg = der.subarray(tbsTlv.end, tbsTlv.end + ECDSA_SHA256_ALG.length);
  if (!Buffer.from(alg).equals(ECDSA_SHA256_ALG))
    throw new Error('leaf template: unexpected algorithm');
  const ascii = (t: string): Uint8Array => new TextEncoder().encode(t);
  return {
    tbs,
    // INTEGER tag 02, length 16, then the serial (its first byte is 0x01..0x7f: no padding).
    serial: onlyIndex(tbs, Uint8Array.from([0x02, 0x10, ...Buffer.from(sn, 'hex')]), 'serial') + 2,
    notBefore:
      onlyIndex(tbs, Uint8Array.from([0x17, 0x0d, ...ascii(utcTime(nb))]), 'notBefore') + 2,
    notAfter: onlyIndex(tbs, Uint8Array.from([0x17, 0x0d, ...ascii(utcTime(na))]), 'notAfter') + 2,
    instance: onlyIndex(tbs, ascii(instance), 'instance id'),
    spki: onlyIndex(tbs, spki, 'key'),
  };
}

function leafExtensions(
  trustDomain: string,
  workload: string,
  dnsNames: readonly string[],
  aki: x509.AuthorityKeyIdentifierExtension,
): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.clientAuth,
    ]),
    new x509.SubjectAlternativeNameExtension(
      [
        { type: 'url', value: spiffeId(trustDomain, workload) },
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ],
      true,
    ),
    aki,
  ];
}

/** Per issuer: templates by trust domain, workload and DNS names; its signing KeyObject. */
const templates = new WeakMap<
  LoadedCa,
  { key: KeyObject; byWorkload: Map<string, Promise<LeafTemplate>> }
>();

function templateFor(
  issuer: LoadedCa,
  trustDomain: string,
  workload: string,
  dnsNames: readonly string[],
): { key: KeyObject; template: Promise<LeafTemplate> } {
  let t = templates.get(issuer);
  if (t === undefined) {
    t = { key: KeyObject.from(issuer.key), byWorkload: new Map() };
    templates.set(issuer, t);
  }
  const k = JSON.stringify([trustDomain, workload, dnsNames]);
  let template = t.byWorkload.get(k);
  if (template === undefined) {
    // Bounded: one entry per workload and ingress shape of a manifest.
    if (t.byWorkload.size >= 1024) t.byWorkload.clear();
    template = leafTemplate(issuer, trustDomain, workload, dnsNames);
    template.catch(() => t.byWorkload.delete(k));
    t.byWorkload.set(k, template);
  }
  return { key: t.key, template };
}

function toPemText(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END ${label}-----`;
}

/**
 * Issues a short-lived workload leaf with the SPIFFE URI SAN (and DNS SANs), for client and
 * server auth, to the P-256 key `spkiDer`.
 */
export async function issueLeaf(
  issuer: LoadedCa,
  params: {
    spkiDer: Uint8Array;
    trustDomain: string;
    workload: string;
    dnsNames?: readonly string[];
    instanceId: string;
    validityMs: number;
    now: Date;
  },
): Promise<IssuedCert> {
  checkP256Spki(params.spkiDer);
  const notBefore = new Date(params.now.getTime() - 60_000);
  const notAfter = new Date(
    Math.min(params.now.getTime() + params.validityMs, issuer.cert.notAfter.getTime()),
  );
  notExpired(notAfter, params.now, issuer);
  const dnsNames = params.dnsNames ?? [];
  const sn = serial();
  if (!INSTANCE_ID.test(params.instanceId) || !utcTimeOk(notBefore) || !utcTimeOk(notAfter)) {
    // Outside the template's fixed-length fields: the library builds this one from scratch.
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: sn,
      subject: `CN=${escapeDn(params.workload)}, OU=${escapeDn(params.instanceId)}`,
      issuer: issuer.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: await importAgentSpki(params.spkiDer),
      signingKey: issuer.key,
      signingAlgorithm: SIG,
      extensions: leafExtensions(
        params.trustDomain,
        params.workload,
        dnsNames,
        await akiOf(issuer.cert),
      ),
    });
    return { der: new Uint8Array(cert.rawData), pem: cert.toString('pem'), serial: sn, notAfter };
  }
  const { key, template } = templateFor(issuer, params.trustDomain, params.workload, dnsNames);
  const t = await template;
  const tbs = t.tbs.slice();
  tbs.set(Buffer.from(sn, 'hex'), t.serial);
  tbs.set(Buffer.from(utcTime(notBefore), 'ascii'), t.notBefore);
  tbs.set(Buffer.from(utcTime(notAfter), 'ascii'), t.notAfter);
  tbs.set(Buffer.from(params.instanceId, 'ascii'), t.instance);
  tbs.set(params.spkiDer, t.spki);
  // Node returns the ECDSA signature DER-encoded (Ecdsa-Sig-Value), as X.509 wants it.
  const sig = nodeSign('sha256', tbs, key);
  const der = derTlv(0x30, tbs, ECDSA_SHA256_ALG, derTlv(0x03, Uint8Array.of(0), sig));
  return { der, pem: toPemText('CERTIFICATE', der), serial: sn, notAfter };
}

/** Issues the coordinator's own TLS server certificate (signed by the root). */
export async function issueServerCert(
  root: LoadedCa,
  params: {
    publicKey: CryptoKey;
    dnsNames: string[];
    ips: string[];
    now: Date;
    validityMs: number;
  },
): Promise<IssuedCert> {
  const sn = serial();
  const notAfter = new Date(params.now.getTime() + params.validityMs);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: sn,
    subject: 'CN=Cloister Coordinator',
    issuer: root.cert.subjectName,
    notBefore: new Date(params.now.getTime() - 60_000),
    notAfter,
    publicKey: params.publicKey,
    signingKey: root.key,
    signingAlgorithm: SIG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        // What tells this certificate from the others the root signs (see COORDINATOR_CERT_URI).
        { type: 'url' as const, value: COORDINATOR_CERT_URI },
        ...params.dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...params.ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert),
    ],
  });
  return { der: new Uint8Array(cert.rawData), pem: cert.toString('pem'), serial: sn, notAfter };
}

/** Generates a fresh P-256 key pair (extractable, for the TLS listener). */
export async function generateP256(): Promise<CryptoKeyPair> {
  return await subtle.generateKey(EC, true, ['sign', 'verify']);
}

/** Exports a private key as PKCS#8 PEM (for node:tls). */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await subtle.exportKey('pkcs8', key)).toString('base64');
  return `-----BEGIN PRIVATE KEY-----\n${der.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PRIVATE KEY-----\n`;
}

/** SPKI DER of a public key. */
export async function spkiDer(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await subtle.exportKey('spki', key));
}

export { x509 };
