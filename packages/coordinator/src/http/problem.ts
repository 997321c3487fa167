/**
 * RFC 9457 problem details for every error the HTTP API returns.
 *
 * Bodies carry our stable `code`, the verification `layer` when there is one, and the error's
 * non-secret `details`; never a stack trace, never an internal message (an unexpected error is
 * a bug and is reported as a bare 500 `INTERNAL`, while its detail goes only to the log).
 */
import { isCloisterError } from '@cloister/errors';
import { PROBLEM_CONTENT_TYPE, problemFromError } from '@cloister/protocol';
import type { Problem } from '@cloister/protocol';
import type { CloisterError } from '@cloister/errors';
import { coordinatorError } from '../error-codes.js';

export { PROBLEM_CONTENT_TYPE };
export type ProblemBody = Problem;

/** Maps a Fastify framework error (parsing, validation, limits) to one of our codes. */
export function fromFrameworkError(e: unknown): CloisterError | undefined {
  if (isCloisterError(e)) return e;
  if (typeof e !== 'object' || e === null) return undefined;
  const err = e as {
    code?: string;
    statusCode?: number;
    validation?: { instancePath?: string; message?: string; keyword?: string }[];
    validationContext?: string;
    message?: string;
  };
  if (Array.isArray(err.validation)) {
    const first = err.validation[0];
    const path = `${err.validationContext ?? 'body'}${first?.instancePath ?? ''}`;
    return coordinatorError(
      'COORDINATOR_MALFORMED_REQUEST',
      `request ${path} ${first?.message ?? 'is invalid'}`,
      {
        details: { path, rule: first?.keyword ?? 'schema' },
      },
    );
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return coordinatorError('COORDINATOR_BODY_TOO_LARGE', 'request body too large');
  }
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return coordinatorError('COORDINATOR_UNSUPPORTED_MEDIA_TYPE', 'send application/json');
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    // Malformed JSON, empty JSON body, prototype poisoning, bad content length...
    return coordinatorError('COORDINATOR_MALFORMED_REQUEST', 'request body is not valid JSON', {
      details: { path: 'body', rule: err.code ?? 'json' },
    });
  }
  return undefined;
}

/** The problem body of an error (500 INTERNAL without message for anything that is not ours). */
export function problemFor(e: unknown): Problem {
  const p = problemFromError(fromFrameworkError(e) ?? e);
  // The kind `limit` means 429 (a rate or instance limit: retry later). An oversized body is a
  // different answer, 413 Content Too Large (RFC 9110 §15.5.14): retrying the same request
  // can never succeed, and clients must not treat it as back-pressure.
  return p.code === 'COORDINATOR_BODY_TOO_LARGE' ? { ...p, status: 413 } : p;
}
