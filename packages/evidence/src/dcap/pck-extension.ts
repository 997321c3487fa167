/**
 * The Intel SGX PCK certificate extension, OID 1.2.840.113741.1.13.1 ("Intel SGX PCK Certificate
 * and Certificate Revocation List Profile Specification", section 3.5 "Intel SGX Extensions").
 *
 * SEQUENCE OF SEQUENCE { OID, value }:
 *   .1 PPID (OCTET STRING 16); .2 TCB = SEQUENCE OF { .2.1 .. .2.16 component SVN INTEGER,
 *   .2.17 PCESVN INTEGER, .2.18 CPUSVN OCTET STRING 16 }; .3 PCE-ID (OCTET STRING 2);
 *   .4 FMSPC (OCTET STRING 6); .5 SGX type (ENUMERATED 0 Standard, 1 Scalable, 2 Scalable with
 *   Integrity); .6 platform instance ID and .7 configuration on multi-package platforms.
 *
 * TCB level matching uses the 16 component SVNs and the PCESVN from here (signed by Intel), never
 * the CPUSVN a quote reports about itself.
 */
import { toHex } from '../bytes.js';
import { evidenceError } from '../error-codes.js';
import {
  DER_ENUMERATED,
  DER_INTEGER,
  DER_OCTET_STRING,
  DER_SEQUENCE,
  derOidText,
  derSmallUint,
  expectTag,
  readDer,
  readDerChildren,
} from '../pki/der.js';

export const SGX_EXTENSION_OID = '1.2.840.113741.1.13.1';

export type SgxType = 'Standard' | 'Scalable' | 'ScalableWithIntegrity';
const SGX_TYPES: readonly SgxType[] = ['Standard', 'Scalable', 'ScalableWithIntegrity'];

/** The fields of the PCK extension, byte strings as lowercase hex. */
export interface PckExtension {
  readonly ppid: string;
  /** SGX TCB component SVNs 1..16, in order. */
  readonly tcbComponents: readonly number[];
  readonly pceSvn: number;
  readonly cpuSvn: string;
  readonly pceId: string;
  readonly fmspc: string;
  readonly sgxType: SgxType;
  /** Multi-package platforms only. */
  readonly platformInstanceId?: string;
}

function fail(field: string, why: string): never {
  throw evidenceError('CHAIN_BAD_EXTENSION', `PCK extension ${field}: ${why}`, {
    details: { field },
  });
}

function octets(n: ReturnType<typeof readDer>, len: number, field: string): string {
  const c = expectTag(n, DER_OCTET_STRING, field);
  if (c.length !== len) fail(field, `expected ${len} bytes, got ${c.length}`);
  return toHex(c);
}

/** Parses the DER value (the extnValue OCTET STRING's content) of the SGX extension. */
export function parsePckExtension(der: Uint8Array): PckExtension {
  const top = readDer(der, 0, 'sgxExtension');
  if (top.end !== der.length) fail('sgxExtension', 'trailing bytes');
  const entries = readDerChildren(expectTag(top, DER_SEQUENCE, 'sgxExtension'), 'sgxExtension');
  const seen = new Map<string, ReturnType<typeof readDer>>();
  for (const [i, e] of entries.entries()) {
    const kv = readDerChildren(
      expectTag(e, DER_SEQUENCE, `sgxExtension[${i}]`),
      `sgxExtension[${i}]`,
    );
    const [k, v] = kv;
    if (kv.length !== 2 || k === undefined || v === undefined)
      fail(`[${i}]`, 'not an (OID, value) pair');
    const oid = derOidText(k, `sgxExtension[${i}].oid`);
    // A duplicated entry would let two readers of the same certificate see different values.
    if (seen.has(oid)) fail(oid, 'duplicate entry');
    seen.set(oid, v);
  }
  const get = (suffix: string): ReturnType<typeof readDer> => {
    const v = seen.get(`${SGX_EXTENSION_OID}.${suffix}`);
    if (v === undefined) fail(suffix, 'missing');
    return v;
  };
  const ppid = octets(get('1'), 16, 'ppid');
  const tcbEntries = readDerChildren(expectTag(get('2'), DER_SEQUENCE, 'tcb'), 'tcb');
  const tcb = new Map<string, ReturnType<typeof readDer>>();
  for (const [i, e] of tcbEntries.entries()) {
    const kv = readDerChildren(expectTag(e, DER_SEQUENCE, `tcb[${i}]`), `tcb[${i}]`);
    const [k, v] = kv;
    if (kv.length !== 2 || k === undefined || v === undefined)
      fail(`tcb[${i}]`, 'not an (OID, value) pair');
    const oid = derOidText(k, `tcb[${i}].oid`);
    if (tcb.has(oid)) fail(oid, 'duplicate entry');
    tcb.set(oid, v);
  }
  const tcbGet = (n: number): ReturnType<typeof readDer> => {
    const v = tcb.get(`${SGX_EXTENSION_OID}.2.${n}`);
    if (v === undefined) fail(`tcb.${n}`, 'missing');
    return v;
  };
  const tcbComponents: number[] = [];
  for (let i = 1; i <= 16; i++) {
    const svn = derSmallUint(tcbGet(i), DER_INTEGER, `tcb.comp${i}`);
    if (svn > 255) fail(`tcb.comp${i}`, 'SVN out of range');
    tcbComponents.push(svn);
  }
  const pceSvn = derSmallUint(tcbGet(17), DER_INTEGER, 'tcb.pcesvn');
  if (pceSvn > 0xffff) fail('tcb.pcesvn', 'out of range');
  const cpuSvn = octets(tcbGet(18), 16, 'tcb.cpusvn');
  const pceId = octets(get('3'), 2, 'pceId');
  const fmspc = octets(get('4'), 6, 'fmspc');
  const typeNum = derSmallUint(get('5'), DER_ENUMERATED, 'sgxType');
  const sgxType = SGX_TYPES[typeNum];
  if (sgxType === undefined) fail('sgxType', `unknown value ${typeNum}`);
  const inst = seen.get(`${SGX_EXTENSION_OID}.6`);
  return {
    ppid,
    tcbComponents,
    pceSvn,
    cpuSvn,
    pceId,
    fmspc,
    sgxType,
    ...(inst === undefined ? {} : { platformInstanceId: octets(inst, 16, 'platformInstanceId') }),
  };
}
