/**
 * SPIFFE identities of mesh peers (SPIFFE X509-SVID specification, section 2 "SPIFFE ID" and
 * section 4 "X.509 SVID": exactly one URI SAN, `spiffe://<trust-domain>/<path>`).
 *
 * A mesh certificate names its workload as `spiffe://<trust-domain>/<workload>`. The proxy
 * authorises peers by this name only: never by IP address, DNS name or subject CN, which the
 * untrusted network and orchestrator control.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

/** The SPIFFE ID of a workload. */
export function spiffeId(trustDomain: string, workload: string): string {
  return `spiffe://${trustDomain}/${workload}`;
}

const cache = new Map<string, string | null>();
const CACHE_MAX = 256;

/**
 * The single SPIFFE URI SAN of a DER certificate, or null when it has none or more than one
 * (a certificate with two SPIFFE IDs could be used to impersonate either: refused), or when it
 * is not a leaf (X509-SVID section 5.2): a CA certificate, or one allowed to sign certificates
 * or CRLs, chains to the root like a leaf but is an issuer, not a workload identity.
 */
export function spiffeIdOfCert(der: Uint8Array): string | null {
  const key = Buffer.from(der).toString('base64');
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let id: string | null = null;
  try {
    const cert = new x509.X509Certificate(new Uint8Array(der));
    const signs = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
    const isCa = cert.getExtension(x509.BasicConstraintsExtension)?.ca === true;
    const canSign = ((cert.getExtension(x509.KeyUsagesExtension)?.usages ?? 0) & signs) !== 0;
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    const uris = (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value);
    const spiffe = uris.filter((u) => u.startsWith('spiffe://'));
    id =
      !isCa && !canSign && uris.length === 1 && spiffe.length === 1 ? (spiffe[0] as string) : null;
  } catch {
    id = null;
  }
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(key, id);
  return id;
}

/** The workload name in `id` when it belongs to `trustDomain`, else null. */
export function workloadOf(id: string | null, trustDomain: string): string | null {
  if (id === null) return null;
  const prefix = `spiffe://${trustDomain}/`;
  if (!id.startsWith(prefix)) return null;
  const name = id.slice(prefix.length);
  return /^[A-Za-z0-9._-]+$/.test(name) ? name : null;
}
