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
 *   it holds (CSR signature) and that attestation evidence bound.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
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
  readonly cert: x509.X509Certificate;
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

function escapeDn(s: string): string {
  return s.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
}

/** Imports an agent's P-256 SubjectPublicKeyInfo; COORDINATOR_KEY_INVALID on anything else. */
export async function importAgentSpki(spkiDer: Uint8Array): Promise<CryptoKey> {
  try {
    const pk = new x509.PublicKey(new Uint8Array(spkiDer));
    const alg = pk.algorithm as EcKeyAlgorithm;
    if (alg.name !== 'ECDSA' && alg.name !== 'ECDH') throw new Error(`not EC: ${alg.name}`);
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
  await importAgentSpki(spki);
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

/** Issues a short-lived workload leaf with the SPIFFE URI SAN, for client and server auth. */
export async function issueLeaf(
  issuer: LoadedCa,
  params: {
    spkiDer: Uint8Array;
    trustDomain: string;
    workload: string;
    instanceId: string;
    validityMs: number;
    now: Date;
  },
): Promise<IssuedCert> {
  const publicKey = await importAgentSpki(params.spkiDer);
  const notAfter = new Date(
    Math.min(params.now.getTime() + params.validityMs, issuer.cert.notAfter.getTime()),
  );
  const sn = serial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: sn,
    subject: `CN=${escapeDn(params.workload)}, OU=${params.instanceId}`,
    issuer: issuer.cert.subjectName,
    notBefore: new Date(params.now.getTime() - 60_000),
    notAfter,
    publicKey,
    signingKey: issuer.key,
    signingAlgorithm: SIG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(
        [{ type: 'url', value: spiffeId(params.trustDomain, params.workload) }],
        true,
      ),
      await akiOf(issuer.cert),
    ],
  });
  return { cert, pem: cert.toString('pem'), serial: sn, notAfter };
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
        ...params.dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...params.ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert),
    ],
  });
  return { cert, pem: cert.toString('pem'), serial: sn, notAfter };
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
