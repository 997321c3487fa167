/**
 * The one error model every Cloister package uses.
 *
 * Each error carries a stable string `code` that callers switch on (never the message text),
 * an ES2022 `cause`, and structured `details` safe to show to a remote party (never secrets).
 * Each package declares its codes in a table (`defineErrorCodes`); the table gives every code a
 * `kind`, and the kind alone decides the CLI exit code and the HTTP status, so the two can never
 * disagree. `docs/errors.md` is generated from the tables and a test fails when they drift.
 */

/** The layer of the verification pipeline that rejected a piece of evidence. */
export const VERIFICATION_LAYERS = [
  'PARSE',
  'SIGNATURE',
  'CHAIN',
  'COLLATERAL',
  'TCB',
  'BINDING',
  'POLICY',
] as const;
export type VerificationLayer = (typeof VERIFICATION_LAYERS)[number];

/** What sort of failure a code is: decides exit code and HTTP status. */
export type ErrorKind =
  | 'malformed' // the input could not be parsed or violates its schema
  | 'rejected' // well-formed but refused by verification or policy
  | 'unsupported' // a version, type or feature this build does not handle
  | 'usage' // the caller invoked us wrongly (bad flags, missing file)
  | 'unauthorized' // missing or bad credentials / signature on a request
  | 'not-found'
  | 'conflict' // the request contradicts current state (e.g. manifest already set)
  | 'limit' // a size, rate or instance limit was reached
  | 'unavailable' // a dependency is not reachable or not ready
  | 'internal';

/** The documented exit codes of the `cloister` command. */
export const EXIT_CODES = {
  ok: 0,
  internal: 1,
  usage: 2,
  rejected: 10,
  unsupported: 20,
  malformed: 30,
} as const;
export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

const EXIT_BY_KIND: Record<ErrorKind, ExitCode> = {
  malformed: EXIT_CODES.malformed,
  rejected: EXIT_CODES.rejected,
  unsupported: EXIT_CODES.unsupported,
  usage: EXIT_CODES.usage,
  unauthorized: EXIT_CODES.rejected,
  'not-found': EXIT_CODES.usage,
  conflict: EXIT_CODES.rejected,
  limit: EXIT_CODES.rejected,
  unavailable: EXIT_CODES.internal,
  internal: EXIT_CODES.internal,
};

const HTTP_BY_KIND: Record<ErrorKind, number> = {
  malformed: 400,
  rejected: 403,
  unsupported: 422,
  usage: 400,
  unauthorized: 401,
  'not-found': 404,
  conflict: 409,
  limit: 429,
  unavailable: 503,
  internal: 500,
};

/** One row of an error code table. */
export interface ErrorCodeSpec {
  readonly kind: ErrorKind;
  /** For verification errors: the layer that rejects. */
  readonly layer?: VerificationLayer;
  /** One sentence for docs/errors.md: what happened and what to do. */
  readonly summary: string;
}
export type ErrorCodeTable = Readonly<Record<string, ErrorCodeSpec>>;

/** Identity function that keeps the literal code names as a type. */
export function defineErrorCodes<const T extends ErrorCodeTable>(table: T): T {
  return table;
}

/** Structured, non-secret facts about a failure (rule, expected, actual, field, path...). */
export type ErrorDetails = Readonly<Record<string, unknown>>;

/** Base class of every error Cloister throws on purpose. */
export class CloisterError extends Error {
  readonly code: string;
  readonly kind: ErrorKind;
  readonly details: ErrorDetails | undefined;

  constructor(
    spec: { code: string; kind: ErrorKind },
    message: string,
    options?: { cause?: unknown; details?: ErrorDetails },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = spec.code;
    this.kind = spec.kind;
    this.details = options?.details;
  }

  /** A plain object suitable for `--json` output and problem+json bodies. */
  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** An error raised while verifying evidence, naming the layer that rejected it. */
export class VerificationError extends CloisterError {
  readonly layer: VerificationLayer;

  constructor(
    spec: { code: string; kind: ErrorKind; layer: VerificationLayer },
    message: string,
    options?: { cause?: unknown; details?: ErrorDetails },
  ) {
    super(spec, message, options);
    this.layer = spec.layer;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), layer: this.layer };
  }
}

/** True for any error thrown on purpose by Cloister code (as opposed to a bug). */
export function isCloisterError(e: unknown): e is CloisterError {
  return e instanceof CloisterError;
}

/** The exit code the CLI uses for an error (1 for anything that is not ours: a bug). */
export function exitCodeFor(e: unknown): ExitCode {
  return isCloisterError(e) ? EXIT_BY_KIND[e.kind] : EXIT_CODES.internal;
}

/** The HTTP status a server uses for an error (500 for anything that is not ours). */
export function httpStatusFor(e: unknown): number {
  return isCloisterError(e) ? HTTP_BY_KIND[e.kind] : 500;
}

/**
 * Builds the throw helper of one package from its code table: codes that name a layer become
 * `VerificationError`s, the rest `CloisterError`s.
 */
export function errorFactory<const T extends ErrorCodeTable>(table: T) {
  return (
    code: keyof T & string,
    message: string,
    options?: { cause?: unknown; details?: ErrorDetails },
  ): CloisterError => {
    const spec = table[code];
    if (spec === undefined) throw new TypeError(`undeclared error code ${code}`);
    return spec.layer === undefined
      ? new CloisterError({ code, kind: spec.kind }, message, options)
      : new VerificationError({ code, kind: spec.kind, layer: spec.layer }, message, options);
  };
}
