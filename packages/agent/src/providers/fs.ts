/** The default `ProviderFs`: plain node:fs calls, no buffering tricks (configfs and pseudo-files). */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import type { ProviderFs } from './types.js';

export const nodeProviderFs: ProviderFs = {
  readFile: async (p) => new Uint8Array(await readFile(p)),
  writeFile: (p, d) => writeFile(p, d),
  mkdir: async (p) => {
    await mkdir(p, { mode: 0o700 });
  },
  rmdir: (p) => rmdir(p),
};
