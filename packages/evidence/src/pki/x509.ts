/**
 * The X.509 library boundary: parsing DER/PEM certificates and CRLs with @peculiar/x509 (every
 * library error becomes CERT_MALFORMED), and the trust anchor type (a root trusted by its
 * public key). Path building and validation live in path.ts; this module only parses.
 *
 * Importing it sets up the library (reflect-metadata, the WebCrypto provider), so every module
 * that touches @peculiar/x509 imports this one first.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { evidenceError } from '../error-codes.js';

x509.cryptoProvider.set(globalThis.crypto);

export type Certificate = x509.X509Certificate;
export type Crl = x509.X509Crl;

/** Parses one DER certificate; PARSE error on garbage. */
export function parseCertificate(der: Uint8Array, field = 'certificate'): Certificate {
  try {
    return new x509.X509Certificate(new Uint8Array(der));
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: not a DER X.509 certificate`, {
      cause,
      details: { field },
    });
  }
}

/** Parses one DER CRL. */
export function parseCrl(der: Uint8Array, field = 'crl'): Crl {
  try {
    return new x509.X509Crl(new Uint8Array(der));
  } catch (cause) {
    throw evidenceError('CERT_MALFORMED', `${field}: not a DER X.509 CRL`, {
      cause,
      details: { field },
    });
  }
}

/**
 * Parses PEM text holding one or more certificates (a trailing NUL, as Intel quotes carry, is
 * ignored). Throws if no certificate is found.
 */
export function parsePemCertificates(pem: string, field = 'certificates'): Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0)
    throw evidenceError('CERT_MALFORMED', `${field}: no PEM certificate found`, {
      details: { field },
    });
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b);
    } catch (cause) {
      throw evidenceError('CERT_MALFORMED', `${field}[${i}]: bad PEM certificate`, {
        cause,
        details: { field, index: i },
      });
    }
  });
}

/** Parses certificates given as PEM text or as DER bytes (one certificate). */
export function parseCertificates(data: Uint8Array, field = 'certificates'): Certificate[] {
  const head = new TextDecoder().decode(data.subarray(0, Math.min(data.length, 64)));
  if (head.includes('-----BEGIN'))
    return parsePemCertificates(new TextDecoder().decode(data), field);
  return [parseCertificate(data, field)];
}

/** A root trusted by its public key. */
export interface TrustAnchor {
  readonly name: string;
  readonly certificate: Certificate;
}

export function trustAnchor(name: string, der: Uint8Array): TrustAnchor {
  return { name, certificate: parseCertificate(der, `root ${name}`) };
}
