/**
 * EAR-shaped attestation results (draft-ietf-rats-ear, AR4SI trustworthiness vector as in
 * veraison/ear): each appraisal sets trust claims; `ear.status` is the worst tier among the
 * claims made.
 */

export type EarStatus = 'none' | 'affirming' | 'warning' | 'contraindicated';

export const TRUST_CLAIMS = [
  'instance-identity',
  'configuration',
  'executables',
  'file-system',
  'hardware',
  'runtime-opaque',
  'storage-opaque',
  'sourced-data',
] as const;
export type TrustClaim = (typeof TRUST_CLAIMS)[number];
export type TrustVector = Partial<Record<TrustClaim, number>>;

/** AR4SI codes used by Cloister's appraisal. */
export const AR4SI = {
  noClaim: 0,
  approvedRuntime: 2,
  approvedBoot: 3,
  unsafe: 32,
  unrecognized: 33,
  contraindicated: 96,
  hardwareGenuine: 2,
  hardwareUnrecognized: 97,
  configurationApproved: 2,
  configurationUnsafe: 32,
  configurationUnsupportable: 96,
  encryptedMemory: 2,
  visibleMemory: 96,
} as const;

/** The tier of one trust claim value (AR4SI). */
export function tierOf(value: number): EarStatus {
  const v = Math.abs(value);
  if (v <= 1) return 'none';
  if (v <= 31) return 'affirming';
  if (v <= 95) return 'warning';
  return 'contraindicated';
}

const RANK: Record<EarStatus, number> = { none: 0, affirming: 1, warning: 2, contraindicated: 3 };

/** The worst tier among the claims made (claims with value 0 are not made). */
export function statusOf(vector: TrustVector): EarStatus {
  let worst: EarStatus = 'none';
  for (const v of Object.values(vector)) {
    if (v === undefined || v === 0) continue;
    const t = tierOf(v);
    if (RANK[t] > RANK[worst]) worst = t;
  }
  return worst;
}

export interface EarAppraisal {
  readonly 'ear.status': EarStatus;
  readonly 'ear.trustworthiness-vector': TrustVector;
  readonly 'ear.appraisal-policy-id': string;
}

export interface EarResult {
  readonly eat_profile: 'tag:github.com,2023:veraison/ear';
  readonly iat: number;
  readonly 'ear.verifier-id': { readonly developer: string; readonly build: string };
  readonly submods: Readonly<Record<string, EarAppraisal>>;
  readonly eat_nonce?: string;
}

/** Wraps one appraisal into an EAR claims set. */
export function earResult(
  submod: string,
  appraisal: EarAppraisal,
  opts: { now: Date; build: string; nonce?: string },
): EarResult {
  return {
    eat_profile: 'tag:github.com,2023:veraison/ear',
    iat: Math.floor(opts.now.getTime() / 1000),
    'ear.verifier-id': { developer: 'urn:cloister', build: opts.build },
    submods: { [submod]: appraisal },
    ...(opts.nonce === undefined ? {} : { eat_nonce: opts.nonce }),
  };
}
