/**
 * Locates the real TEE evidence vectors (SGX, TDX, SNP, TPM, Azure) that tests verify.
 *
 * They live outside the repository: `CLOISTER_VECTORS` names the folder, by default
 * `../shared/vectors` relative to the repository root. A test that needs them and cannot find
 * them skips with a loud message (CI always has them).
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

/** The vectors folder, or undefined when it is missing. */
export function vectorsDir(): string | undefined {
  const configured = process.env['CLOISTER_VECTORS'];
  const dir =
    configured === undefined || configured === ''
      ? resolve(repoRoot, '..', 'shared', 'vectors')
      : isAbsolute(configured)
        ? configured
        : resolve(repoRoot, configured);
  return existsSync(join(dir, 'SOURCES.md')) ? dir : undefined;
}

/** The message a test prints when it skips for lack of vectors. */
export const MISSING_VECTORS =
  '!!! TEE evidence vectors not found: set CLOISTER_VECTORS to the vectors folder ' +
  '(default ../shared/vectors beside the repository). Tests that need them are SKIPPED. !!!';

let warned = false;

/**
 * Returns the vectors folder, or undefined after printing a loud warning once; callers pass the
 * result to `test(..., { skip })`.
 */
export function requireVectors(): string | undefined {
  const dir = vectorsDir();
  if (dir === undefined && !warned) {
    warned = true;
    process.stderr.write(`\n${MISSING_VECTORS}\n\n`);
  }
  return dir;
}

/** Reads one vector file (path relative to the vectors folder) as bytes. */
export function readVector(relPath: string): Uint8Array {
  const dir = vectorsDir();
  if (dir === undefined) throw new Error(MISSING_VECTORS);
  return new Uint8Array(readFileSync(join(dir, relPath)));
}

/** Reads one vector file as UTF-8 text. */
export function readVectorText(relPath: string): string {
  return new TextDecoder().decode(readVector(relPath));
}
