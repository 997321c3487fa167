// A `cloister` entry point for tests with every command group this package's tests need
// (this package's commands plus sim and agent), independent of how main.ts is wired.
import { Command } from 'commander';
import type { ExitCode } from '@cloister/errors';
import type { CommandContext } from '../src/main.js';
import { processIo, reportError } from '../src/output.js';
import { registerAgent } from '../src/commands/agent.js';
import { registerKeygen } from '../src/commands/keygen.js';
import { registerManifest } from '../src/commands/manifest.js';
import { registerSecret } from '../src/commands/secret.js';
import { registerSim } from '../src/commands/sim.js';
import { registerStatus } from '../src/commands/status.js';
import { registerUp } from '../src/commands/up.js';
import { registerVerify } from '../src/commands/verify.js';

const ctx: CommandContext = { io: processIo, exitCode: 0 };
const program = new Command('cloister')
  .exitOverride()
  .configureOutput({ writeOut: (s) => processIo.out(s), writeErr: (s) => processIo.err(s) });
for (const r of [
  registerVerify,
  registerKeygen,
  registerManifest,
  registerSecret,
  registerStatus,
  registerUp,
  registerSim,
  registerAgent,
]) {
  r(program, ctx);
}
const argv = process.argv.slice(2);
let code: ExitCode;
try {
  await program.parseAsync(argv, { from: 'user' });
  code = ctx.exitCode;
} catch (e) {
  code = reportError(processIo, e, argv.includes('--json'));
}
process.exitCode = code;
