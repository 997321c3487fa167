/**
 * Evidence from Gramine's `/dev/attestation/` pseudo-files (Gramine documentation
 * "Attestation and secret provisioning", section "/dev/attestation interface"): read
 * `attestation_type` (must be `dcap`), write 64 bytes to `user_report_data`, read `quote`
 * (a DCAP SGX quote). The files are per process, so there is no cross-process race; the agent
 * still checks the report data inside the quote before using it.
 */
import { join } from 'node:path';
import { agentError } from '../error-codes.js';
import { nodeProviderFs } from './fs.js';
import { reportDataOf, sameBytes } from './report-data.js';
import type { EvidenceProvider, ProviderFs } from './types.js';

export const GRAMINE_DEFAULT_ROOT = '/dev/attestation';

export interface GramineProviderOptions {
  readonly root?: string;
  readonly fs?: ProviderFs;
}

export function gramineProvider(options: GramineProviderOptions = {}): EvidenceProvider {
  const root = options.root ?? GRAMINE_DEFAULT_ROOT;
  const fs = options.fs ?? nodeProviderFs;
  return {
    type: 'sgx',
    async getEvidence(reportData) {
      if (reportData.length !== 64) {
        throw agentError('AGENT_USAGE', 'report data must be 64 bytes', {
          details: { length: reportData.length },
        });
      }
      let kind: string;
      try {
        kind = new TextDecoder().decode(await fs.readFile(join(root, 'attestation_type'))).trim();
      } catch (e) {
        throw agentError(
          'AGENT_TEE_UNAVAILABLE',
          `cannot read ${root}/attestation_type (is this running under Gramine-SGX?)`,
          { cause: e, details: { root } },
        );
      }
      // EPID and "none" produce evidence no Cloister verifier accepts: refuse early and clearly.
      if (kind !== 'dcap') {
        throw agentError(
          'AGENT_TEE_UNSUPPORTED',
          `Gramine attestation type is "${kind}"; set sgx.remote_attestation = "dcap" in the Gramine manifest`,
          { details: { field: 'attestation_type', expected: 'dcap', actual: kind.slice(0, 32) } },
        );
      }
      let quote: Uint8Array;
      try {
        await fs.writeFile(join(root, 'user_report_data'), reportData);
        quote = await fs.readFile(join(root, 'quote'));
      } catch (e) {
        throw agentError('AGENT_TEE_UNAVAILABLE', 'Gramine refused the quote request', {
          cause: e,
          details: { root },
        });
      }
      if (quote.length === 0) {
        throw agentError('AGENT_TEE_MALFORMED', 'Gramine returned an empty quote', {
          details: { field: 'quote' },
        });
      }
      if (!sameBytes(reportDataOf('sgx', quote), reportData)) {
        throw agentError(
          'AGENT_TEE_MALFORMED',
          'the quote does not carry the report data written',
          {
            details: { field: 'quote.reportData' },
          },
        );
      }
      return { type: 'sgx', data: quote };
    },
  };
}
