/**
 * The simulation TEE as seen from inside (docs/sim.md): a sim report signed with the sim
 * platform key, whose measurement is `simMeasurement(executable bytes, args)` of the program the
 * agent launches, so the package measurement in the manifest has to match that program exactly,
 * as a launch digest would on real hardware. Only the platform half of the sim hardware is read
 * (root.crt.pem, platform.crt.pem, platform.key.jwk); the root key is never needed here.
 *
 * Sim evidence is refused by every verifier unless simulation is explicitly allowed.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { importSimHardware, simMeasurement, simReportFrom } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { agentError } from '../error-codes.js';
import type { EvidenceProvider } from './types.js';

export const SIM_DIR_ENV = 'CLOISTER_SIM_DIR';

export interface SimProviderOptions {
  /** Directory of the sim hardware files (`--sim-dir`, else `$CLOISTER_SIM_DIR`). */
  readonly dir: string;
  /** The program the agent launches: its bytes and arguments are the measurement. */
  readonly executable: Uint8Array;
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

/** The measurement the sim provider reports for a program (what the manifest must pin). */
export function simProgramMeasurement(
  executable: Uint8Array,
  args: readonly string[],
): Promise<Uint8Array> {
  return simMeasurement(executable, args);
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
      hw ??= loadHardware(options.dir);
      measurement ??= simMeasurement(options.executable, options.args);
      const data = await simReportFrom(
        await hw.catch((e: unknown) => {
          hw = undefined;
          throw e;
        }),
        { measurement: await measurement, reportData },
      );
      return { type: 'sim', data };
    },
  };
}
