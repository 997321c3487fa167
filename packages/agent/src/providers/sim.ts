/**
 * The simulation TEE as seen from inside (docs/sim.md): a sim report signed with the sim
 * platform key, whose measurement is `simMeasurement(executable bytes, args)` of the program the
 * agent launches, so the package measurement in the manifest has to match that program exactly,
 * as a launch digest would on real hardware. Only the platform half of the sim hardware is read
 * (root.crt.pem, platform.crt.pem, platform.key.jwk); the root key is never needed here.
 *
 * Sim evidence is refused by every verifier unless simulation is explicitly allowed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  importSimHardware,
  simMeasurement,
  simMeasurementFraming,
  simReportFrom,
} from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { agentError } from '../error-codes.js';
import type { EvidenceProvider } from './types.js';

export const SIM_DIR_ENV = 'CLOISTER_SIM_DIR';

export interface SimProviderOptions {
  /** Directory of the sim hardware files (`--sim-dir`, else `$CLOISTER_SIM_DIR`). */
  readonly dir: string;
  /**
   * The program the agent launches, whose bytes and arguments are the measurement: its path
   * (hashed as a stream on first use, nothing of it kept) or its bytes.
   */
  readonly executable: string | Uint8Array;
  readonly args: readonly string[];
}

async function loadHardware(dir: string): Promise<SimHardware> {
  const read = async (name: string) => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (cause) {
      throw agentError('AGENT_TEE_UNAVAILABLE', `sim hardware file ${name} missing in ${dir}`, {
        cause,
        details: { dir, file: name },
      });
    }
  };
  try {
    return await importSimHardware({
      'root.crt.pem': await read('root.crt.pem'),
      'platform.crt.pem': await read('platform.crt.pem'),
      'platform.key.jwk': await read('platform.key.jwk'),
    });
  } catch (e) {
    if (
      e instanceof Error &&
      'code' in e &&
      typeof e.code === 'string' &&
      e.code.startsWith('AGENT_')
    ) {
      throw e;
    }
    throw agentError('AGENT_TEE_UNAVAILABLE', `sim hardware in ${dir} cannot be loaded`, {
      cause: e,
      details: { dir },
    });
  }
}

/**
 * The measurement the sim provider reports for a program (what the manifest must pin), from the
 * program's bytes or its path. A path is hashed as the file streams by: an interpreter such as
 * Node.js is ~100 MB, which read whole would stay in the agent's memory for its whole life.
 */
export async function simProgramMeasurement(
  executable: string | Uint8Array,
  args: readonly string[],
): Promise<Uint8Array> {
  if (typeof executable !== 'string') return simMeasurement(executable, args);
  const { size } = await stat(executable);
  const { head, tail } = simMeasurementFraming(size, args);
  const h = createHash('sha384').update(head);
  let read = 0;
  for await (const chunk of createReadStream(executable, { highWaterMark: 1024 * 1024 })) {
    read += (chunk as Buffer).length;
    h.update(chunk as Buffer);
  }
  // The length prefix was taken before reading: a file that changed meanwhile is not measured.
  if (read !== size) throw new Error(`${executable} changed while it was measured`);
  return new Uint8Array(h.update(tail).digest());
}

export function simProvider(options: SimProviderOptions): EvidenceProvider {
  let hw: Promise<SimHardware> | undefined;
  let measurement: Promise<Uint8Array> | undefined;
  return {
    type: 'sim',
    async getEvidence(reportData) {
      if (reportData.length !== 64) {
        throw agentError('AGENT_USAGE', 'report data must be 64 bytes', {
          details: { length: reportData.length },
        });
      }
      hw ??= loadHardware(options.dir).catch((e: unknown) => {
        hw = undefined;
        throw e;
      });
      // Measured once, like a launch digest: the bytes at the first report are the program's.
      measurement ??= simProgramMeasurement(options.executable, options.args).catch(
        (cause: unknown) => {
          measurement = undefined;
          throw agentError('AGENT_SPAWN_FAILED', 'the program cannot be read to measure it', {
            cause,
            details: {
              command: typeof options.executable === 'string' ? options.executable : '(bytes)',
            },
          });
        },
      );
      const [platform, m] = await Promise.all([hw, measurement]);
      const data = await simReportFrom(platform, { measurement: m, reportData });
      return { type: 'sim', data };
    },
  };
}
