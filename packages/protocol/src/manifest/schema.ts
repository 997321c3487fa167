/**
 * The Cloister manifest (DESIGN §4) as a TypeBox schema, which is also its published JSON
 * Schema (draft 2020-12 compatible, `MANIFEST_SCHEMA`). Every object is closed
 * (`additionalProperties: false`) so a misspelt field is an error, never a silently ignored
 * security setting. Byte strings are lowercase hex of an exact length, so the canonical hash of
 * two manifests that mean the same thing is the same.
 */
import { Type } from '@sinclair/typebox';
import type { Static, TSchema } from '@sinclair/typebox';

/** Lowercase hex of exactly `bytes` bytes. */
export const Hex = (bytes: number, description?: string) =>
  Type.String({
    pattern: `^[0-9a-f]{${2 * bytes}}$`,
    description: description ?? `${bytes} bytes as lowercase hex`,
  });

/** Names of packages, workloads, secrets and owners: also used in template paths and SPIFFE IDs. */
export const NAME_PATTERN = '^[a-zA-Z][a-zA-Z0-9_-]{0,62}$';
export const Name = Type.String({ pattern: NAME_PATTERN });

const U8 = Type.Integer({ minimum: 0, maximum: 255 });
const U16 = Type.Integer({ minimum: 0, maximum: 0xffff });
const U32 = Type.Integer({ minimum: 0, maximum: 0xffffffff });
const Port = Type.Integer({ minimum: 1, maximum: 65535 });

/** Intel TCB statuses a policy may accept (Intel PCS TCB Info v3). */
export const IntelTcbStatusSchema = Type.Union([
  Type.Literal('UpToDate'),
  Type.Literal('SWHardeningNeeded'),
  Type.Literal('ConfigurationNeeded'),
  Type.Literal('ConfigurationAndSWHardeningNeeded'),
  Type.Literal('OutOfDate'),
  Type.Literal('OutOfDateConfigurationNeeded'),
  Type.Literal('TDRelaunchAdvised'),
  Type.Literal('TDRelaunchAdvisedConfigurationNeeded'),
]);

const closed = { additionalProperties: false } as const;

/** A record whose keys must all match the key schema (TypeBox leaves other keys open). */
export const ClosedRecord = <K extends TSchema, V extends TSchema>(key: K, value: V) =>
  Type.Record(key, value, { additionalProperties: false });

/** SGX enclave identity. Either `mrenclave`, or `mrsigner` with `productId` and `minSvn`. */
export const SgxPackageSchema = Type.Object(
  {
    tee: Type.Literal('sgx'),
    mrenclave: Type.Optional(Hex(32, 'MRENCLAVE')),
    mrsigner: Type.Optional(Hex(32, 'MRSIGNER')),
    productId: Type.Optional(U16),
    minSvn: Type.Optional(U16),
    debug: Type.Optional(Type.Boolean({ description: 'Accept a debug enclave (default false).' })),
    acceptedTcbStatus: Type.Optional(
      Type.Array(IntelTcbStatusSchema, { minItems: 1, uniqueItems: true }),
    ),
  },
  closed,
);

/** TDX trust domain identity. `rtmrs` entries that are null are not checked. */
export const TdxPackageSchema = Type.Object(
  {
    tee: Type.Literal('tdx'),
    mrtd: Type.Optional(Hex(48, 'MRTD')),
    rtmrs: Type.Optional(
      Type.Array(Type.Union([Hex(48), Type.Null()]), { minItems: 4, maxItems: 4 }),
    ),
    mrseam: Type.Optional(Hex(48, 'MRSEAM')),
    debug: Type.Optional(Type.Boolean()),
    acceptedTcbStatus: Type.Optional(
      Type.Array(IntelTcbStatusSchema, { minItems: 1, uniqueItems: true }),
    ),
  },
  closed,
);

/** Minimum AMD TCB (each SPL compared as >=). */
export const SnpTcbSchema = Type.Object(
  {
    bootloader: U8,
    tee: U8,
    snp: U8,
    microcode: U8,
    fmc: Type.Optional(U8),
  },
  closed,
);

/** SEV-SNP guest identity. */
export const SnpPackageSchema = Type.Object(
  {
    tee: Type.Literal('sev-snp'),
    measurement: Type.Optional(Hex(48, 'launch measurement')),
    hostData: Type.Optional(Hex(32, 'HOST_DATA')),
    minTcb: Type.Optional(SnpTcbSchema),
    debug: Type.Optional(Type.Boolean()),
    vmpl: Type.Optional(Type.Integer({ minimum: 0, maximum: 3 })),
    product: Type.Optional(
      Type.Union([Type.Literal('Milan'), Type.Literal('Genoa'), Type.Literal('Turin')]),
    ),
  },
  closed,
);

/** Simulation TEE identity (refused unless `policy.allowSimulation` is true). */
export const SimPackageSchema = Type.Object(
  {
    tee: Type.Literal('sim'),
    measurement: Hex(48, 'simMeasurement() of the executable and arguments'),
    hostData: Type.Optional(Hex(32)),
    minSvn: Type.Optional(U32),
    debug: Type.Optional(Type.Boolean()),
  },
  closed,
);

export const PackageSchema = Type.Union(
  [SgxPackageSchema, TdxPackageSchema, SnpPackageSchema, SimPackageSchema],
  { description: 'A TEE identity, discriminated by `tee`.' },
);
/** The package variant schema for each `tee` value. */
export const PACKAGE_SCHEMAS = {
  sgx: SgxPackageSchema,
  tdx: TdxPackageSchema,
  'sev-snp': SnpPackageSchema,
  sim: SimPackageSchema,
} as const satisfies Record<string, TSchema>;

/**
 * Absolute path, no `.`/`..` segments, no empty segments, no NUL. A `..` segment would let a
 * file or volume land outside the directory the agent materialises it in. Written without
 * lookahead so that any JSON Schema regex engine can apply the published schema.
 */
export const FILE_PATH_PATTERN =
  '^(/([^/.\\u0000][^/\\u0000]*|\\.[^/.\\u0000][^/\\u0000]*|\\.\\.[^/\\u0000]+))+$';
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,127}$';

/** A file given literally, without template processing (for content that contains `{{`). */
export const LiteralFileSchema = Type.Object(
  {
    data: Type.String({ maxLength: 1_000_000 }),
    encoding: Type.Union([Type.Literal('utf8'), Type.Literal('base64url')]),
  },
  closed,
);
export const FileValueSchema = Type.Union([
  Type.String({ maxLength: 1_000_000, description: 'A template.' }),
  LiteralFileSchema,
]);

export const IngressSchema = Type.Object(
  {
    port: Port,
    to: Port,
    external: Type.Optional(
      Type.Boolean({
        description:
          'Also admit clients without a certificate (users outside the mesh); the leaf then carries a localhost DNS SAN.',
      }),
    ),
  },
  { ...closed, description: 'Accept mTLS on `port` and forward plain TCP to the app on `to`.' },
);
export const EgressSchema = Type.Object(
  {
    listen: Type.String({
      pattern: '^(127(\\.[0-9]{1,3}){3}|localhost):[0-9]{1,5}$',
      description: 'A loopback host:port the app connects to.',
    }),
    workload: Name,
    port: Port,
  },
  { ...closed, description: 'Forward `listen` over mTLS to `workload` on its ingress `port`.' },
);
export const MeshSchema = Type.Object(
  {
    ingress: Type.Optional(Type.Array(IngressSchema, { maxItems: 64 })),
    egress: Type.Optional(Type.Array(EgressSchema, { maxItems: 64 })),
  },
  closed,
);

export const VolumeSchema = Type.Object(
  {
    secret: Name,
    rollback: Type.Optional(Type.Union([Type.Literal('protected'), Type.Literal('none')])),
  },
  closed,
);

export const ImageSchema = Type.Object(
  {
    ref: Type.String({ minLength: 1, maxLength: 1024 }),
    manifestDigest: Type.Optional(Type.String({ pattern: '^sha256:[0-9a-f]{64}$' })),
    configDigest: Type.Optional(Type.String({ pattern: '^sha256:[0-9a-f]{64}$' })),
    diffIds: Type.Optional(
      Type.Array(Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }), { maxItems: 1000 }),
    ),
  },
  { ...closed, description: 'The OCI image the workload runs and its reference values.' },
);

export const WorkloadSchema = Type.Object(
  {
    package: Name,
    maxInstances: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Absent: unlimited.' }),
    ),
    files: Type.Optional(
      ClosedRecord(Type.String({ pattern: FILE_PATH_PATTERN }), FileValueSchema),
    ),
    env: Type.Optional(
      ClosedRecord(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: 131072 })),
    ),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 131072 }), { maxItems: 4096 })),
    mesh: Type.Optional(MeshSchema),
    volumes: Type.Optional(ClosedRecord(Type.String({ pattern: FILE_PATH_PATTERN }), VolumeSchema)),
    image: Type.Optional(ImageSchema),
  },
  closed,
);

const secretCommon = {
  perInstance: Type.Optional(
    Type.Boolean({ description: 'A distinct value for every workload instance.' }),
  ),
  userDefined: Type.Optional(
    Type.Boolean({ description: 'Uploaded by an owner with role secrets:<name>, not generated.' }),
  ),
};

export const SymmetricSecretSchema = Type.Object(
  {
    type: Type.Literal('symmetric'),
    bits: Type.Union([Type.Literal(128), Type.Literal(192), Type.Literal(256), Type.Literal(512)]),
    ...secretCommon,
  },
  closed,
);
export const CertEcdsaSecretSchema = Type.Object(
  {
    type: Type.Literal('cert-ecdsa'),
    curve: Type.Union([Type.Literal('P-256'), Type.Literal('P-384')]),
    commonName: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    dnsNames: Type.Optional(
      Type.Array(
        Type.String({
          pattern:
            '^(\\*\\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$',
          maxLength: 253,
        }),
        { maxItems: 100 },
      ),
    ),
    ipAddresses: Type.Optional(
      Type.Array(Type.String({ pattern: '^[0-9a-fA-F.:]{2,45}$' }), { maxItems: 100 }),
    ),
    validDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
    ...secretCommon,
  },
  closed,
);
export const PlainSecretSchema = Type.Object(
  {
    type: Type.Literal('plain'),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_048_576 })),
    ...secretCommon,
  },
  closed,
);
export const SecretSchema = Type.Union([
  SymmetricSecretSchema,
  CertEcdsaSecretSchema,
  PlainSecretSchema,
]);
export const SECRET_SCHEMAS = {
  symmetric: SymmetricSecretSchema,
  'cert-ecdsa': CertEcdsaSecretSchema,
  plain: PlainSecretSchema,
} as const satisfies Record<string, TSchema>;

/**
 * Owner roles: `update` (approve manifest updates, counted against `updates.threshold`),
 * `package:<name>` (approve raising that package's minimum SVN), `secrets:<name>` (write that
 * user-defined secret).
 */
export const OWNER_ROLE_PATTERN =
  '^(update|package:[a-zA-Z][a-zA-Z0-9_-]{0,62}|secrets:[a-zA-Z][a-zA-Z0-9_-]{0,62})$';
export const PEM_PUBLIC_KEY_PATTERN =
  '^\\s*-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\\s]+-----END PUBLIC KEY-----\\s*$';

export const OwnerSchema = Type.Object(
  {
    publicKey: Type.String({
      pattern: PEM_PUBLIC_KEY_PATTERN,
      maxLength: 4096,
      description: 'PEM SubjectPublicKeyInfo: ECDSA P-256, P-384 or Ed25519.',
    }),
    roles: Type.Array(Type.String({ pattern: OWNER_ROLE_PATTERN }), {
      uniqueItems: true,
      maxItems: 256,
    }),
  },
  closed,
);

export const UpdatesSchema = Type.Object(
  { threshold: Type.Integer({ minimum: 1, maximum: 256 }) },
  closed,
);

export const RecoverySchema = Type.Object(
  {
    keys: ClosedRecord(
      Name,
      Type.String({
        pattern: PEM_PUBLIC_KEY_PATTERN,
        maxLength: 4096,
        description: 'PEM SubjectPublicKeyInfo: ECDH P-256 / P-384 or RSA (2048-4096 bits).',
      }),
    ),
    threshold: Type.Integer({ minimum: 1, maximum: 256 }),
  },
  closed,
);

export const PolicySchema = Type.Object(
  {
    allowSimulation: Type.Optional(
      Type.Boolean({ description: 'Accept evidence of the simulation TEE. Never in production.' }),
    ),
  },
  closed,
);

export const TRUST_DOMAIN_PATTERN =
  '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

export const ManifestSchema = Type.Object(
  {
    version: Type.Literal(1),
    trustDomain: Type.String({
      pattern: TRUST_DOMAIN_PATTERN,
      maxLength: 253,
      description: 'SPIFFE trust domain of the mesh certificates (lowercase DNS-like name).',
    }),
    packages: ClosedRecord(Name, PackageSchema),
    workloads: ClosedRecord(Name, WorkloadSchema),
    secrets: Type.Optional(ClosedRecord(Name, SecretSchema)),
    owners: Type.Optional(ClosedRecord(Name, OwnerSchema)),
    updates: Type.Optional(UpdatesSchema),
    recovery: Type.Optional(RecoverySchema),
    policy: Type.Optional(PolicySchema),
  },
  {
    ...closed,
    $id: 'urn:cloister:schema:manifest:v1',
    title: 'Cloister manifest',
  },
);

/** The manifest's JSON Schema, as published (a plain JSON value). */
export const MANIFEST_SCHEMA: Readonly<Record<string, unknown>> = JSON.parse(
  JSON.stringify(ManifestSchema),
) as Record<string, unknown>;

export type Manifest = Static<typeof ManifestSchema>;
export type Package = Static<typeof PackageSchema>;
export type SgxPackage = Static<typeof SgxPackageSchema>;
export type TdxPackage = Static<typeof TdxPackageSchema>;
export type SnpPackage = Static<typeof SnpPackageSchema>;
export type SimPackage = Static<typeof SimPackageSchema>;
export type PackageTee = Package['tee'];
export type Workload = Static<typeof WorkloadSchema>;
export type FileValue = Static<typeof FileValueSchema>;
export type MeshConfig = Static<typeof MeshSchema>;
export type Ingress = Static<typeof IngressSchema>;
export type Egress = Static<typeof EgressSchema>;
export type Volume = Static<typeof VolumeSchema>;
export type ImageRef = Static<typeof ImageSchema>;
export type Secret = Static<typeof SecretSchema>;
export type SymmetricSecret = Static<typeof SymmetricSecretSchema>;
export type CertEcdsaSecret = Static<typeof CertEcdsaSecretSchema>;
export type PlainSecret = Static<typeof PlainSecretSchema>;
export type Owner = Static<typeof OwnerSchema>;
export type Recovery = Static<typeof RecoverySchema>;
export type ManifestPolicy = Static<typeof PolicySchema>;
