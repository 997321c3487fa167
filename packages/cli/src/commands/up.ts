/**
 * `cloister up DIR [--port N] [--keep-running] [--json]`: runs a whole deployment on this
 * machine on the simulation TEE (see up/runtime.ts and docs/quickstart.md). Prints the
 * coordinator and the ingress addresses, then waits: it finishes when every one-shot workload
 * has exited (unless --keep-running), or on SIGINT / SIGTERM, and stops everything it started.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
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
    .option(
      '--json',
      'print one JSON document when ready and one when done (logs and program output go to stderr)',
    )
    .action(async (dir: string, flags: UpFlags) => {
      // Decimal digits only: Number() would also take '', ' ', '1e3' or '0x50'.
      const port = flags.port === undefined ? undefined : Number(flags.port);
      if (
        flags.port !== undefined &&
        !(/^\d{1,5}$/.test(flags.port) && port !== undefined && port <= 65535)
      ) {
        throw cliError(
          'CLI_USAGE',
          `--port must be a number from 0 to 65535, got ${JSON.stringify(flags.port)}`,
        );
      }
      // Handled from the start: a signal during start-up must stop what already runs (without a
      // handler Node.js would exit at once and leave the programs running, and once an agent has
      // launched one, its signal forwarding would keep `up` itself going).
      let signalled: NodeJS.Signals | undefined;
      const interrupt = new AbortController();
      let onStopSignal: () => void = () => undefined;
      const stopSignal = new Promise<void>((r) => (onStopSignal = r));
      const onSignal = (s: NodeJS.Signals): void => {
        signalled ??= s;
        interrupt.abort();
        onStopSignal();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        await runUp(ctx, dir, flags, port, interrupt.signal, stopSignal, () => signalled);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

async function runUp(
  ctx: CommandContext,
  dir: string,
  flags: UpFlags,
  port: number | undefined,
  interrupt: AbortSignal,
  stopSignal: Promise<void>,
  signalled: () => NodeJS.Signals | undefined,
): Promise<void> {
  const handle = await startUp(dir, {
    ...(port === undefined ? {} : { port }),
    log: (line) => ctx.io.err(line),
    signal: interrupt,
    // With --json, standard output carries only the JSON documents.
    ...(flags.json === true ? { programStdout: 'stderr' as const } : {}),
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
    // The owner key `up` installs the coordinator with: verify can check the history starts there.
    const ownerPub = join(resolve(dir), 'owner.pub.pem');
    const lines = [
      `coordinator  ${handle.coordinator}  (sim TEE; root CA ${handle.rootCa})`,
      `manifest     ${handle.manifestHash}`,
      ...handle.ingress.map(
        (i) => `ingress      ${i.workload.padEnd(12)} mTLS on ${i.address} -> port ${i.to}`,
      ),
      `verify with: cloister verify --coordinator ${handle.coordinator} --allow-simulation --sim-root ${handle.simRoot}${existsSync(ownerPub) ? ` --owner-key ${ownerPub}` : ''}`,
      flags.keepRunning === true
        ? 'running; Ctrl-C stops everything'
        : 'running until the one-shot workloads finish; Ctrl-C stops everything',
    ];
    ctx.io.out(lines.join('\n'));
  }
  // 'all': every program exited on its own, services included, so none was stopped by `up`.
  let ended: 'all' | 'oneShots' | 'signal' | undefined;
  try {
    ended = await Promise.race([
      handle.allDone.then(() => 'all' as const),
      flags.keepRunning === true
        ? new Promise<never>(() => undefined)
        : handle.oneShotsDone.then(() => 'oneShots' as const),
      stopSignal.then(() => 'signal' as const),
    ]);
  } finally {
    const results = await handle.stop();
    const failed = results.filter(
      (r) => r.error !== undefined || ((r.oneShot || ended === 'all') && r.status !== 0),
    );
    if (flags.json === true)
      printJson(ctx.io, { event: 'stopped', signal: signalled() ?? null, instances: results });
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
    if (failed.length > 0 && signalled() === undefined) ctx.exitCode = EXIT_CODES.internal;
  }
}
