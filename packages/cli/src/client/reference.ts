/**
 * Reference values of the coordinator this release ships (DESIGN §3 "Verify": shipped with the
 * release, never downloaded at verify time). For the simulation TEE the coordinator documents
 * its measurement as `coordinatorSimMeasurement()` (simMeasurement over the Node.js executable
 * and the package name and version), so it is recomputed here from the installed files.
 */
import { coordinatorSimMeasurement } from '@cloister/coordinator/measurement';
import type { ReferenceValues } from '@cloister/evidence';
import { toHex } from '@cloister/protocol';
import type { EvidenceType } from '@cloister/protocol';
import { clientError } from './error-codes.js';

/** The reference values for a coordinator on `tee`; throws for TEEs this release has none for. */
export async function releaseCoordinatorReference(tee: EvidenceType): Promise<ReferenceValues> {
  if (tee === 'sim') {
    // debug false: a debug coordinator's memory (its keys) is readable by the host.
    return { tee: 'sim', measurement: toHex(await coordinatorSimMeasurement()), debug: false };
  }
  throw clientError(
    'VERIFY_EVIDENCE_UNSUPPORTED',
    `this release ships no reference values for a coordinator on ${tee}`,
    { details: { rule: 'reference', actual: tee } },
  );
}
