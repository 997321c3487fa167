/**
 * The Intel SGX Root CA (production), the single trust anchor of every DCAP quote and of the
 * Intel PCS collateral (TCB Info, QE Identity, PCK CRLs). Intel SGX/TDX DCAP, "Intel SGX PCK
 * Certificate and Certificate Revocation List Profile Specification", section 1.2.
 *
 * Embedded as DER and pinned by its public key (SHA-256 fingerprint of the certificate
 * 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3): Intel's test root carries
 * the same subject DN, so trusting by name would accept quotes signed with test keys.
 */
import { fromBase64 } from '../bytes.js';
import { evidenceError } from '../error-codes.js';
import { rawCert, type RawCert } from '../pki/cert-cache.js';
import { trustAnchor, type TrustAnchor } from '../pki/x509.js';

const INTEL_SGX_ROOT_CA_B64 =
  'MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIwaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYTAlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOBuzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJMEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SVUr9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYIKoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwgAiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=';

/** DER bytes of the production Intel SGX Root CA (valid 2018-05-21 .. 2049-12-31). */
export const INTEL_SGX_ROOT_CA_DER: Uint8Array = fromBase64(
  INTEL_SGX_ROOT_CA_B64,
  'Intel SGX Root CA',
);

/** SHA-256 of {@link INTEL_SGX_ROOT_CA_DER}, lowercase hex. */
export const INTEL_SGX_ROOT_CA_SHA256 =
  '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3';

/** The default root of DCAP verification: the production Intel SGX Root CA, trusted by key. */
export const INTEL_SGX_ROOT_CA: TrustAnchor = trustAnchor(
  'Intel SGX Root CA',
  INTEL_SGX_ROOT_CA_DER,
);

/**
 * Splits a certificate carried in a quote or in Intel collateral (pki/cert-cache.ts `rawCert`),
 * holding it to Intel's profile ("Intel SGX PCK Certificate and CRL Profile Specification"):
 * every Intel SGX/TDX certificate is signed with ecdsa-with-SHA256, so any other algorithm is
 * refused before a path is built.
 */
export function intelRawCert(der: Uint8Array, field: string): RawCert {
  const raw = rawCert(der, field);
  if (raw.algorithm.name !== 'ecdsa-with-SHA256') {
    throw evidenceError('CERT_MALFORMED', `${field}: not an ecdsa-with-SHA256 certificate`, {
      details: { field, algorithm: raw.algorithm.name },
    });
  }
  return raw;
}
