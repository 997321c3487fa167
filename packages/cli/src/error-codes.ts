/** Error codes of the `cloister` command itself (usage and input files). */
import { defineErrorCodes, errorFactory } from '@cloister/errors';

export const CLI_ERRORS = defineErrorCodes({
  CLI_USAGE: {
    kind: 'usage',
    summary: 'The command line is wrong: unknown command or option, or a missing argument.',
  },
  CLI_FILE_NOT_FOUND: {
    kind: 'usage',
    summary: 'A file named on the command line does not exist or cannot be read.',
  },
  CLI_BAD_INPUT: {
    kind: 'malformed',
    summary: 'A file named on the command line is not in the expected format.',
  },
});

export const cliError = errorFactory(CLI_ERRORS);

export { CLIENT_ERRORS, clientError } from './client/error-codes.js';
export type { ClientErrorCode } from './client/error-codes.js';
