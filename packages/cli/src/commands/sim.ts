/**
 * `cloister sim`: the simulation TEE for development (docs/sim.md).
 *   sim init DIR                  make sim hardware (root + platform keys and certificates)
 *   sim measure -- CMD ARGS...    the measurement a sim package pins for CMD with ARGS
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { generateSimHardware, toHex } from '@cloister/evidence';
import type { CommandContext } from '../main.js';
import { printJson } from '../output.js';
import { cliError } from '../error-codes.js';
import { writeSimHardware } from '../sim-hardware.js';

async function isExecutableFile(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** Resolves a command like a shell does: a path if it has a slash, else the first PATH hit. */
export async function resolveExecutable(
  cmd: string,
  path = process.env['PATH'] ?? '',
): Promise<string> {
  if (cmd.includes('/')) {
    const p = isAbsolute(cmd) ? cmd : resolve(cmd);
    if (await isExecutableFile(p)) return p;
  } else {
    for (const dir of path.split(delimiter)) {
      if (dir === '') continue;
      const p = join(dir, cmd);
      if (await isExecutableFile(p)) return p;
    }
  }
  throw cliError(
    'CLI_FILE_NOT_FOUND',
    `${cmd}: no such executable${cmd.includes('/') ? '' : ' on PATH'}`,
    {
      details: { command: cmd },
    },
  );
}

export function registerSim(program: Command, ctx: CommandContext): void {
  const sim = program
    .command('sim')
    .description('The simulation TEE (development only; refused by verifiers unless allowed)');

  sim
    .command('init')
    .description('Create sim hardware in DIR: root and platform keys (0600) and certificates')
    .argument('<dir>', 'directory to create the files in')
    .option('--json', 'print JSON')
    .action(async (dir: string, opts: { json?: boolean }) => {
      const hw = await generateSimHardware();
      const files = await writeSimHardware(dir, hw);
      const rootSha256 = toHex(
        new Uint8Array(
          await globalThis.crypto.subtle.digest('SHA-256', new Uint8Array(hw.rootCertDer)),
        ),
      );
      if (opts.json === true) printJson(ctx.io, { dir, files, rootCertificateSha256: rootSha256 });
      else {
        ctx.io.out(`sim hardware written to ${dir}`);
        for (const f of files) ctx.io.out(`  ${f}`);
        ctx.io.out(`root certificate SHA-256: ${rootSha256}`);
      }
    });

  sim
    .command('measure')
    .description('Print the sim measurement of an executable and its arguments')
    .option('--json', 'print JSON')
    .argument('<command>', 'the executable (a path, or a name looked up on PATH)')
    .argument('[args...]', 'its arguments (after --)')
    .action(async (cmd: string, args: string[], opts: { json?: boolean }) => {
      const exe = await resolveExecutable(cmd);
      // Loaded here: the rest of `cloister sim` does not need the agent.
      const { simProgramMeasurement } = await import('@cloister/agent');
      let m: string;
      try {
        m = toHex(await simProgramMeasurement(exe, args));
      } catch (cause) {
        throw cliError('CLI_FILE_NOT_FOUND', `cannot read ${exe}`, {
          cause,
          details: { file: exe },
        });
      }
      if (opts.json === true) printJson(ctx.io, { measurement: m, executable: exe, args });
      else ctx.io.out(m);
    });
}
