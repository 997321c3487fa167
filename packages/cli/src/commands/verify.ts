/**
 * `cloister verify --coordinator URL [--manifest FILE] [--allow-simulation] [--sim-root DIR]
 * [--save-root FILE] [--history-file FILE] [--json]`: attests a coordinator against this
 * release's reference values, checks the binding, the manifest history (and that it extends the
 * one recorded in the history file) and optionally the manifest, and saves the root CA that
 * later commands pin. A rejected verdict prints its structured reason and exits 10.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { EXIT_CODES, exitCodeFor, isCloisterError } from '@cloister/errors';
import { SIM_HARDWARE_FILES } from '@cloister/evidence';
import { ownerKeyType, parseManifestText } from '@cloister/protocol';
import type { CommandContext } from '../main.js';
import { ENV_COORDINATOR, readInputText, writePublicFile, writeRootCa } from '../client/local.js';
import { verifyCoordinator } from '../client/verify.js';
import type { KnownHistory, VerifiedCoordinator } from '../client/verify.js';
import { cliError } from '../error-codes.js';
import { printJson } from '../output.js';

interface VerifyFlags {
  coordinator?: string;
  manifest?: string;
  allowSimulation?: boolean;
  simRoot?: string;
  saveRoot?: string;
  historyFile?: string;
  ownerKey?: string;
  json?: boolean;
}

/**
 * The history a `--history-file` remembers (none yet when the file does not exist: the first
 * verification trusts what it sees and records it).
 */
function readKnownHistory(path: string): KnownHistory | undefined {
  if (!existsSync(path)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(readInputText(path, 'history file'));
  } catch (cause) {
    if (isCloisterError(cause)) throw cause;
    throw cliError('CLI_BAD_INPUT', `history file ${path} is not JSON`, {
      cause,
      details: { file: path },
    });
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  const length = o['historyLength'];
  const head = o['historyHead'];
  if (
    typeof length !== 'number' ||
    !Number.isSafeInteger(length) ||
    length < 0 ||
    typeof head !== 'string' ||
    !/^[0-9a-f]{64}$/.test(head)
  ) {
    throw cliError(
      'CLI_BAD_INPUT',
      `history file ${path} needs historyLength (an integer >= 0) and historyHead (64 hex)`,
      { details: { file: path } },
    );
  }
  return { length, head };
}

/** The `--json` document of `cloister verify`. */
export interface VerifyOutput {
  verdict: 'verified' | 'rejected';
  coordinator: string;
  tee?: string;
  simulation?: boolean;
  measurement?: string;
  manifestHash?: string | null;
  historyLength?: number;
  historyHead?: string;
  /** With --owner-key: whether there was a first manifest to check against it (it passed). */
  ownerKeyChecked?: boolean;
  rootCaFingerprint?: string;
  rootCaSaved?: string;
  reason?: Record<string, unknown>;
}

async function verifyCommand(flags: VerifyFlags, ctx: CommandContext): Promise<void> {
  const url = flags.coordinator ?? process.env[ENV_COORDINATOR];
  if (url === undefined || url === '') {
    throw cliError('CLI_USAGE', `pass --coordinator https://host:port (or set ${ENV_COORDINATOR})`);
  }
  const expectedManifest =
    flags.manifest === undefined
      ? undefined
      : parseManifestText(readInputText(flags.manifest, 'manifest'));
  const simRootPem =
    flags.simRoot === undefined
      ? undefined
      : readInputText(join(flags.simRoot, SIM_HARDWARE_FILES.rootCert), 'sim root certificate');
  const knownHistory =
    flags.historyFile === undefined ? undefined : readKnownHistory(flags.historyFile);
  // Checked now: an unusable key is a bad input, not a coordinator that failed the check.
  const ownerKeyPem =
    flags.ownerKey === undefined ? undefined : readInputText(flags.ownerKey, 'owner key');
  if (ownerKeyPem !== undefined) ownerKeyType(ownerKeyPem, flags.ownerKey);
  let v: VerifiedCoordinator;
  try {
    v = await verifyCoordinator({
      url,
      allowSimulation: flags.allowSimulation === true,
      ...(simRootPem === undefined ? {} : { simRootPem }),
      ...(expectedManifest === undefined ? {} : { expectedManifest }),
      ...(knownHistory === undefined ? {} : { knownHistory }),
      ...(ownerKeyPem === undefined ? {} : { ownerKeyPem }),
    });
  } catch (e) {
    // A verdict, not a crash: print why, exit 10. Anything else (unreachable, bug) propagates.
    if (!isCloisterError(e) || exitCodeFor(e) !== EXIT_CODES.rejected) throw e;
    const out: VerifyOutput = { verdict: 'rejected', coordinator: url, reason: e.toJSON() };
    if (flags.json === true) printJson(ctx.io, out);
    else {
      const layer = 'layer' in e ? ` [${String(e.layer)}]` : '';
      ctx.io.out(`REJECTED ${e.code}${layer}: ${e.message}`);
      if (e.details !== undefined) ctx.io.out(`  ${JSON.stringify(e.details)}`);
    }
    ctx.exitCode = EXIT_CODES.rejected;
    return;
  }
  if (flags.saveRoot !== undefined) await writeRootCa(flags.saveRoot, v.rootCaPem);
  if (flags.historyFile !== undefined) {
    await writePublicFile(
      flags.historyFile,
      JSON.stringify({
        coordinator: url,
        historyLength: v.historyLength,
        historyHead: v.historyHead,
      }),
    );
  }
  const out: VerifyOutput = {
    verdict: 'verified',
    coordinator: url,
    tee: v.tee,
    simulation: v.simulation,
    measurement: v.measurement,
    manifestHash: v.manifestHash,
    historyLength: v.historyLength,
    historyHead: v.historyHead,
    ...(flags.ownerKey === undefined ? {} : { ownerKeyChecked: v.historyLength > 0 }),
    rootCaFingerprint: v.rootCaFingerprint,
    ...(flags.saveRoot === undefined ? {} : { rootCaSaved: flags.saveRoot }),
  };
  if (flags.json === true) {
    printJson(ctx.io, out);
    return;
  }
  const lines = [
    `VERIFIED coordinator ${url}${v.simulation ? ' (SIMULATION TEE: development only, no hardware protection)' : ''}`,
    `  tee:          ${v.tee}`,
    `  measurement:  ${v.measurement}`,
    `  manifest:     ${v.manifestHash ?? '(none set yet)'}`,
    `  history:      ${v.historyLength} transition(s), head ${v.historyHead}`,
    `  root CA:      SHA-256 ${v.rootCaFingerprint}`,
  ];
  if (flags.ownerKey !== undefined) {
    lines.push(
      v.historyLength > 0
        ? `  owner:        the first manifest is signed by ${flags.ownerKey}`
        : '  owner:        no manifest set yet: nothing signed to check',
    );
  }
  if (flags.saveRoot !== undefined) lines.push(`  saved root CA to ${flags.saveRoot}`);
  ctx.io.out(lines.join('\n'));
}

/** Registers `cloister verify`. */
export function registerVerify(program: Command, ctx: CommandContext): void {
  program
    .command('verify')
    .description('Attest a coordinator, check its manifest and history, and save its root CA')
    .option('--coordinator <url>', `coordinator https://host:port (or ${ENV_COORDINATOR})`)
    .option(
      '--manifest <file>',
      'the manifest you expect it to enforce (compared by canonical hash)',
    )
    .option('--allow-simulation', 'accept a coordinator on the simulation TEE (development only)')
    .option('--sim-root <dir>', 'sim hardware directory whose root.crt.pem to pin')
    .option('--save-root <file>', 'write the verified root CA (PEM) here')
    .option(
      '--owner-key <file>',
      'the owner public key the coordinator was installed with: the first manifest must be signed by it',
    )
    .option(
      '--history-file <file>',
      'refuse a history shorter than, or forking from, the one recorded here; record the new one',
    )
    .option('--json', 'print one JSON document')
    .action((flags: VerifyFlags) => verifyCommand(flags, ctx));
}
