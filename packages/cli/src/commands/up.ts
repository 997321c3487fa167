/**
 * `cloister up DIR [--port N] [--keep-running] [--json]`: runs a whole deployment on this
 * machine on the simulation TEE (see up/runtime.ts and docs/quickstart.md). Prints the
 * coordinator and the ingress addresses, then waits: it finishes when every one-shot workload
 * has exited (unless --keep-running), or on SIGINT / SIGTERM, and stops everything it started.
 */
import type { Command } from 'commander';
import { EXIT_CODES } from '@cloister/errors';
import type { CommandContext } from '../main.js';
import { cliError } from '../error-codes.js';
import { printJson } from '../output.js';
import { startUp } from '../up/runtime.js';

interface UpFlags {
  port?: string;
  keepRunning?: boolean;
  json?: boolean;
}

/** Registers `cloister up`. */
export function registerUp(program: Command, ctx: CommandContext): void {
  program
    .command('up')
    .description(
      'Run DIR (manifest.json + workloads.json) locally: coordinator, agents, mesh (sim TEE)',
    )
    .argument('<dir>', 'directory with manifest.json, workloads.json and optional secrets/<name>')
    .option('--port <n>', 'coordinator port on 127.0.0.1 (default: a free port)')
    .option('--keep-running', 'keep serving after the one-shot workloads have exited')
    .option('--json', 'print one JSON document when ready and one when done (logs go to stderr)')
    .action(async (dir: string, flags: UpFlags) => {
      const port = flags.port === undefined ? undefined : Number(flags.port);
      if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
        throw cliError('CLI_USAGE', '--port must be 0..65535');
      }
      const handle = await startUp(dir, {
        ...(port === undefined ? {} : { port }),
        log: (line) => ctx.io.err(line),
      });
      if (flags.json === true) {
        const ready = {
          coordinator: handle.coordinator,
          rootCa: handle.rootCa,
          simRoot: handle.simRoot,
          manifestHash: handle.manifestHash,
          ingress: handle.ingress,
          pid: handle.pid,
        };
        printJson(ctx.io, { event: 'ready', ...ready });
      } else {
        const lines = [
          `coordinator  ${handle.coordinator}  (sim TEE; root CA ${handle.rootCa})`,
          `manifest     ${handle.manifestHash}`,
          ...handle.ingress.map(
            (i) => `ingress      ${i.workload.padEnd(12)} mTLS on ${i.address} -> port ${i.to}`,
          ),
          `verify with: cloister verify --coordinator ${handle.coordinator} --allow-simulation --sim-root ${handle.simRoot}`,
          flags.keepRunning === true
            ? 'running; Ctrl-C stops everything'
            : 'running until the one-shot workloads finish; Ctrl-C stops everything',
        ];
        ctx.io.out(lines.join('\n'));
      }
      let signalled: NodeJS.Signals | undefined;
      let onStopSignal: () => void = () => undefined;
      const stopSignal = new Promise<void>((r) => (onStopSignal = r));
      const onSignal = (s: NodeJS.Signals): void => {
        signalled = s;
        onStopSignal();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        await Promise.race([
          handle.allDone,
          flags.keepRunning === true ? new Promise<void>(() => undefined) : handle.oneShotsDone,
          stopSignal,
        ]);
      } finally {
        const results = await handle.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        const failed = results.filter(
          (r) => r.error !== undefined || (r.oneShot && r.status !== 0),
        );
        if (flags.json === true)
          printJson(ctx.io, { event: 'stopped', signal: signalled ?? null, instances: results });
        else {
          ctx.io.out(
            results
              .map(
                (r) =>
                  `${r.workload}#${r.instance}: ${r.error !== undefined ? `failed (${String(r.error['code'])})` : `exited ${String(r.status)}`}`,
              )
              .join('\n'),
          );
        }
        if (failed.length > 0 && signalled === undefined) ctx.exitCode = EXIT_CODES.internal;
      }
    });
}
