/**
 * `cloister status --coordinator URL --root-ca FILE [--json]`: the coordinator's state over a
 * connection pinned to the verified root CA.
 */
import type { Command } from 'commander';
import type { CommandContext } from '../main.js';
import { CoordinatorApi } from '../client/api.js';
import { endpointFrom, ENV_COORDINATOR, ENV_ROOT_CA } from '../client/local.js';
import { printJson } from '../output.js';

/** Registers `cloister status`. */
export function registerStatus(program: Command, ctx: CommandContext): void {
  program
    .command('status')
    .description("Show the coordinator's state, manifest hash, history head and live instances")
    .option('--coordinator <url>', `coordinator https://host:port (or ${ENV_COORDINATOR})`)
    .option(
      '--root-ca <file>',
      `verified root CA from \`cloister verify --save-root\` (or ${ENV_ROOT_CA})`,
    )
    .option('--json', 'print one JSON document')
    .action(async (flags: { coordinator?: string; rootCa?: string; json?: boolean }) => {
      const api = new CoordinatorApi(endpointFrom(flags));
      try {
        const s = await api.status();
        if (flags.json === true) printJson(ctx.io, s);
        else {
          ctx.io.out(
            Object.entries(s)
              .map(([k, v]) => `${k.padEnd(16)} ${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join('\n'),
          );
        }
      } finally {
        await api.close();
      }
    });
}
