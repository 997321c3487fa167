/**
 * Entry point of the `cloister` command. Each command group lives in `commands/<group>.ts` and
 * registers itself on the program; this file only wires them and maps errors to exit codes
 * (0 ok, 1 internal, 2 usage, 10 rejected, 20 unsupported, 30 malformed).
 */
import { Command } from 'commander';
import { EXIT_CODES } from '@cloister/errors';
import type { ExitCode } from '@cloister/errors';
import { processIo, reportError } from './output.js';
import type { Io } from './output.js';

/** Context every command gets: where to print, and where to record its exit code. */
export interface CommandContext {
  readonly io: Io;
  /** Set by a command that finishes with a non-zero but non-error outcome (e.g. verdict rejected). */
  exitCode: ExitCode;
}

export type RegisterCommands = (program: Command, ctx: CommandContext) => void;

/**
 * The command groups, by command name. A group's module (and the packages it needs: the
 * coordinator's server, the agent, the image code) is loaded only when its command runs, so
 * `cloister keyprovider`, which ocicrypt starts once per layer, or `cloister image convert`
 * does not pay for the rest. Help and unknown commands load them all.
 */
const groups: Record<string, () => Promise<RegisterCommands>> = {
  up: async () => (await import('./commands/up.js')).registerUp,
  verify: async () => (await import('./commands/verify.js')).registerVerify,
  keygen: async () => (await import('./commands/keygen.js')).registerKeygen,
  manifest: async () => (await import('./commands/manifest.js')).registerManifest,
  secret: async () => (await import('./commands/secret.js')).registerSecret,
  status: async () => (await import('./commands/status.js')).registerStatus,
  coordinator: async () => (await import('./commands/coordinator.js')).registerCoordinator,
  agent: async () => (await import('./commands/agent.js')).registerAgent,
  sim: async () => (await import('./commands/sim.js')).registerSim,
  evidence: async () => (await import('./commands/evidence.js')).registerEvidence,
  image: async () => (await import('./commands/image.js')).registerImage,
  keyprovider: async () => (await import('./commands/keyprovider.js')).registerKeyprovider,
};

/**
 * The program with the groups `argv` needs: the named command's group, none for `--version`,
 * all of them otherwise (help lists every command; an unknown one gets suggestions).
 */
export async function buildProgram(
  ctx: CommandContext,
  argv: readonly string[] = [],
): Promise<Command> {
  const program = new Command('cloister')
    .description('Run unmodified containers as attested confidential containers')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.io.out(s), writeErr: (s) => ctx.io.err(s) })
    .showHelpAfterError();
  const first = argv[0] ?? '';
  const loaders = Object.hasOwn(groups, first)
    ? [groups[first] as () => Promise<RegisterCommands>]
    : first === '--version' || first === '-V'
      ? []
      : Object.values(groups);
  for (const register of await Promise.all(loaders.map((load) => load()))) register(program, ctx);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and resolves to the exit code. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<ExitCode> {
  const ctx: CommandContext = { io, exitCode: EXIT_CODES.ok };
  try {
    const program = await buildProgram(ctx, argv);
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.exitCode;
  } catch (e) {
    // A --json after -- is an argument of the program (`sim measure -- CMD --json`), not ours.
    const end = argv.indexOf('--');
    return reportError(io, e, (end < 0 ? argv : argv.slice(0, end)).includes('--json'));
  }
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  process.exitCode = await main(process.argv.slice(2));
}
