/**
 * The activation client (DESIGN §3 "Activate a workload", steps 1-3, agent side):
 * 1. a fresh P-256 key for this activation (never reused: a key that outlived an activation
 *    could be replayed with old evidence);
 * 2. a one-time nonce from `POST /v1/activate/challenge`;
 * 3. evidence over `activationReportData(nonce, SPKI)`, which binds both, so the coordinator
 *    knows the key it encrypts to was made inside this TEE for this request;
 * 4. `POST /v1/activate` with the evidence and a CSR for the key (a renewal adds the instance
 *    id, signed with the instance's current mesh key over the nonce and the new keys);
 * 5. the bundle decrypted with the private key, then checked (schema, certificate for our key
 *    and workload, coordinator TLS identity against the bundle's root) before it is used.
 */
import 'reflect-metadata';
import { createPrivateKey, generateKeyPairSync, sign as nodeSign, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import {
  ActivateResponseSchema,
  ChallengeResponseSchema,
  ReleaseInstanceResponseSchema,
  releaseSignedBytes,
  renewalSignedBytes,
  activationReportData,
  checkBody,
  decryptBundle,
  nonceFromBase64Url,
  toBase64Url,
} from '@cloister/protocol';
import type {
  ActivateRequest,
  ActivationBundle,
  ImageKeyRequest,
  WireEvidence,
} from '@cloister/protocol';
import { isCloisterError } from '@cloister/errors';
import { agentError } from './error-codes.js';
import { checkBundleCertificate } from './bundle.js';
import type { MeshIdentity } from './bundle.js';
import type { CoordinatorClient } from './coordinator-client.js';
import type { AgentEvidence, EvidenceProvider } from './providers/types.js';

x509.cryptoProvider.set(globalThis.crypto);

/** One activation's certificate key: node KeyObject for TLS/PEM, a WebCrypto key for the CSR. */
export interface ActivationKey {
  readonly privateKey: KeyObject;
  readonly keyPem: string;
  readonly spkiDer: Uint8Array;
}

/** Makes a fresh P-256 key. */
export function newActivationKey(): ActivationKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    spkiDer: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
  };
}

async function signingKey(key: ActivationKey): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(key.keyPem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
    'sign',
  ]);
}

/**
 * A fresh X25519 key the coordinator seals this activation's bundle to (one key, one purpose:
 * the P-256 key signs TLS handshakes, this one only agrees the bundle's key). The private half
 * never leaves WebCrypto.
 */
async function newBundleKey(): Promise<{ privateKey: webcrypto.CryptoKey; raw: Uint8Array }> {
  const kp = (await webcrypto.subtle.generateKey({ name: 'X25519' }, false, [
    'deriveBits',
  ])) as webcrypto.CryptoKeyPair;
  return {
    privateKey: kp.privateKey,
    raw: new Uint8Array(await webcrypto.subtle.exportKey('raw', kp.publicKey)),
  };
}

/** A PKCS#10 request (PEM) for the key, subject CN = workload (the coordinator sets the SAN). */
export async function buildCsr(key: ActivationKey, workload: string): Promise<string> {
  const publicKey = await webcrypto.subtle.importKey(
    'spki',
    key.spkiDer,
    { name: 'ECDSA', namedCurve: 'P-256' },
    true,
    ['verify'],
  );
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${workload}`,
    keys: { privateKey: await signingKey(key), publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return csr.toString('pem');
}

/** Evidence as the API carries it (base64url; SNP certificates leaf first, plus the raw table). */
export function wireEvidence(ev: AgentEvidence): WireEvidence {
  const aux = ev.aux;
  const c = ev.certs;
  const certs =
    c === undefined ? [] : [c.vcek ?? c.vlek, c.ask, c.ark].filter((x) => x !== undefined);
  return {
    type: ev.type,
    data: toBase64Url(ev.data),
    ...(certs.length > 0 ? { certs: certs.map((x) => toBase64Url(x)) } : {}),
    ...(aux === undefined ? {} : { aux: toBase64Url(aux) }),
  };
}

export interface ActivateOptions {
  readonly client: CoordinatorClient;
  readonly workload: string;
  readonly provider: EvidenceProvider;
  /**
   * Set when renewing: the instance's latest activation. The renewal keeps the instance (and its
   * per-instance secrets) and is signed with that activation's mesh key, which the coordinator
   * recorded as the instance's: the instance id alone authorises nothing.
   */
  readonly renew?: Pick<Activation, 'instanceId' | 'mesh'>;
  /** Image workloads: the pulled image manifest, for key release (`openWorkloadImage`). */
  readonly image?: ImageKeyRequest;
  /**
   * How the certificate key is sent: `public-key` (default: the bare SPKI; the evidence binds
   * its hash with the bundle key, and the bundle is sealed to the bundle key, so only the
   * attested holder can use the answer) or `csr` (a PKCS#10 request, for coordinators that want
   * proof of possession by signature; costs both sides an extra signature and ASN.1 work).
   */
  readonly keyForm?: 'csr' | 'public-key';
  readonly now?: () => Date;
}

export interface Activation {
  readonly instanceId: string;
  readonly bundle: ActivationBundle;
  readonly mesh: MeshIdentity;
  readonly renewAfter: Date;
  readonly key: ActivationKey;
}

/** Runs one activation (or renewal) end to end; throws a CloisterError on any refusal. */
export async function activate(o: ActivateOptions): Promise<Activation> {
  const now = o.now ?? (() => new Date());
  const challenge = checkResponse(
    ChallengeResponseSchema,
    await o.client.postJson('/v1/activate/challenge', {}),
    'challenge',
  );
  const nonce = nonceFromBase64Url(challenge.nonce);
  const key = newActivationKey();
  const bundleKey = await newBundleKey();
  const reportData = await activationReportData(nonce, key.spkiDer, bundleKey.raw);
  const evidence = await o.provider.getEvidence(reportData);
  const body: ActivateRequest = {
    workload: o.workload,
    nonce: challenge.nonce,
    evidence: wireEvidence(evidence),
    ...(o.keyForm === 'csr'
      ? { csr: await buildCsr(key, o.workload) }
      : { publicKey: toBase64Url(key.spkiDer) }),
    bundleKey: toBase64Url(bundleKey.raw),
    ...(o.renew === undefined
      ? {}
      : {
          instanceId: o.renew.instanceId,
          instanceSignature: signWithMeshKey(
            o.renew.mesh,
            renewalSignedBytes(o.renew.instanceId, challenge.nonce, reportData),
          ),
        }),
    ...(o.image === undefined ? {} : { image: o.image }),
  };
  const res = checkResponse(
    ActivateResponseSchema,
    await o.client.postJson('/v1/activate', body),
    'activate',
  );
  const bundle = await decryptBundle(res.bundle, bundleKey.privateKey);
  // Nothing from the bundle is used before the coordinator's TLS identity is settled.
  if (o.client.pinned) {
    o.client.assertSameRoot(bundle.mesh.rootCa);
  } else {
    o.client.assertPeersChainTo(bundle.mesh.rootCa, now());
  }
  const mesh = checkBundleCertificate(bundle, key, o.workload, now());
  o.client.pin(mesh.rootCaPem);
  const renewAfter = new Date(Date.parse(bundle.renewAfter));
  return { instanceId: res.instanceId, bundle, mesh, renewAfter, key };
}

/**
 * ECDSA P-256 / SHA-256, raw r||s, base64url, with the instance's mesh key: the activation key,
 * or the one the coordinator made when a template hands the key to the program (`.mesh.key`).
 * That is the key the coordinator recorded for the instance (`MeshIdentity.keyPem` is it).
 */
function signWithMeshKey(mesh: Pick<MeshIdentity, 'keyPem'>, bytes: Uint8Array): string {
  const key = createPrivateKey(mesh.keyPem);
  return toBase64Url(nodeSign('sha256', bytes, { key, dsaEncoding: 'ieee-p1363' }));
}

/**
 * Releases an instance when its agent stops (frees its `maxInstances` slot, so the workload can
 * be started again). Signed with the mesh key of the instance's latest activation over a fresh
 * nonce, so nobody else can release it and a captured release cannot be replayed. That is the
 * key the coordinator recorded: the activation key, or the one it made when a template hands
 * the key to the program (`.mesh.key`).
 */
export async function releaseInstance(
  client: CoordinatorClient,
  activation: Pick<Activation, 'instanceId' | 'mesh'>,
): Promise<void> {
  const challenge = checkResponse(
    ChallengeResponseSchema,
    await client.postJson('/v1/activate/challenge', {}),
    'challenge',
  );
  const signature = signWithMeshKey(
    activation.mesh,
    releaseSignedBytes(activation.instanceId, challenge.nonce),
  );
  checkResponse(
    ReleaseInstanceResponseSchema,
    await client.deleteJson(`/v1/instances/${activation.instanceId}`, {
      nonce: challenge.nonce,
      signature,
    }),
    'release',
  );
}

function checkResponse<T extends Parameters<typeof checkBody>[0]>(
  schema: T,
  value: unknown,
  what: string,
): ReturnType<typeof checkBody<T>> {
  try {
    return checkBody(schema, value, what);
  } catch (cause) {
    if (!isCloisterError(cause)) throw cause;
    throw agentError(
      'AGENT_COORDINATOR_BAD_RESPONSE',
      `the coordinator's ${what} answer does not match the API`,
      {
        cause,
        details: { problems: cause.details?.['problems'] },
      },
    );
  }
}
