import { isCloisterError } from '@cloister/errors';

/** True for our typed errors with an image code. */
export function isCloisterError_(e: unknown): boolean {
  return isCloisterError(e) && e.code.startsWith('IMAGE_');
}
