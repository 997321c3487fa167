/**
 * TCB level matching and status convergence, after Intel's reference Quote Verification Library
 * (intel/SGX-TDX-DCAP-QuoteVerificationLibrary, `Verifiers/Checks/TcbLevelCheck.cpp`,
 * `TdxModuleCheck.cpp`, `QeTcbStatusConverge`, `TDRelaunchCheck.cpp`) and the TCB Info v3
 * semantics of the Intel PCS API ("Get TCB Info", tcbLevels).
 *
 * Platform level: the first level (highest first, as Intel orders them) where every PCK
 * component SVN and the PCESVN are >= the level's, and for TDX every TEE TCB SVN component too
 * (components 0 and 1 are skipped when tee_tcb_svn[1] > 0: the module is then judged by its
 * module identity). No such level means the platform is below every known TCB: refused.
 */
import { bytesEqual } from '../bytes.js';
import type { IntelTcbStatus } from '../claims.js';
import { evidenceError } from '../error-codes.js';
import type {
  IsvTcbLevel,
  PlatformTcbLevel,
  QeIdentity,
  TcbInfo,
  TcbLevelStatus,
} from './collateral.js';
import type { PckExtension } from './pck-extension.js';
import type { SgxReportBody, TdReportBody } from './quote.js';

function notSupported(what: string, details: Record<string, unknown>): never {
  throw evidenceError('TCB_NOT_SUPPORTED', `${what}: no TCB level matches`, {
    details: { component: what, ...details },
  });
}

function masked(a: Uint8Array, mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] as number) & (mask[i] ?? 0);
  return out;
}

/** Selects the platform TCB level for the PCK's SVNs (and, for TDX, the TEE TCB SVN). */
export function matchPlatformLevel(
  info: TcbInfo,
  pck: PckExtension,
  teeTcbSvn?: Uint8Array,
): PlatformTcbLevel {
  const skip = teeTcbSvn !== undefined && (teeTcbSvn[1] as number) > 0 ? 2 : 0;
  for (const level of info.tcbLevels) {
    if (pck.pceSvn < level.pceSvn) continue;
    let ok = true;
    for (let i = 0; i < 16 && ok; i++)
      ok = (pck.tcbComponents[i] as number) >= (level.sgxComponents[i] as number);
    if (!ok) continue;
    if (teeTcbSvn !== undefined) {
      const tdx = level.tdxComponents;
      if (tdx === undefined) continue;
      for (let i = skip; i < 16 && ok; i++) ok = (teeTcbSvn[i] as number) >= (tdx[i] as number);
      if (!ok) continue;
    }
    return level;
  }
  return notSupported('platform', {
    fmspc: info.fmspc,
    pceSvn: pck.pceSvn,
    components: pck.tcbComponents,
  });
}

/** The TDX module's identity and level (module version = tee_tcb_svn[1]). */
export interface TdxModuleMatch {
  /** "TDX_01"... ; undefined when the base `tdxModule` identity applies (version 0). */
  readonly id?: string;
  readonly level?: IsvTcbLevel;
}

/**
 * Checks the TDX module (SEAM) against the TCB Info. Stops a TD running on a module that Intel
 * did not sign (mr_signer_seam) or with unexpected SEAM attributes, and judges its SVN.
 */
export function matchTdxModule(
  info: TcbInfo,
  td: TdReportBody,
  teeTcbSvn: Uint8Array = td.teeTcbSvn,
): TdxModuleMatch {
  const version = teeTcbSvn[1] as number;
  if (version === 0) {
    const m = info.tdxModule;
    if (m === undefined)
      throw evidenceError('COLLATERAL_MALFORMED', 'TDX TCB Info has no tdxModule');
    if (
      !bytesEqual(m.mrSigner, td.mrSignerSeam) ||
      !bytesEqual(
        masked(td.seamAttributes, m.attributesMask),
        masked(m.attributes, m.attributesMask),
      )
    ) {
      throw evidenceError(
        'TCB_IDENTITY_MISMATCH',
        'TDX module signer or attributes differ from the TCB Info',
        {
          details: { component: 'tdxModule' },
        },
      );
    }
    return {};
  }
  const id = `TDX_${version.toString(16).padStart(2, '0').toUpperCase()}`;
  const ident = info.tdxModuleIdentities?.find((x) => x.id.toUpperCase() === id);
  if (ident === undefined) {
    throw evidenceError('TCB_IDENTITY_MISMATCH', `TCB Info has no TDX module identity ${id}`, {
      details: { component: 'tdxModule', id },
    });
  }
  if (
    !bytesEqual(ident.mrSigner, td.mrSignerSeam) ||
    !bytesEqual(
      masked(td.seamAttributes, ident.attributesMask),
      masked(ident.attributes, ident.attributesMask),
    )
  ) {
    throw evidenceError(
      'TCB_IDENTITY_MISMATCH',
      `TDX module signer or attributes differ from identity ${id}`,
      {
        details: { component: 'tdxModule', id },
      },
    );
  }
  const isvSvn = teeTcbSvn[0] as number;
  const level = ident.tcbLevels.find((l) => isvSvn >= l.isvSvn);
  if (level === undefined) notSupported('tdxModule', { id, isvSvn });
  return { id, level };
}

/**
 * Checks the quoting enclave against its identity (MRSIGNER, ISVPRODID, masked MISCSELECT and
 * ATTRIBUTES) and selects its TCB level. Stops quotes made by a QE Intel did not sign, or by a
 * debug or otherwise reconfigured QE.
 */
export function matchQeIdentity(id: QeIdentity, qe: SgxReportBody): IsvTcbLevel {
  const fail = (field: string): never => {
    throw evidenceError('TCB_IDENTITY_MISMATCH', `QE ${field} differs from the QE Identity`, {
      details: { component: 'qe', field },
    });
  };
  if (!bytesEqual(qe.mrSigner, id.mrSigner)) fail('mrsigner');
  if (qe.isvProdId !== id.isvProdId) fail('isvprodid');
  if (
    !bytesEqual(masked(qe.miscSelect, id.miscselectMask), masked(id.miscselect, id.miscselectMask))
  )
    fail('miscselect');
  if (
    !bytesEqual(masked(qe.attributes, id.attributesMask), masked(id.attributes, id.attributesMask))
  )
    fail('attributes');
  const level = id.tcbLevels.find((l) => qe.isvSvn >= l.isvSvn);
  if (level === undefined) notSupported('qe', { isvSvn: qe.isvSvn });
  return level;
}

/**
 * Intel's convergence of the platform status with the QE or TDX module status: an OutOfDate
 * QE/module makes the result OutOfDate (keeping "configuration needed"), a revoked one revokes.
 */
export function converge(platform: IntelTcbStatus, other: TcbLevelStatus): IntelTcbStatus {
  if (other === 'Revoked') return 'Revoked';
  if (other === 'OutOfDate' || other === 'OutOfDateConfigurationNeeded') {
    if (platform === 'UpToDate' || platform === 'SWHardeningNeeded') return 'OutOfDate';
    if (platform === 'ConfigurationNeeded' || platform === 'ConfigurationAndSWHardeningNeeded') {
      return 'OutOfDateConfigurationNeeded';
    }
  }
  return platform;
}

/** The merged TCB verdict. */
export interface TcbVerdict {
  readonly status: IntelTcbStatus;
  readonly advisoryIds: readonly string[];
  readonly platformLevel: PlatformTcbLevel;
  readonly qeLevel: IsvTcbLevel;
  readonly module?: TdxModuleMatch;
}

function union(...lists: (readonly string[] | undefined)[]): string[] {
  const out: string[] = [];
  for (const l of lists) for (const a of l ?? []) if (!out.includes(a)) out.push(a);
  return out;
}

function evaluateTdx(
  info: TcbInfo,
  pck: PckExtension,
  td: TdReportBody,
  svn: Uint8Array,
): { status: IntelTcbStatus; level: PlatformTcbLevel; module: TdxModuleMatch } {
  const module = matchTdxModule(info, td, svn);
  const level = matchPlatformLevel(info, pck, svn);
  let status: IntelTcbStatus = level.tcbStatus;
  if (module.level !== undefined) status = converge(status, module.level.tcbStatus);
  return { status, level, module };
}

/** Platform level, TDX module and QE status, converged; advisory IDs of every matched level. */
export function evaluateTcb(
  info: TcbInfo,
  qeLevel: IsvTcbLevel,
  pck: PckExtension,
  td?: TdReportBody,
): TcbVerdict {
  if (td === undefined) {
    const level = matchPlatformLevel(info, pck);
    const status = converge(level.tcbStatus, qeLevel.tcbStatus);
    return {
      status,
      advisoryIds: union(level.advisoryIds, qeLevel.advisoryIds),
      platformLevel: level,
      qeLevel,
    };
  }
  const r = evaluateTdx(info, pck, td, td.teeTcbSvn);
  let status = converge(r.status, qeLevel.tcbStatus);
  // TD relaunch advice (TD report 1.5): the TD runs on an out-of-date module but the platform has
  // already been updated (tee_tcb_svn2 meets a current level): relaunching the TD fixes it.
  if (
    td.teeTcbSvn2 !== undefined &&
    (status === 'OutOfDate' || status === 'OutOfDateConfigurationNeeded') &&
    qeLevel.tcbStatus !== 'OutOfDate' &&
    qeLevel.tcbStatus !== 'OutOfDateConfigurationNeeded'
  ) {
    try {
      const after = evaluateTdx(info, pck, td, td.teeTcbSvn2).status;
      if (after === 'UpToDate' || after === 'SWHardeningNeeded') status = 'TDRelaunchAdvised';
      else if (after === 'ConfigurationNeeded' || after === 'ConfigurationAndSWHardeningNeeded') {
        status = 'TDRelaunchAdvisedConfigurationNeeded';
      }
    } catch {
      // tee_tcb_svn2 matches nothing better: the OutOfDate status stands.
    }
  }
  return {
    status,
    advisoryIds: union(r.level.advisoryIds, qeLevel.advisoryIds, r.module.level?.advisoryIds),
    platformLevel: r.level,
    qeLevel,
    module: r.module,
  };
}
