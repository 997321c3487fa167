/**
 * `cloister coordinator`: runs the coordinator (docs/coordinator.md).
 *
 *   cloister coordinator --data DIR --listen HOST:PORT --owner-key PEM
 *                        [--simulation --sim-root DIR] [--durability process|full]
 *                        [--instance-retention DURATION] [--json]
 *
 * Prints where it listens and the root CA clients pin (one JSON document with --json), logs
 * to stderr, and runs until SIGINT or SIGTERM, then closes cleanly (exit 0).
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Option } from 'commander';
import type { Command } from 'commander';
import { coordinatorError, createCoordinator, createLogger } from '@cloister/coordinator';
import { cliError } from '../error-codes.js';
import type { CommandContext } from '../main.js';
import { printJson } from '../output.js';

interface CoordinatorFlags {
  data: string;
  listen: string;
  ownerKey: string;
  simulation?: boolean;
  simRoot?: string;
  durability: 'process' | 'full';
  instanceRetention?: string;
  json?: boolean;
}

const DURATION_UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * Milliseconds of a duration flag: a positive whole number and a unit, `30s`, `15m`, `24h` or
 * `7d`. Anything else (zero, a sign, a fraction, no unit) is a usage error naming the flag.
 */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  const ms =
    m === null ? NaN : Number(m[1]) * DURATION_UNIT_MS[m[2] as keyof typeof DURATION_UNIT_MS];
  if (!(Number.isSafeInteger(ms) && ms > 0)) {
    throw cliError(
      'CLI_USAGE',
      `${flag} takes a positive duration such as 30s, 15m, 24h or 7d, got ${JSON.stringify(text)}`,
      { details: { rule: flag, expected: 'a positive integer and s, m, h or d', actual: text } },
    );
  }
  return ms;
}

/** Registers `cloister coordinator`. */
export function registerCoordinator(program: Command, ctx: CommandContext): void {
  program
    .command('coordinator')
    .description(
      'Run the coordinator: attestation-gated activation, secrets, mesh CA, manifest history',
    )
    .requiredOption('--data <dir>', 'directory of the sealed state (created if missing)')
    .option('--listen <host:port>', 'address of the TLS API', '0.0.0.0:4433')
    .requiredOption('--owner-key <pem>', 'PEM public key that must sign the first manifest')
    .option('--simulation', 'run on the simulation TEE (development only; needs --sim-root)')
    .option('--sim-root <dir>', 'simulation TEE hardware directory (from `cloister sim init`)')
    .addOption(
      new Option(
        '--durability <level>',
        'process: acknowledged writes survive a killed coordinator; full: also power loss (fsync)',
      )
        .choices(['process', 'full'])
        .default('process'),
    )
    .option(
      '--instance-retention <duration>',
      'delete an instance this long after its certificate expired (30s, 15m, 24h, 7d; default 7d)',
    )
    .option('--json', 'print one JSON document when listening')
    .action(async (flags: CoordinatorFlags) => {
      if ((flags.simulation === true) !== (flags.simRoot !== undefined)) {
        throw coordinatorError('COORDINATOR_BAD_CONFIG', '--simulation and --sim-root go together');
      }
      const instanceRetentionMs =
        flags.instanceRetention === undefined
          ? undefined
          : parseDuration('--instance-retention', flags.instanceRetention);
      let ownerKeyPem: string;
      try {
        ownerKeyPem = await readFile(flags.ownerKey, 'utf8');
      } catch (cause) {
        throw coordinatorError(
          'COORDINATOR_BAD_CONFIG',
          `cannot read --owner-key ${flags.ownerKey}`,
          { cause },
        );
      }
      const logger = createLogger(process.env.CLOISTER_LOG_LEVEL ?? 'info', 2);
      let coord;
      try {
        coord = await createCoordinator({
          dataDir: flags.data,
          listen: flags.listen,
          ownerKeyPem,
          durability: flags.durability,
          ...(instanceRetentionMs === undefined ? {} : { instanceRetentionMs }),
          ...(flags.simRoot === undefined ? {} : { simulation: { rootDir: flags.simRoot } }),
          logger,
        });
      } catch (e) {
        // A port another program holds (or a privileged one) is a configuration error, not a bug.
        const code = (e as { code?: unknown }).code;
        if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
          throw coordinatorError(
            'COORDINATOR_BAD_CONFIG',
            `cannot listen on ${flags.listen}: ${code === 'EADDRINUSE' ? 'the address is in use' : code === 'EACCES' ? 'permission denied' : 'no such local address'}`,
            { cause: e, details: { listen: flags.listen } },
          );
        }
        throw e;
      }
      const der = Buffer.from(coord.rootCaPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      const info = {
        url: coord.url,
        rootCa: coord.rootCaPem,
        rootCaSha256: createHash('sha256').update(der).digest('hex'),
        simulation: flags.simulation === true,
      };
      if (flags.json === true) printJson(ctx.io, info);
      else {
        ctx.io.out(
          `coordinator listening on ${info.url}${info.simulation ? ' (SIMULATION: not for production)' : ''}`,
        );
        ctx.io.out(`root CA SHA-256: ${info.rootCaSha256}`);
      }
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          void coord.close().then(resolve, resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
