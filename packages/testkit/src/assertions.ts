/**
 * Assertion helpers shared by tests: a predicate for `assert.rejects` / `assert.throws` that
 * accepts only a Cloister error with a given code (and, for verification errors, layer).
 */
import assert from 'node:assert/strict';
import { isCloisterError, VerificationError } from '@cloister/errors';

/** Passes for a CloisterError with `code` (and `layer`, when given); fails with why otherwise. */
export function hasCode(code: string, layer?: string): (e: unknown) => boolean {
  return (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (layer !== undefined) assert.ok(e instanceof VerificationError && e.layer === layer);
    return true;
  };
}
