/**
 * Sim hardware directories (docs/sim.md): reading and writing the four files of a simulation
 * TEE (root.crt.pem, root.key.jwk, platform.crt.pem, platform.key.jwk). Private keys are
 * written 0600 in a 0700 directory, and nothing is ever overwritten.
 */
import { constants } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { exportSimHardware, importSimHardware, SIM_HARDWARE_FILES } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import { cliError } from './error-codes.js';

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes sim hardware into `dir` (created 0700 if missing). Refuses if any of the files exists;
 * on a failure half-way, removes what it wrote, so the directory is never left half-initialised.
 */
export async function writeSimHardware(dir: string, hw: SimHardware): Promise<string[]> {
  const files = await exportSimHardware(hw);
  const names = Object.values(SIM_HARDWARE_FILES);
  for (const n of names) {
    if (await exists(join(dir, n))) {
      throw cliError(
        'CLI_USAGE',
        `${join(dir, n)} exists; sim init never overwrites hardware keys`,
        {
          details: { file: join(dir, n) },
        },
      );
    }
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  try {
    for (const n of names) {
      const p = join(dir, n);
      // O_EXCL: fails instead of following a planted file or symlink.
      const fh = await open(p, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      written.push(p);
      try {
        await fh.writeFile(files[n], 'utf8');
        await fh.chmod(0o600);
      } finally {
        await fh.close();
      }
    }
  } catch (e) {
    for (const p of written) await rm(p, { force: true });
    throw e;
  }
  return written;
}

/** Loads sim hardware from `dir` (the root key is optional). */
export async function loadSimHardware(dir: string): Promise<SimHardware> {
  const read = async (n: string, optional = false): Promise<string | undefined> => {
    try {
      return await readFile(join(dir, n), 'utf8');
    } catch (cause) {
      if (optional) return undefined;
      throw cliError(
        'CLI_FILE_NOT_FOUND',
        `cannot read ${join(dir, n)}; run "cloister sim init ${dir}"`,
        {
          cause,
          details: { file: join(dir, n) },
        },
      );
    }
  };
  const rootKey = await read(SIM_HARDWARE_FILES.rootKey, true);
  return importSimHardware({
    'root.crt.pem': (await read(SIM_HARDWARE_FILES.rootCert)) as string,
    'platform.crt.pem': (await read(SIM_HARDWARE_FILES.platformCert)) as string,
    'platform.key.jwk': (await read(SIM_HARDWARE_FILES.platformKey)) as string,
    ...(rootKey === undefined ? {} : { 'root.key.jwk': rootKey }),
  });
}
