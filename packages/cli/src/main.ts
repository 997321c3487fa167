/**
 * Entry point of the `cloister` command. Each command group lives in `commands/<group>.ts` and
 * registers itself on the program; this file only wires them and maps errors to exit codes
 * (0 ok, 1 internal, 2 usage, 10 rejected, 20 unsupported, 30 malformed).
 */
import { Command } from 'commander';
import { EXIT_CODES } from '@cloister/errors';
import type { ExitCode } from '@cloister/errors';
import { registerAgent } from './commands/agent.js';
import { registerCoordinator } from './commands/coordinator.js';
import { registerEvidence } from './commands/evidence.js';
import { registerImage } from './commands/image.js';
import { registerKeygen } from './commands/keygen.js';
import { registerKeyprovider } from './commands/keyprovider.js';
import { registerManifest } from './commands/manifest.js';
import { registerSecret } from './commands/secret.js';
import { registerSim } from './commands/sim.js';
import { registerStatus } from './commands/status.js';
import { registerUp } from './commands/up.js';
import { registerVerify } from './commands/verify.js';
import { processIo, reportError } from './output.js';
import type { Io } from './output.js';

/** Context every command gets: where to print, and where to record its exit code. */
export interface CommandContext {
  readonly io: Io;
  /** Set by a command that finishes with a non-zero but non-error outcome (e.g. verdict rejected). */
  exitCode: ExitCode;
}

export type RegisterCommands = (program: Command, ctx: CommandContext) => void;

const groups: RegisterCommands[] = [
  registerUp,
  registerVerify,
  registerKeygen,
  registerManifest,
  registerSecret,
  registerStatus,
  registerCoordinator,
  registerAgent,
  registerSim,
  registerEvidence,
  registerImage,
  registerKeyprovider,
];

export function buildProgram(ctx: CommandContext): Command {
  const program = new Command('cloister')
    .description('Run unmodified containers as attested confidential containers')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.io.out(s), writeErr: (s) => ctx.io.err(s) })
    .showHelpAfterError();
  for (const register of groups) register(program, ctx);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and resolves to the exit code. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<ExitCode> {
  const ctx: CommandContext = { io, exitCode: EXIT_CODES.ok };
  const program = buildProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.exitCode;
  } catch (e) {
    return reportError(io, e, argv.includes('--json'));
  }
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  process.exitCode = await main(process.argv.slice(2));
}
