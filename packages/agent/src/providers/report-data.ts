/**
 * Where each evidence format carries its 64 bytes of report data, so the agent can check that
 * the TEE answered for the data it asked about before sending the evidence anywhere.
 *
 * Offsets: AMD SEV-SNP ABI spec (56860) Table 22, REPORT_DATA at 0x50; Intel DCAP quote v3/v4
 * (header 0x30 bytes, SGX report body REPORTDATA at body offset 0x140); TDX quote v4 (TD report
 * body REPORTDATA at body offset 0x208); quote v5 inserts a 6-byte body descriptor after the
 * header.
 */
import { agentError } from '../error-codes.js';
import type { AgentTeeType } from './types.js';

const QUOTE_HEADER = 0x30;
const SGX_BODY_REPORT_DATA = 0x140;
const TD_BODY_REPORT_DATA = 0x208;
const SNP_REPORT_DATA = 0x50;
const V5_DESCRIPTOR = 6;

function view(data: Uint8Array, off: number, what: string): Uint8Array {
  if (data.length < off + 64) {
    throw agentError('AGENT_TEE_MALFORMED', `${what} too short for report data`, {
      details: { field: what, length: data.length, needed: off + 64 },
    });
  }
  return data.subarray(off, off + 64);
}

function quoteVersion(data: Uint8Array): number {
  if (data.length < 2) {
    throw agentError('AGENT_TEE_MALFORMED', 'quote too short for its header', {
      details: { field: 'quote.header.version', length: data.length },
    });
  }
  return (data[0] as number) | ((data[1] as number) << 8);
}

/** The report data carried by `data`, a piece of evidence of type `type`. */
export function reportDataOf(type: Exclude<AgentTeeType, 'sim'>, data: Uint8Array): Uint8Array {
  switch (type) {
    case 'sev-snp':
      return view(data, SNP_REPORT_DATA, 'snp.report');
    case 'sgx':
    case 'tdx': {
      const v = quoteVersion(data);
      const body = type === 'sgx' ? SGX_BODY_REPORT_DATA : TD_BODY_REPORT_DATA;
      if (v === 3 || v === 4) return view(data, QUOTE_HEADER + body, `${type}.quote`);
      if (v === 5) return view(data, QUOTE_HEADER + V5_DESCRIPTOR + body, `${type}.quote`);
      throw agentError('AGENT_TEE_UNSUPPORTED', `quote version ${v} is not one the agent knows`, {
        details: { field: 'quote.header.version', actual: v },
      });
    }
  }
}

/** Constant-time-free equality is fine here: report data is not secret. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
