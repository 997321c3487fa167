export {
  CloisterError,
  VerificationError,
  isCloisterError,
  defineErrorCodes,
  errorFactory,
  exitCodeFor,
  httpStatusFor,
  EXIT_CODES,
  VERIFICATION_LAYERS,
} from './errors.js';
export type {
  ErrorKind,
  ErrorCodeSpec,
  ErrorCodeTable,
  ErrorDetails,
  ExitCode,
  VerificationLayer,
} from './errors.js';
