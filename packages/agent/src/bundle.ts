/**
 * Checks on the decrypted activation bundle (`ActivationBundle` of @cloister/protocol, DESIGN
 * §3 "Activate a workload", step 3) that go beyond its schema, done before anything is written:
 * the mesh certificate must be for the key the agent holds, carry this workload's SPIFFE ID,
 * and chain leaf -> intermediate -> root.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import type { ActivationBundle } from '@cloister/protocol';
import { agentError } from './error-codes.js';
import { spiffeIdOfCert, workloadOf } from './mesh/spiffe.js';

/** What the agent keeps of a bundle's mesh section after checking it. */
export interface MeshIdentity {
  /** PEM private key of the mesh certificate (the agent key, or the one the coordinator made). */
  readonly keyPem: string;
  /** PEM leaf then intermediate CA: what a TLS endpoint presents. */
  readonly chainPem: string;
  readonly rootCaPem: string;
  readonly intermediateCaPem: string;
  readonly spiffeId: string;
  readonly trustDomain: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly serial: string;
}

function invalid(field: string, rule: string): never {
  throw agentError('AGENT_BUNDLE_INVALID', `bundle ${field}: ${rule}`, {
    details: { field, rule },
  });
}

function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function cert(pem: string, field: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (cause) {
    throw agentError('AGENT_BUNDLE_INVALID', `bundle ${field}: not a PEM certificate`, {
      cause,
      details: { field },
    });
  }
}

/**
 * Checks the bundle's certificate and returns the mesh identity. A certificate for another key
 * (a spliced bundle, or a coordinator bug) would make the agent present an identity it cannot
 * prove; one for another workload would let it impersonate that workload on the mesh.
 */
export function checkBundleCertificate(
  bundle: ActivationBundle,
  agent: { keyPem: string; spkiDer: Uint8Array },
  workload: string,
  now = new Date(),
): MeshIdentity {
  const blocks = pemBlocks(bundle.mesh.cert);
  const leafPem = blocks[0];
  if (leafPem === undefined) invalid('mesh.cert', 'has no certificate');
  const leaf = cert(leafPem, 'mesh.cert');
  const inter = cert(bundle.mesh.intermediateCa, 'mesh.intermediateCa');
  const root = cert(bundle.mesh.rootCa, 'mesh.rootCa');

  let keyPem = agent.keyPem;
  let spki = Buffer.from(agent.spkiDer);
  if (bundle.mesh.key !== undefined) {
    try {
      spki = createPublicKey(createPrivateKey(bundle.mesh.key)).export({
        type: 'spki',
        format: 'der',
      });
    } catch (cause) {
      throw agentError('AGENT_BUNDLE_INVALID', 'bundle mesh.key: not a PEM private key', { cause });
    }
    keyPem = bundle.mesh.key;
  }
  const leafSpki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  if (!spki.equals(leafSpki)) invalid('mesh.cert', 'is not issued for the mesh key');
  const id = spiffeIdOfCert(new Uint8Array(leaf.raw));
  const td = id === null ? undefined : /^spiffe:\/\/([^/]+)\//.exec(id)?.[1];
  if (id === null || td === undefined || workloadOf(id, td) !== workload) {
    invalid('mesh.cert', `does not carry the SPIFFE ID of workload ${workload}`);
  }
  if (!leaf.checkIssued(inter) || !leaf.verify(inter.publicKey)) {
    invalid('mesh.cert', 'is not issued by the mesh CA');
  }
  if (!inter.checkIssued(root) || !inter.verify(root.publicKey)) {
    invalid('mesh.intermediateCa', 'is not issued by the root CA');
  }
  if (!root.verify(root.publicKey)) invalid('mesh.rootCa', 'is not a self-signed root');
  const nb = Date.parse(leaf.validFrom);
  const na = Date.parse(leaf.validTo);
  // Five minutes of clock skew between the coordinator and this TEE are tolerated.
  if (nb > now.getTime() + 300_000 || na < now.getTime()) invalid('mesh.cert', 'is not valid now');
  return {
    keyPem,
    chainPem: `${leaf.toString().trim()}\n${inter.toString().trim()}\n`,
    rootCaPem: `${root.toString().trim()}\n`,
    intermediateCaPem: `${inter.toString().trim()}\n`,
    spiffeId: id,
    trustDomain: td,
    notBefore: new Date(nb),
    notAfter: new Date(na),
    serial: leaf.serialNumber,
  };
}
