/**
 * Evidence from Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm, kernel >= 6.7):
 * the agent creates its own report directory under `/sys/kernel/config/tsm/report/`, writes the
 * 64 bytes of report data to `inblob`, reads the report (SNP attestation report or TDX quote)
 * from `outblob` and, for SNP, the GHCB certificate table from `auxblob`.
 *
 * `generation` counts writes to the directory's attributes. The agent reads it before writing
 * and after reading, and retries when it moved by more than its own writes, so a concurrent
 * writer of the same directory cannot hand it a report over somebody else's data. It also checks
 * the report data inside the returned evidence, which catches the same race on kernels whose
 * counter would not.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { agentError } from '../error-codes.js';
import { parseCertTable } from './cert-table.js';
import { nodeProviderFs } from './fs.js';
import { reportDataOf, sameBytes } from './report-data.js';
import type { AgentEvidence, EvidenceProvider, ProviderFs } from './types.js';

export const TSM_DEFAULT_ROOT = '/sys/kernel/config/tsm/report';

export interface TsmProviderOptions {
  /** The configfs-tsm report directory (default `/sys/kernel/config/tsm/report`). */
  readonly root?: string;
  /** SNP VMPL to request (`privlevel`), when not the default. */
  readonly privlevel?: number;
  /** Attempts before giving up on a generation race (default 4). */
  readonly attempts?: number;
  readonly fs?: ProviderFs;
}

const PROVIDERS = { sev_guest: 'sev-snp', tdx_guest: 'tdx' } as const;

function text(b: Uint8Array): string {
  return new TextDecoder().decode(b).trim();
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

/** Builds the configfs-tsm provider; the TEE type is read from `provider` at each request. */
export function tsmProvider(options: TsmProviderOptions = {}): EvidenceProvider {
  const root = options.root ?? TSM_DEFAULT_ROOT;
  const fs = options.fs ?? nodeProviderFs;
  const attempts = options.attempts ?? 4;

  async function readGeneration(dir: string): Promise<number> {
    const raw = text(await fs.readFile(join(dir, 'generation')));
    if (!/^\d{1,15}$/.test(raw)) {
      throw agentError('AGENT_TEE_MALFORMED', 'configfs-tsm generation is not a number', {
        details: { field: 'generation', actual: raw.slice(0, 32) },
      });
    }
    return Number(raw);
  }

  async function once(dir: string, reportData: Uint8Array): Promise<AgentEvidence | 'race'> {
    const providerName = text(await fs.readFile(join(dir, 'provider')));
    const type = (PROVIDERS as Record<string, 'sev-snp' | 'tdx' | undefined>)[providerName];
    if (type === undefined) {
      throw agentError(
        'AGENT_TEE_UNSUPPORTED',
        `configfs-tsm provider "${providerName}" is not supported`,
        { details: { field: 'provider', actual: providerName, expected: Object.keys(PROVIDERS) } },
      );
    }
    const before = await readGeneration(dir);
    let writes = 0;
    if (options.privlevel !== undefined && type === 'sev-snp') {
      await fs.writeFile(
        join(dir, 'privlevel'),
        new TextEncoder().encode(`${options.privlevel}\n`),
      );
      writes++;
    }
    await fs.writeFile(join(dir, 'inblob'), reportData);
    writes++;
    const data = await fs.readFile(join(dir, 'outblob'));
    let aux: Uint8Array | undefined;
    if (type === 'sev-snp') {
      try {
        aux = await fs.readFile(join(dir, 'auxblob'));
      } catch (e) {
        // No certificate table: the host did not provision one (VCEK must then come from KDS).
        if (!isErrno(e, 'ENOENT') && !isErrno(e, 'ENODATA')) throw e;
      }
    }
    const after = await readGeneration(dir);
    if (after !== before + writes) return 'race';
    if (data.length === 0) {
      throw agentError('AGENT_TEE_MALFORMED', 'configfs-tsm returned an empty outblob', {
        details: { field: 'outblob' },
      });
    }
    // A report over other data means someone else wrote inblob in between: treat as a race.
    if (!sameBytes(reportDataOf(type, data), reportData)) return 'race';
    if (aux === undefined || !aux.some((x) => x !== 0)) return { type, data };
    // Parsed here too, so a malformed table is reported by the agent, next to its cause.
    return { type, data, certs: parseCertTable(aux), aux };
  }

  return {
    type: 'tsm',
    async getEvidence(reportData) {
      if (reportData.length !== 64) {
        throw agentError('AGENT_USAGE', 'report data must be 64 bytes', {
          details: { length: reportData.length },
        });
      }
      const dir = join(root, `cloister-${process.pid}-${randomBytes(6).toString('hex')}`);
      try {
        await fs.mkdir(dir);
      } catch (e) {
        throw agentError(
          'AGENT_TEE_UNAVAILABLE',
          `cannot create a configfs-tsm report under ${root} (is configfs mounted and the kernel >= 6.7?)`,
          { cause: e, details: { root } },
        );
      }
      try {
        for (let i = 0; i < attempts; i++) {
          const r = await once(dir, reportData);
          if (r !== 'race') return r;
        }
        throw agentError('AGENT_TEE_RACE', 'configfs-tsm report kept changing while read', {
          details: { attempts },
        });
      } catch (e) {
        if (e instanceof Error && 'code' in e && typeof e.code === 'string' && !('kind' in e)) {
          throw agentError('AGENT_TEE_UNAVAILABLE', `configfs-tsm request failed: ${e.code}`, {
            cause: e,
            details: { errno: e.code },
          });
        }
        throw e;
      } finally {
        await fs.rmdir(dir).catch(() => undefined);
      }
    },
  };
}
