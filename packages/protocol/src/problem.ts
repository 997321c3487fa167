/**
 * Problem details for HTTP APIs (RFC 9457) with Cloister's stable `code`. Content type
 * `application/problem+json`. The body never carries a stack trace, and for errors that are not
 * Cloister's own (bugs) never the message either: it could hold secrets.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { httpStatusFor, isCloisterError } from '@cloister/errors';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export const ProblemSchema = Type.Object(
  {
    /** RFC 9457 §3.1.1: `urn:cloister:error:<CODE>`. */
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer({ minimum: 400, maximum: 599 }),
    detail: Type.Optional(Type.String()),
    instance: Type.Optional(Type.String()),
    /** The stable error code (docs/errors.md). */
    code: Type.String(),
    /** For evidence verification errors: the layer that rejected. */
    layer: Type.Optional(Type.String()),
    /** Structured, non-secret facts: rule, expected, actual, problems with paths... */
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: true },
);
export type Problem = Static<typeof ProblemSchema>;

/** Builds the problem document for any thrown value. */
export function problemFromError(e: unknown, instance?: string): Problem {
  const status = httpStatusFor(e);
  if (!isCloisterError(e)) {
    return {
      type: 'urn:cloister:error:INTERNAL',
      title: 'Internal error',
      status,
      code: 'INTERNAL',
      ...(instance === undefined ? {} : { instance }),
    };
  }
  const layer = 'layer' in e && typeof e.layer === 'string' ? e.layer : undefined;
  return {
    type: `urn:cloister:error:${e.code}`,
    title: e.code,
    status,
    detail: e.message,
    code: e.code,
    ...(layer === undefined ? {} : { layer }),
    ...(e.details === undefined ? {} : { details: { ...e.details } }),
    ...(instance === undefined ? {} : { instance }),
  };
}
