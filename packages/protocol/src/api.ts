/**
 * Coordinator HTTP API (DESIGN §3): one TypeBox schema per request and response body, usable
 * as Fastify route schemas and as client-side validators (`checkBody`). Binary values travel as
 * unpadded base64url (RFC 4648 §5); certificates and public keys of people as PEM; times as
 * RFC 3339 strings.
 *
 *   POST /v1/activate/challenge      -> ChallengeResponse
 *   POST /v1/activate                ActivateRequest -> ActivateResponse
 *   POST /v1/attest                  AttestRequest -> AttestResponse
 *   GET  /v1/manifest                -> ManifestResponse
 *   PUT  /v1/manifest                SetManifestRequest -> SetManifestResponse
 *   GET  /v1/manifest/history        -> HistoryResponse
 *   PUT  /v1/secrets/{name}          SetSecretRequest -> SetSecretResponse
 *   GET  /v1/status                  -> StatusResponse
 *   DELETE /v1/instances/{id}        ReleaseInstanceRequest -> ReleaseInstanceResponse
 *   GET  /v1/image-key               -> ImageKeyResponse
 * Errors: application/problem+json (RFC 9457), see problem.ts.
 */
import { Type } from '@sinclair/typebox';
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { toHex } from './bytes.js';
import { protocolError } from './error-codes.js';
import { ClosedRecord, ManifestSchema, Name } from './manifest/schema.js';

/** Unpadded base64url. */
export const Base64Url = (options: { maxLength?: number; description?: string } = {}) =>
  Type.String({
    pattern: '^[A-Za-z0-9_-]*$',
    maxLength: options.maxLength ?? 1_000_000,
    ...(options.description === undefined ? {} : { description: options.description }),
  });
export const HexHash = Type.String({
  pattern: '^[0-9a-f]{64}$',
  description: '32 bytes, lowercase hex',
});
export const Timestamp = Type.String({
  pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})$',
  description: 'RFC 3339 time',
});
export const PemText = (label: string, maxLength = 65_536) =>
  Type.String({ pattern: `-----BEGIN ${label}-----`, maxLength });
export const NonceB64 = Type.String({
  pattern: '^[A-Za-z0-9_-]{43}$',
  description: '32 random bytes, base64url',
});

export const EvidenceTypeSchema = Type.Union([
  Type.Literal('sgx'),
  Type.Literal('tdx'),
  Type.Literal('sev-snp'),
  Type.Literal('tpm'),
  Type.Literal('azure-cvm'),
  Type.Literal('sim'),
]);
export type EvidenceType = Static<typeof EvidenceTypeSchema>;

/** Evidence as sent on the wire: the raw quote/report, and certificates the TEE supplied. */
export const EvidenceSchema = Type.Object(
  {
    type: EvidenceTypeSchema,
    data: Base64Url({ maxLength: 262_144, description: 'quote / report bytes' }),
    certs: Type.Optional(
      Type.Array(Base64Url({ maxLength: 65_536, description: 'DER' }), { maxItems: 16 }),
    ),
    aux: Type.Optional(Base64Url({ maxLength: 262_144, description: 'configfs-tsm auxblob' })),
  },
  { additionalProperties: false },
);
export type WireEvidence = Static<typeof EvidenceSchema>;

export const ChallengeResponseSchema = Type.Object(
  { nonce: NonceB64, expiresAt: Timestamp },
  { additionalProperties: false },
);
export type ChallengeResponse = Static<typeof ChallengeResponseSchema>;

const MediaType = Type.String({
  pattern: '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$',
});

/**
 * Key release for an image workload: the image manifest the agent pulled (and the index it was
 * selected from, when the workload pins an index), exactly as served. The coordinator checks
 * them against the workload's pinned `image.manifestDigest` and releases the keys of that
 * manifest's encrypted layers, wrapped to the coordinator's image key, in the bundle.
 */
export const ImageKeyRequestSchema = Type.Object(
  {
    manifest: Base64Url({ maxLength: 1_048_576, description: 'the image manifest bytes' }),
    manifestMediaType: MediaType,
    index: Type.Optional(Base64Url({ maxLength: 1_048_576, description: 'the index bytes' })),
    indexMediaType: Type.Optional(MediaType),
  },
  { additionalProperties: false },
);
export type ImageKeyRequest = Static<typeof ImageKeyRequestSchema>;

/** An X25519 public key (RFC 7748, 32 bytes), base64url: what an activation bundle is sealed to. */
export const BundleKey = Type.String({
  pattern: '^[A-Za-z0-9_-]{43}$',
  description: 'X25519 public key (32 bytes), base64url',
});

/** An instance id as a request names it (the coordinator's are 32 hex digits). */
const InstanceIdField = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' });

/** ECDSA P-256 / SHA-256, raw r||s (IEEE P1363, 64 bytes), base64url. */
const P256Signature = Type.String({
  pattern: '^[A-Za-z0-9_-]{86}$',
  description: 'ECDSA P-256 signature, raw r||s (64 bytes), base64url',
});

const ActivateFields = {
  workload: Name,
  nonce: NonceB64,
  evidence: EvidenceSchema,
  bundleKey: BundleKey,
  image: Type.Optional(ImageKeyRequestSchema),
};
const Csr = PemText('CERTIFICATE REQUEST');
const PublicKey = Base64Url({ maxLength: 1024 });
/**
 * A renewal names its instance and proves it holds the instance's current mesh key: the id
 * alone proves nothing, since every mesh peer sees it in the instance's certificate.
 */
const RenewalFields = { instanceId: InstanceIdField, instanceSignature: P256Signature };

/**
 * Activation: exactly one of `csr` (PEM PKCS#10) or `publicKey` (SPKI DER, base64url) names the
 * agent's fresh P-256 key, the key of its mesh certificate; `bundleKey` is its fresh X25519 key,
 * the one the bundle is sealed to. `activationReportData` binds both.
 *
 * A renewal adds `instanceId` and `instanceSignature` (always both): ECDSA P-256 / SHA-256, raw
 * r||s, by the instance's current mesh key over `renewalSignedBytes(instanceId, nonce, report
 * data)`.
 */
export const ActivateRequestSchema = Type.Union([
  Type.Object({ ...ActivateFields, csr: Csr }, { additionalProperties: false }),
  Type.Object({ ...ActivateFields, csr: Csr, ...RenewalFields }, { additionalProperties: false }),
  Type.Object({ ...ActivateFields, publicKey: PublicKey }, { additionalProperties: false }),
  Type.Object(
    { ...ActivateFields, publicKey: PublicKey, ...RenewalFields },
    { additionalProperties: false },
  ),
]);
export type ActivateRequest = Static<typeof ActivateRequestSchema>;

export const ActivateResponseSchema = Type.Object(
  {
    /** Compact JWE (ECDH-ES, A256GCM) to the bundle key; plaintext is an ActivationBundle. */
    bundle: Type.String({
      pattern:
        '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$',
    }),
    /** PEM: the mesh leaf, then the intermediate CA. */
    certificate: PemText('CERTIFICATE'),
    expiresAt: Timestamp,
    /** Identifies this instance for per-instance secrets and renewal. */
    instanceId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
  },
  { additionalProperties: false },
);
export type ActivateResponse = Static<typeof ActivateResponseSchema>;

/** The decrypted activation bundle. */
export const ActivationBundleSchema = Type.Object(
  {
    /** Absolute path to content (base64url). */
    files: ClosedRecord(
      Type.String({ pattern: '^(/[^/\\u0000]+)+$' }),
      Base64Url({ maxLength: 16_000_000 }),
    ),
    env: ClosedRecord(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), Type.String()),
    args: Type.Array(Type.String()),
    mesh: Type.Object(
      {
        cert: PemText('CERTIFICATE'),
        /** Present only when the coordinator generated the mesh key (templates use .mesh.key). */
        key: Type.Optional(PemText('PRIVATE KEY')),
        rootCa: PemText('CERTIFICATE'),
        intermediateCa: PemText('CERTIFICATE'),
      },
      { additionalProperties: false },
    ),
    /** When the agent should re-attest for a new certificate. */
    renewAfter: Timestamp,
    /**
     * Image workloads: the released layer keys (ocicrypt PrivateOptions, base64) by encrypted
     * layer digest, for the manifest the activation named.
     */
    layerKeys: Type.Optional(
      ClosedRecord(
        Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
        Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: 4096 }),
      ),
    ),
  },
  { additionalProperties: false },
);
export type ActivationBundle = Static<typeof ActivationBundleSchema>;

/** `GET /v1/image-key`: the public key image layers are wrapped to for key release. */
export const ImageKeyResponseSchema = Type.Object(
  {
    /** PEM SPKI, P-256: ocicrypt wraps with JWE ECDH-ES+A256KW (`provider.cloister`). */
    publicKey: PemText('PUBLIC KEY'),
  },
  { additionalProperties: false },
);
export type ImageKeyResponse = Static<typeof ImageKeyResponseSchema>;

export const AttestRequestSchema = Type.Object(
  { nonce: NonceB64 },
  { additionalProperties: false },
);
export type AttestRequest = Static<typeof AttestRequestSchema>;

/** History entry as on the wire (see history.ts). */
export const OwnerSignatureSchema = Type.Object(
  {
    owner: Name,
    alg: Type.Union([Type.Literal('ES256'), Type.Literal('ES384'), Type.Literal('EdDSA')]),
    signature: Base64Url({ maxLength: 256 }),
  },
  { additionalProperties: false },
);
export const HistoryEntrySchema = Type.Object(
  {
    seq: Type.Integer({ minimum: 0 }),
    prevHash: HexHash,
    manifestHash: HexHash,
    kind: Type.Union([Type.Literal('set'), Type.Literal('update'), Type.Literal('package-update')]),
    signatures: Type.Array(OwnerSignatureSchema, { maxItems: 256 }),
    at: Timestamp,
  },
  { additionalProperties: false },
);

export const AttestResponseSchema = Type.Object(
  {
    /** report_data = coordinatorReportData(nonce, rootCa DER, history head, tlsSpki). */
    evidence: EvidenceSchema,
    rootCa: PemText('CERTIFICATE'),
    /** The current manifest, or null before the first set. */
    manifest: Type.Union([ManifestSchema, Type.Null()]),
    /** Canonical hash of `manifest` (null before the first set). */
    manifestHash: Type.Optional(Type.Union([HexHash, Type.Null()])),
    /** The mesh CA of the current manifest (null before the first set). */
    intermediateCa: Type.Optional(Type.Union([PemText('CERTIFICATE'), Type.Null()])),
    /** The history head bound into the evidence (the zero hash before the first set). */
    historyHead: Type.Optional(HexHash),
    history: Type.Array(HistoryEntrySchema),
    /** SPKI DER of the coordinator's TLS key, base64url. */
    tlsSpki: Base64Url({ maxLength: 2048 }),
  },
  { additionalProperties: false },
);
export type AttestResponse = Static<typeof AttestResponseSchema>;

export const ManifestResponseSchema = Type.Object(
  { manifest: ManifestSchema, manifestHash: HexHash, seq: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
);
export type ManifestResponse = Static<typeof ManifestResponseSchema>;

/**
 * PUT /v1/manifest. `signatures` are detached owner signatures over the hash of the transition
 * this set creates (`transitionSignedBytes(transitionHash({seq, prevHash, manifestHash, kind}))`).
 */
export const SetManifestRequestSchema = Type.Object(
  {
    manifest: Type.Unknown({
      description: 'validated with validateManifest for path-precise errors',
    }),
    kind: Type.Optional(
      Type.Union([Type.Literal('set'), Type.Literal('update'), Type.Literal('package-update')]),
    ),
    signatures: Type.Array(OwnerSignatureSchema, { maxItems: 256 }),
  },
  { additionalProperties: false },
);
export type SetManifestRequest = Static<typeof SetManifestRequestSchema>;

export const SetManifestResponseSchema = Type.Object(
  { manifestHash: HexHash, seq: Type.Integer({ minimum: 0 }), transitionHash: HexHash },
  { additionalProperties: false },
);
export type SetManifestResponse = Static<typeof SetManifestResponseSchema>;

export const HistoryResponseSchema = Type.Object(
  {
    entries: Type.Array(HistoryEntrySchema),
    /** Every manifest of the history, keyed by its manifest hash (for verifyHistory). */
    manifests: Type.Optional(ClosedRecord(HexHash, ManifestSchema)),
  },
  { additionalProperties: false },
);
export type HistoryResponse = Static<typeof HistoryResponseSchema>;

/**
 * PUT /v1/secrets/{name}: the signature is over `ownerSignedBytes('secret', secretDigest({
 * rootCaDer, name, version, value }))`; `version` must be the current version + 1 (0 first).
 */
export const SetSecretRequestSchema = Type.Object(
  {
    value: Base64Url({ maxLength: 1_400_000 }),
    version: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    signature: OwnerSignatureSchema,
  },
  { additionalProperties: false },
);
export type SetSecretRequest = Static<typeof SetSecretRequestSchema>;
export const SetSecretResponseSchema = Type.Object(
  { name: Name, version: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
);
export type SetSecretResponse = Static<typeof SetSecretResponseSchema>;

export const CoordinatorStateSchema = Type.Union([
  Type.Literal('uninitialized'),
  Type.Literal('accepting-manifest'),
  Type.Literal('ready'),
  Type.Literal('recovery'),
]);
export type CoordinatorState = Static<typeof CoordinatorStateSchema>;
export const StatusResponseSchema = Type.Object(
  {
    state: CoordinatorStateSchema,
    version: Type.String(),
    tee: EvidenceTypeSchema,
    manifestHash: Type.Union([HexHash, Type.Null()]),
    historyHead: HexHash,
    /** Live instances per workload of the current manifest. */
    instances: Type.Optional(ClosedRecord(Name, Type.Integer({ minimum: 0 }))),
    /** Only when state is recovery: which recovery owners have uploaded a share. */
    recovery: Type.Optional(
      Type.Object(
        { threshold: Type.Integer({ minimum: 1 }), received: Type.Array(Name) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type StatusResponse = Static<typeof StatusResponseSchema>;

/**
 * DELETE /v1/instances/{id}: an agent that exits cleanly releases its instance (and its
 * `maxInstances` slot). `signature` is ECDSA P-256 / SHA-256, raw r||s (IEEE P1363), by the
 * instance's current mesh key over `releaseSignedBytes(id, nonce)`, for a fresh nonce from
 * `/v1/activate/challenge`: only the key holder can release, and only once.
 */
export const ReleaseInstanceRequestSchema = Type.Object(
  { nonce: NonceB64, signature: Base64Url({ maxLength: 128 }) },
  { additionalProperties: false },
);
export type ReleaseInstanceRequest = Static<typeof ReleaseInstanceRequestSchema>;
export const ReleaseInstanceResponseSchema = Type.Object(
  { instanceId: Type.String(), released: Type.Literal(true) },
  { additionalProperties: false },
);
export type ReleaseInstanceResponse = Static<typeof ReleaseInstanceResponseSchema>;
export const InstanceIdPattern = '^[0-9a-f]{32}$';

/** The bytes an instance release signs: a domain label, the instance id and the nonce. */
export function releaseSignedBytes(instanceId: string, nonce: string): Uint8Array {
  return new TextEncoder().encode(`cloister/instance-release/v1\u0000${instanceId}\u0000${nonce}`);
}

/**
 * The bytes an instance renewal signs with the instance's current mesh key: a domain label, the
 * instance id, the nonce and the renewal's report data (`activationReportData(nonce, SPKI,
 * bundle key)`, lowercase hex). The report data binds the new keys, so the signature cannot be
 * moved onto a request that installs other keys, nor onto another nonce.
 */
export function renewalSignedBytes(
  instanceId: string,
  nonce: string,
  reportData: Uint8Array,
): Uint8Array {
  return new TextEncoder().encode(
    `cloister/instance-renewal/v1\u0000${instanceId}\u0000${nonce}\u0000${toHex(reportData)}`,
  );
}

/** Route table: method, URL and body/response schemas, ready for Fastify. */
export const ROUTES = {
  activateChallenge: {
    method: 'POST',
    url: '/v1/activate/challenge',
    response: ChallengeResponseSchema,
  },
  activate: {
    method: 'POST',
    url: '/v1/activate',
    body: ActivateRequestSchema,
    response: ActivateResponseSchema,
  },
  attest: {
    method: 'POST',
    url: '/v1/attest',
    body: AttestRequestSchema,
    response: AttestResponseSchema,
  },
  getManifest: { method: 'GET', url: '/v1/manifest', response: ManifestResponseSchema },
  setManifest: {
    method: 'PUT',
    url: '/v1/manifest',
    body: SetManifestRequestSchema,
    response: SetManifestResponseSchema,
  },
  history: { method: 'GET', url: '/v1/manifest/history', response: HistoryResponseSchema },
  setSecret: {
    method: 'PUT',
    url: '/v1/secrets/:name',
    body: SetSecretRequestSchema,
    response: SetSecretResponseSchema,
  },
  status: { method: 'GET', url: '/v1/status', response: StatusResponseSchema },
  imageKey: { method: 'GET', url: '/v1/image-key', response: ImageKeyResponseSchema },
  releaseInstance: {
    method: 'DELETE',
    url: '/v1/instances/:id',
    body: ReleaseInstanceRequestSchema,
    response: ReleaseInstanceResponseSchema,
  },
} as const satisfies Record<
  string,
  { method: string; url: string; body?: TSchema; response: TSchema }
>;

/**
 * Validates a body against a schema and returns it typed; throws REQUEST_INVALID whose
 * `details.problems` lists each failing field (JSON Pointer + message).
 */
export function checkBody<T extends TSchema>(schema: T, body: unknown, what = 'body'): Static<T> {
  if (Value.Check(schema, body)) return body;
  const problems: { path: string; message: string }[] = [];
  for (const e of Value.Errors(schema, body)) {
    problems.push({ path: e.path, message: e.message });
    if (problems.length >= 50) break;
  }
  throw protocolError(
    'REQUEST_INVALID',
    `${what}: ${problems
      .slice(0, 3)
      .map((p) => `${p.path || '/'}: ${p.message}`)
      .join('; ')}`,
    { details: { problems } },
  );
}
