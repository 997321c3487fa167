/**
 * Certificates made with the machine's `openssl` command, for tests and benchmarks that need a
 * key and a self-signed certificate on disk (a TLS server, a token issuer).
 */
import { execFileSync } from 'node:child_process';

/** Writes a fresh P-256 key (PKCS#8 PEM) and a self-signed certificate for `subject`. */
export function opensslSelfSignedP256(o: {
  keyFile: string;
  certFile: string;
  /** Distinguished name, e.g. `/CN=localhost`. */
  subject: string;
  days?: number;
}): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      o.keyFile,
      '-out',
      o.certFile,
      '-days',
      String(o.days ?? 1),
      '-subj',
      o.subject,
    ],
    { stdio: 'ignore' },
  );
}
