/**
 * Simulation "hardware": a software vendor chain standing in for Intel's or AMD's. A root key
 * (ECDSA P-256) with a self-signed root certificate certifies a platform key, which signs
 * reports. Generation and (de)serialisation only, as PEM and JWK strings; reading and writing
 * the files (docs/sim.md: root.crt.pem, root.key.jwk, platform.crt.pem, platform.key.jwk) is
 * left to the caller, so this stays engine-neutral.
 */
// x509.js imports 'reflect-metadata' and sets the WebCrypto provider before @peculiar/x509 is used.
import { parseCertificate, trustAnchor } from '../pki/x509.js';
import type { TrustAnchor } from '../pki/x509.js';
import { evidenceError } from '../error-codes.js';
import { createSimReport } from './report.js';
import * as x509 from '@peculiar/x509';

// P-256 rather than P-384 (docs/sim.md): the sim is a development TEE, and P-384 signatures
// cost about ten times as much to make and check, on every activation.
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** The file names of a sim hardware directory. */
export const SIM_HARDWARE_FILES = {
  rootCert: 'root.crt.pem',
  rootKey: 'root.key.jwk',
  platformCert: 'platform.crt.pem',
  platformKey: 'platform.key.jwk',
} as const;

export interface SimHardware {
  readonly rootCertDer: Uint8Array;
  /** Root private key; absent when only the platform half was loaded. */
  readonly rootKey?: CryptoKey;
  readonly platformCertDer: Uint8Array;
  readonly platformKey: CryptoKey;
  readonly platformSpkiDer: Uint8Array;
}

/** The serialised form: file name to content. */
export type SimHardwareFiles = Record<
  (typeof SIM_HARDWARE_FILES)[keyof typeof SIM_HARDWARE_FILES],
  string
>;

function serial(): string {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] as number) & 0x7f;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Makes a fresh sim root and platform (certificates valid from a day before `now`). */
export async function generateSimHardware(
  options: { readonly now?: Date; readonly validDays?: number; readonly name?: string } = {},
): Promise<SimHardware> {
  const now = options.now ?? new Date();
  const notBefore = new Date(now.getTime() - 86_400_000);
  const notAfter = new Date(now.getTime() + (options.validDays ?? 3650) * 86_400_000);
  const name = options.name ?? 'Cloister Simulation';
  const root = await globalThis.crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const platform = await globalThis.crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const rootCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name} Root CA, O=Cloister Simulation`,
    notBefore,
    notAfter,
    keys: root,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(root.publicKey),
    ],
  });
  const platformCert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${name} Platform, O=Cloister Simulation`,
    issuer: rootCert.subject,
    notBefore,
    notAfter,
    publicKey: platform.publicKey,
    signingKey: root.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.AuthorityKeyIdentifierExtension.create(rootCert),
    ],
  });
  return {
    rootCertDer: new Uint8Array(rootCert.rawData),
    rootKey: root.privateKey,
    platformCertDer: new Uint8Array(platformCert.rawData),
    platformKey: platform.privateKey,
    platformSpkiDer: new Uint8Array(platformCert.publicKey.rawData),
  };
}

/** Serialises sim hardware: certificates as PEM, private keys as JWK (JSON text). */
export async function exportSimHardware(hw: SimHardware): Promise<SimHardwareFiles> {
  if (hw.rootKey === undefined) {
    throw evidenceError(
      'EVIDENCE_BAD_FIELD',
      'sim hardware without its root key cannot be exported',
      {
        details: { field: 'rootKey' },
      },
    );
  }
  const jwk = async (k: CryptoKey): Promise<string> =>
    `${JSON.stringify(await globalThis.crypto.subtle.exportKey('jwk', k))}\n`;
  return {
    [SIM_HARDWARE_FILES.rootCert]:
      new x509.X509Certificate(new Uint8Array(hw.rootCertDer)).toString('pem') + '\n',
    [SIM_HARDWARE_FILES.rootKey]: await jwk(hw.rootKey),
    [SIM_HARDWARE_FILES.platformCert]:
      new x509.X509Certificate(new Uint8Array(hw.platformCertDer)).toString('pem') + '\n',
    [SIM_HARDWARE_FILES.platformKey]: await jwk(hw.platformKey),
  };
}

async function importPrivate(text: string, field: string): Promise<CryptoKey> {
  try {
    const jwk = JSON.parse(text) as JsonWebKey;
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string')
      throw new Error('not a P-256 private JWK');
    return await globalThis.crypto.subtle.importKey('jwk', jwk, EC, true, ['sign']);
  } catch (cause) {
    throw evidenceError('EVIDENCE_BAD_ENCODING', `${field}: not an ECDSA P-256 private JWK`, {
      cause,
      details: { field },
    });
  }
}

function pemCert(text: string, field: string): Uint8Array {
  let c: x509.X509Certificate;
  try {
    c = new x509.X509Certificate(text);
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: not a PEM certificate`, {
      cause,
      details: { field },
    });
  }
  return new Uint8Array(c.rawData);
}

/**
 * Loads sim hardware from its serialised files. The root key is optional (a platform that only
 * signs reports does not need it); the platform key must match the platform certificate.
 */
export async function importSimHardware(
  files: Partial<Record<keyof SimHardwareFiles, string>> & {
    readonly 'root.crt.pem': string;
    readonly 'platform.crt.pem': string;
    readonly 'platform.key.jwk': string;
  },
): Promise<SimHardware> {
  const rootCertDer = pemCert(files['root.crt.pem'], SIM_HARDWARE_FILES.rootCert);
  const platformCertDer = pemCert(files['platform.crt.pem'], SIM_HARDWARE_FILES.platformCert);
  const platformKey = await importPrivate(
    files['platform.key.jwk'],
    SIM_HARDWARE_FILES.platformKey,
  );
  const rootKeyText = files['root.key.jwk'];
  const rootKey =
    rootKeyText === undefined
      ? undefined
      : await importPrivate(rootKeyText, SIM_HARDWARE_FILES.rootKey);
  const platformSpkiDer = new Uint8Array(parseCertificate(platformCertDer).publicKey.rawData);
  // A key that does not match the certificate would produce reports every verifier rejects;
  // say so here instead.
  const probe = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const sig = await globalThis.crypto.subtle.sign(SIGN, platformKey, probe);
  const pub = await globalThis.crypto.subtle.importKey(
    'spki',
    new Uint8Array(platformSpkiDer),
    EC,
    false,
    ['verify'],
  );
  if (!(await globalThis.crypto.subtle.verify(SIGN, pub, sig, probe))) {
    throw evidenceError('EVIDENCE_BAD_FIELD', 'platform.key.jwk does not match platform.crt.pem', {
      details: { field: SIM_HARDWARE_FILES.platformKey },
    });
  }
  return {
    rootCertDer,
    ...(rootKey === undefined ? {} : { rootKey }),
    platformCertDer,
    platformKey,
    platformSpkiDer,
  };
}

/** The pinned trust anchor for this sim hardware's root. */
export function simRootAnchor(hw: Pick<SimHardware, 'rootCertDer'>): TrustAnchor {
  return trustAnchor('Cloister sim root', hw.rootCertDer);
}

/** Convenience: a report from this hardware (see createSimReport for the fields). */
export async function simReportFrom(
  hw: SimHardware,
  fields: {
    readonly measurement: Uint8Array;
    readonly reportData: Uint8Array;
    readonly hostData?: Uint8Array;
    readonly svn?: number;
    readonly debug?: boolean;
  },
): Promise<Uint8Array> {
  return createSimReport({
    platformKey: hw.platformKey,
    platformCertDer: hw.platformCertDer,
    platformSpkiDer: hw.platformSpkiDer,
    ...fields,
  });
}
