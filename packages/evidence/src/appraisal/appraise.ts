/**
 * Appraisal: compares verified claims with reference values and produces structured reasons
 * (which rule, expected, actual) and an EAR appraisal. Verification (signatures, chains,
 * collateral, TCB level) happens before and separately; appraisal never sees unverified claims.
 */
import type { Claims, IntelTcbStatus, SnpTcb } from '../claims.js';
import { evidenceError } from '../error-codes.js';
import type { EvidenceErrorCode } from '../error-codes.js';
import { AR4SI, statusOf } from './ear.js';
import type { EarAppraisal, EarStatus, TrustClaim, TrustVector } from './ear.js';
import type { ReferenceValues } from './reference-values.js';

/** Verified evidence as every verifier returns it. */
export interface VerifiedEvidence {
  readonly claims: Claims;
  /** Intel only: the combined platform / QE / TDX module status. */
  readonly tcbStatus?: IntelTcbStatus;
  readonly advisoryIds?: readonly string[];
}

/** One rule of the appraisal, with what was expected and what the evidence says. */
export interface AppraisalCheck {
  readonly rule: string;
  readonly ok: boolean;
  readonly expected: unknown;
  readonly actual: unknown;
  /** The error code used when this check is the reason for a refusal. */
  readonly code: EvidenceErrorCode;
  /** How a failure of this rule lowers trust. */
  readonly claim: TrustClaim;
}

export interface Appraisal {
  readonly status: EarStatus;
  readonly checks: readonly AppraisalCheck[];
  /** The failed checks, in rule order. */
  readonly failures: readonly AppraisalCheck[];
  readonly ear: EarAppraisal;
}

const hexEq = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

class Checks {
  readonly list: AppraisalCheck[] = [];
  eq(
    rule: string,
    expected: string | undefined,
    actual: string,
    claim: TrustClaim = 'executables',
  ): void {
    if (expected === undefined) return;
    this.list.push({
      rule,
      ok: hexEq(expected, actual),
      expected: expected.toLowerCase(),
      actual,
      code: 'POLICY_MISMATCH',
      claim,
    });
  }
  num(
    rule: string,
    expected: number | undefined,
    actual: number,
    claim: TrustClaim = 'executables',
  ): void {
    if (expected === undefined) return;
    this.list.push({
      rule,
      ok: expected === actual,
      expected,
      actual,
      code: 'POLICY_MISMATCH',
      claim,
    });
  }
  min(
    rule: string,
    minimum: number | undefined,
    actual: number,
    claim: TrustClaim = 'configuration',
  ): void {
    if (minimum === undefined) return;
    this.list.push({
      rule,
      ok: actual >= minimum,
      expected: `>= ${minimum}`,
      actual,
      code: 'TCB_BELOW_MINIMUM',
      claim,
    });
  }
  debug(allowed: boolean | undefined, actual: boolean): void {
    // A debug TEE lets the host read and write its memory: refused unless explicitly allowed.
    this.list.push({
      rule: 'debug',
      ok: !actual || allowed === true,
      expected: allowed === true ? 'any' : false,
      actual,
      code: 'POLICY_DEBUG',
      claim: 'runtime-opaque',
    });
  }
  tcbStatus(
    accepted: readonly IntelTcbStatus[] | undefined,
    actual: IntelTcbStatus | undefined,
  ): void {
    const list = accepted ?? ['UpToDate'];
    // Only Intel evidence gets here. Without the verifier's status its TCB level was never
    // judged: unknown is not UpToDate, so claims handed over without it cannot skip the rule.
    this.list.push({
      rule: 'tcbStatus',
      ok: actual !== undefined && list.includes(actual),
      expected: list,
      actual: actual ?? null,
      code: 'TCB_STATUS_NOT_ACCEPTED',
      claim: 'configuration',
    });
  }
}

function snpMinTcb(c: Checks, min: Partial<SnpTcb> | undefined, actual: SnpTcb): void {
  if (min === undefined) return;
  for (const k of ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const) {
    const m = min[k];
    if (m === undefined) continue;
    c.min(`minTcb.${k}`, m, actual[k] ?? 0);
  }
}

/** Checks `evidence` against `ref`. Never throws for a mismatch: see `assertAffirmed`. */
export function appraise(
  evidence: VerifiedEvidence,
  ref: ReferenceValues,
  policyId = 'cloister/reference-values',
): Appraisal {
  const claims = evidence.claims;
  const c = new Checks();
  if (ref.tee !== claims.tee) {
    c.list.push({
      rule: 'tee',
      ok: false,
      expected: ref.tee,
      actual: claims.tee,
      code: 'POLICY_MISMATCH',
      claim: 'hardware',
    });
  } else {
    switch (ref.tee) {
      case 'sgx': {
        const s = claims as Extract<Claims, { tee: 'sgx' }>;
        c.eq('mrenclave', ref.mrenclave, s.mrEnclave);
        c.eq('mrsigner', ref.mrsigner, s.mrSigner);
        c.num('productId', ref.productId, s.isvProdId);
        c.min('minSvn', ref.minSvn, s.isvSvn, 'executables');
        c.tcbStatus(ref.acceptedTcbStatus, evidence.tcbStatus);
        break;
      }
      case 'tdx': {
        const t = claims as Extract<Claims, { tee: 'tdx' }>;
        c.eq('mrtd', ref.mrtd, t.mrTd);
        ref.rtmrs?.forEach((r, i) => c.eq(`rtmrs[${i}]`, r ?? undefined, t.rtmrs[i] ?? ''));
        c.eq('mrseam', ref.mrseam, t.mrSeam);
        c.eq('mrConfigId', ref.mrConfigId, t.mrConfigId, 'configuration');
        c.eq('mrOwner', ref.mrOwner, t.mrOwner, 'configuration');
        c.tcbStatus(ref.acceptedTcbStatus, evidence.tcbStatus);
        break;
      }
      case 'sev-snp': {
        const s = claims as Extract<Claims, { tee: 'sev-snp' }>;
        c.eq('measurement', ref.measurement, s.measurement);
        c.eq('hostData', ref.hostData, s.hostData, 'configuration');
        c.eq('idKeyDigest', ref.idKeyDigest, s.idKeyDigest);
        if (ref.product !== undefined) {
          c.list.push({
            rule: 'product',
            ok: ref.product === s.product,
            expected: ref.product,
            actual: s.product,
            code: 'POLICY_MISMATCH',
            claim: 'hardware',
          });
        }
        c.num('vmpl', ref.vmpl, s.vmpl, 'configuration');
        c.min('minGuestSvn', ref.minGuestSvn, s.guestSvn, 'executables');
        snpMinTcb(c, ref.minTcb, s.reportedTcb);
        break;
      }
      case 'sim': {
        const s = claims as Extract<Claims, { tee: 'sim' }>;
        c.eq('measurement', ref.measurement, s.measurement);
        c.eq('hostData', ref.hostData, s.hostData, 'configuration');
        c.min('minSvn', ref.minSvn, s.svn, 'executables');
        break;
      }
    }
    c.eq('reportData', ref.reportData, claims.reportData, 'instance-identity');
    c.debug(ref.debug, claims.debug);
  }

  const failures = c.list.filter((x) => !x.ok);
  const vector: TrustVector = {
    // Simulation hardware is software: never better than "unsafe" (warning tier).
    hardware: claims.tee === 'sim' ? AR4SI.unsafe : AR4SI.hardwareGenuine,
    'runtime-opaque': claims.debug ? AR4SI.visibleMemory : AR4SI.encryptedMemory,
    executables: AR4SI.approvedRuntime,
    configuration:
      evidence.tcbStatus === undefined || evidence.tcbStatus === 'UpToDate'
        ? AR4SI.configurationApproved
        : AR4SI.configurationUnsafe,
  };
  for (const f of failures) vector[f.claim] = AR4SI.contraindicated;
  const status = statusOf(vector);
  return {
    status,
    checks: c.list,
    failures,
    ear: {
      'ear.status': status,
      'ear.trustworthiness-vector': vector,
      'ear.appraisal-policy-id': policyId,
    },
  };
}

/** Throws the first failed rule as a typed error with {rule, expected, actual}; otherwise returns. */
export function assertAffirmed(appraisal: Appraisal): void {
  const f = appraisal.failures[0];
  if (f === undefined) return;
  throw evidenceError(
    f.code,
    `${f.rule}: expected ${JSON.stringify(f.expected)}, got ${JSON.stringify(f.actual)}`,
    {
      details: {
        rule: f.rule,
        expected: f.expected,
        actual: f.actual,
        failures: appraisal.failures.map(({ rule, expected, actual }) => ({
          rule,
          expected,
          actual,
        })),
      },
    },
  );
}
