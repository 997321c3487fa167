/**
 * One interface in front of every TEE verifier, dispatching on the evidence type. The
 * coordinator never parses evidence itself: each verifier checks signatures, chains, collateral
 * and TCB and returns claims, or throws a VerificationError naming the layer that rejected.
 * Appraisal against the manifest happens afterwards (service.ts), on verified claims only.
 */
import type { VerifiedEvidence } from '@cloister/evidence';
import type { EvidenceType } from '@cloister/protocol';
import { coordinatorError } from './error-codes.js';

/** Evidence as it arrives from an agent: the type, the raw bytes and platform certificates. */
export interface EvidenceInput {
  readonly type: EvidenceType;
  readonly data: Uint8Array;
  /** DER certificates the TEE supplied (e.g. the SNP VCEK/ASK/ARK from the GHCB table). */
  readonly certs: readonly Uint8Array[];
  /** configfs-tsm auxblob, when the provider returned one. */
  readonly aux?: Uint8Array;
}

/** Verifies one type of evidence at time `now`. */
export type TypeVerifier = (evidence: EvidenceInput, now: Date) => Promise<VerifiedEvidence>;

export interface EvidenceVerifier {
  /** The types this verifier can check. */
  readonly types: readonly EvidenceInput['type'][];
  verify(evidence: EvidenceInput, now: Date): Promise<VerifiedEvidence>;
}

/** Builds a dispatching verifier from per-type verifiers; unknown types are refused. */
export function dispatchingVerifier(
  byType: Partial<Record<EvidenceInput['type'], TypeVerifier>>,
): EvidenceVerifier {
  return {
    types: Object.keys(byType) as EvidenceInput['type'][],
    async verify(evidence, now) {
      const v = byType[evidence.type];
      if (v === undefined) {
        throw coordinatorError(
          'COORDINATOR_EVIDENCE_UNSUPPORTED',
          `no verifier for ${evidence.type} evidence is configured`,
          {
            details: {
              rule: 'evidence.type',
              expected: Object.keys(byType),
              actual: evidence.type,
            },
          },
        );
      }
      return v(evidence, now);
    },
  };
}
