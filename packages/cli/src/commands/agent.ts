/**
 * `cloister agent`: runs inside the TEE as the container entrypoint, in front of the
 * unmodified program (docs/agent.md).
 *
 *   cloister agent --coordinator URL --workload NAME --tee sim|tsm|gramine
 *                  [--root-ca FILE] [--sim-dir DIR] [--files-dir DIR] [--init DIR]
 *                  [--peer NAME=HOST[:PORT]]... [--manifest-refresh SECONDS] -- CMD ARGS...
 *   cloister agent ... --image REF --image-digest sha256:... [--image-key PATH] [--runc PATH]
 *
 * Exits with the program's status (128 + signal number when it was killed); with `--init` it
 * writes the files and exits 0. Its own failures use the documented exit codes.
 */
import { readFile } from 'node:fs/promises';
import { Option } from 'commander';
import type { Command } from 'commander';
import type { ExitCode } from '@cloister/errors';
import {
  GRAMINE_DEFAULT_ROOT,
  PEERS_ENV,
  SIM_DIR_ENV,
  TSM_DEFAULT_ROOT,
  agentError,
  gramineProvider,
  imageMeasuredArgs,
  parsePeers,
  resolveExecutable,
  runAgent,
  simProvider,
  tsmProvider,
} from '@cloister/agent';
import type { AgentLog, EvidenceProvider } from '@cloister/agent';
import type { CommandContext } from '../main.js';

interface AgentOptions {
  coordinator: string;
  workload: string;
  tee: 'sim' | 'tsm' | 'gramine';
  rootCa?: string;
  simDir?: string;
  tsmRoot?: string;
  gramineRoot?: string;
  filesDir?: string;
  init?: string;
  peer: string[];
  meshBind?: string;
  retryFor: string;
  manifestRefresh: string;
  json?: boolean;
  image?: string;
  imageDigest?: string;
  imageKey?: string;
  allowUnpinnedImage?: boolean;
  runc: string;
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (cause) {
    throw agentError('AGENT_USAGE', `cannot read ${what} ${file}`, { cause, details: { file } });
  }
}

/** Decimal seconds only: Number() would also take '', ' ', '0x10' or '1e3'. */
function seconds(text: string, option: string): number {
  const n = /^\d{1,9}(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(n)) throw agentError('AGENT_USAGE', `${option} takes a number of seconds`);
  return n;
}

function logger(ctx: CommandContext, json: boolean): AgentLog {
  const line = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (json) ctx.io.err(JSON.stringify({ level, msg, ...fields }));
    else {
      const extra = fields === undefined ? '' : ` ${JSON.stringify(fields)}`;
      ctx.io.err(`cloister-agent ${level}: ${msg}${extra}`);
    }
  };
  return { info: (m, f) => line('info', m, f), warn: (m, f) => line('warn', m, f) };
}

export function registerAgent(program: Command, ctx: CommandContext): void {
  program
    .command('agent')
    .description(
      'Attest this TEE to the coordinator, write the secrets, run the program with an mTLS mesh proxy',
    )
    .requiredOption('--coordinator <url>', 'coordinator API, https://host:port')
    .requiredOption('--workload <name>', 'the workload of the manifest this instance is')
    .addOption(
      new Option('--tee <type>', 'where evidence comes from')
        .choices(['sim', 'tsm', 'gramine'])
        .makeOptionMandatory(),
    )
    .option(
      '--root-ca <file>',
      'PEM root CA of the coordinator (from cloister verify); recommended',
    )
    .option('--sim-dir <dir>', `sim hardware directory (default $${SIM_DIR_ENV})`)
    .option('--tsm-root <dir>', 'configfs-tsm report directory', TSM_DEFAULT_ROOT)
    .option('--gramine-root <dir>', 'Gramine attestation directory', GRAMINE_DEFAULT_ROOT)
    .option('--files-dir <dir>', 'write files here (used as is) instead of a fresh /dev/shm dir')
    .option('--init <dir>', 'init-container mode: write the files to DIR and exit 0')
    .option(
      '--peer <name=host[:port]>',
      `where an egress target runs (repeatable; also $${PEERS_ENV})`,
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--mesh-bind <addr>', 'address the mesh ingress listens on (default 0.0.0.0)')
    .option('--retry-for <seconds>', 'retry an unreachable coordinator this long at startup', '60')
    .option(
      '--manifest-refresh <seconds>',
      're-read the manifest this often to apply mesh allow-list changes (0: only on renewal)',
      '30',
    )
    .option(
      '--image <ref>',
      'run this OCI image under runc: oci:DIR[:TAG], docker-archive:FILE, docker://...',
    )
    .option(
      '--image-digest <digest>',
      'the image manifest digest (measured; must match the manifest)',
    )
    .option(
      '--image-key <path>',
      'manifest path of the delivered image private key',
      '/run/cloister/image-key.pem',
    )
    .option('--allow-unpinned-image', 'development only: run an image no digest pins')
    .option('--runc <cmd>', 'the OCI runtime to run images with', 'runc')
    .option('--json', 'log JSON lines on stderr')
    .argument('[command...]', 'the program and its arguments (after --)')
    .action(async (command: string[], opts: AgentOptions) => {
      const log = logger(ctx, opts.json === true);
      if (command.length === 0 && opts.init === undefined && opts.image === undefined) {
        throw agentError('AGENT_USAGE', 'give the program after --, --image REF, or --init DIR');
      }
      if (opts.image !== undefined && (command.length > 0 || opts.init !== undefined)) {
        throw agentError('AGENT_USAGE', '--image runs the image: give no program and no --init');
      }
      // The image workload's measured launch: the runtime binary and `image DIGEST` (or
      // `image REF` when unpinned; imageMeasuredArgs).
      const runc = opts.image === undefined ? undefined : resolveExecutable(opts.runc);
      if (opts.init !== undefined && command.length > 0) {
        throw agentError('AGENT_USAGE', '--init writes files only: do not give a program');
      }
      const retry = seconds(opts.retryFor, '--retry-for');
      const refresh = seconds(opts.manifestRefresh, '--manifest-refresh');
      const [cmd, ...args] = command;
      const executable = cmd === undefined ? undefined : resolveExecutable(cmd);
      let provider: EvidenceProvider;
      switch (opts.tee) {
        case 'sim': {
          const dir = opts.simDir ?? process.env[SIM_DIR_ENV];
          if (dir === undefined) {
            throw agentError('AGENT_USAGE', `--tee sim needs --sim-dir or $${SIM_DIR_ENV}`);
          }
          // In init mode there is no program: the measurement is of the agent itself.
          provider = simProvider({
            dir,
            executable: runc ?? executable ?? process.execPath,
            args:
              opts.image !== undefined
                ? imageMeasuredArgs(opts.image, opts.imageDigest)
                : executable === undefined
                  ? []
                  : args,
          });
          break;
        }
        case 'tsm':
          provider = tsmProvider({ root: opts.tsmRoot ?? TSM_DEFAULT_ROOT });
          break;
        case 'gramine':
          provider = gramineProvider({ root: opts.gramineRoot ?? GRAMINE_DEFAULT_ROOT });
          break;
      }
      const peers = parsePeers([
        ...(process.env[PEERS_ENV] === undefined ? [] : [process.env[PEERS_ENV]]),
        ...opts.peer,
      ]);
      const status = await runAgent({
        coordinator: opts.coordinator,
        workload: opts.workload,
        provider,
        log,
        peers,
        retryForMs: retry * 1000,
        manifestRefreshMs: refresh * 1000,
        ...(opts.rootCa === undefined ? {} : { rootCa: await readText(opts.rootCa, '--root-ca') }),
        ...(opts.filesDir === undefined ? {} : { filesDir: opts.filesDir }),
        ...(opts.init === undefined ? {} : { init: opts.init }),
        ...(opts.meshBind === undefined ? {} : { meshBind: opts.meshBind }),
        ...(opts.image === undefined || runc === undefined
          ? {}
          : {
              image: {
                source: opts.image,
                runc,
                ...(opts.imageDigest === undefined ? {} : { manifestDigest: opts.imageDigest }),
                ...(opts.imageKey === undefined ? {} : { keyFile: opts.imageKey }),
                ...(opts.allowUnpinnedImage === true ? { allowUnpinned: true } : {}),
              },
            }),
        ...(executable === undefined || cmd === undefined
          ? {}
          : { program: { executable, argv0: cmd, args } }),
      });
      // The program's own status is passed through unchanged (it is not one of ours).
      ctx.exitCode = status as ExitCode;
    });
}
