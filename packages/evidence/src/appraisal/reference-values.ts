/**
 * Reference values: what a relying party expects of verified evidence, per TEE type. The field
 * names are the manifest's package fields (DESIGN §4), so a manifest package is directly a set
 * of reference values. Every field is optional except `tee`; an absent field is not checked,
 * except the fail-closed defaults: debug is refused unless `debug: true`, and an Intel TCB
 * status other than UpToDate is refused unless listed in `acceptedTcbStatus`.
 */
import type { IntelTcbStatus, SnpProduct, SnpTcb } from '../claims.js';

interface CommonReferenceValues {
  /** Allow a TEE in debug mode (its memory is visible to the host). Default false. */
  readonly debug?: boolean;
  /** Expected report data (hex, 64 bytes); normally checked by the binding instead. */
  readonly reportData?: string;
}

export interface SgxReferenceValues extends CommonReferenceValues {
  readonly tee: 'sgx';
  readonly mrenclave?: string;
  readonly mrsigner?: string;
  readonly productId?: number;
  readonly minSvn?: number;
  /** Default ["UpToDate"]. */
  readonly acceptedTcbStatus?: readonly IntelTcbStatus[];
}

export interface TdxReferenceValues extends CommonReferenceValues {
  readonly tee: 'tdx';
  readonly mrtd?: string;
  /** RTMR0..3; null (or a missing entry) means "any". */
  readonly rtmrs?: readonly (string | null)[];
  readonly mrseam?: string;
  readonly mrConfigId?: string;
  readonly mrOwner?: string;
  readonly acceptedTcbStatus?: readonly IntelTcbStatus[];
}

export interface SnpReferenceValues extends CommonReferenceValues {
  readonly tee: 'sev-snp';
  readonly measurement?: string;
  readonly hostData?: string;
  /** Minimum reported TCB, component by component. */
  readonly minTcb?: Partial<SnpTcb>;
  readonly vmpl?: number;
  readonly product?: SnpProduct;
  readonly minGuestSvn?: number;
  readonly idKeyDigest?: string;
}

export interface SimReferenceValues extends CommonReferenceValues {
  readonly tee: 'sim';
  readonly measurement?: string;
  readonly hostData?: string;
  readonly minSvn?: number;
}

export type ReferenceValues =
  SgxReferenceValues | TdxReferenceValues | SnpReferenceValues | SimReferenceValues;
