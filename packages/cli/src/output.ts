/**
 * How every command reports: a human line on a TTY, or one JSON document with `--json`.
 * Errors always carry their stable code; with `--json` they are printed as `{ error: {...} }`.
 */
import { CommanderError } from 'commander';
import { exitCodeFor, isCloisterError, EXIT_CODES } from '@cloister/errors';
import type { ExitCode } from '@cloister/errors';

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: Io = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

/** Prints `value` as JSON (bigints as decimal strings, bytes never reach here: hex first). */
export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2));
}

/** Maps any thrown value to output and the documented exit code. */
export function reportError(io: Io, e: unknown, json: boolean): ExitCode {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version')
      return EXIT_CODES.ok;
    // Commander has printed its message to stderr; with --json, stdout still carries the one
    // document a script parses.
    if (json) {
      const message = e.message.replace(/^error: /, '');
      printJson(io, { error: { code: 'CLI_USAGE', message } });
    }
    return EXIT_CODES.usage;
  }
  const code = exitCodeFor(e);
  if (json) {
    const error = isCloisterError(e) ? e.toJSON() : { code: 'INTERNAL', message: String(e) };
    printJson(io, { error });
  } else if (isCloisterError(e)) {
    const layer = 'layer' in e ? ` [${String(e.layer)}]` : '';
    io.err(`error ${e.code}${layer}: ${e.message}`);
  } else {
    io.err(
      `internal error (a bug; please report it): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
    );
  }
  return code;
}
