/**
 * `cloister secret set NAME (--value V | --file F) --key OWNER.pem [--owner NAME]
 * [--coordinator URL --root-ca FILE] [--json]`: uploads a user-defined secret, signed by an
 * owner with role `secrets:NAME` over its digest (root CA, name, version, value), over a
 * connection pinned to the verified root CA. The value never appears in the output.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { CommandContext } from '../main.js';
import { CoordinatorApi } from '../client/api.js';
import { endpointFrom, ENV_COORDINATOR, ENV_ROOT_CA, loadOwnerKey } from '../client/local.js';
import { ownerNameFor, signAndSetSecret } from '../client/ops.js';
import { cliError } from '../error-codes.js';
import { printJson } from '../output.js';

interface SecretFlags {
  value?: string;
  file?: string;
  key: string;
  owner?: string;
  version?: string;
  coordinator?: string;
  rootCa?: string;
  json?: boolean;
}

function valueOf(flags: SecretFlags): Uint8Array {
  if ((flags.value === undefined) === (flags.file === undefined)) {
    throw cliError('CLI_USAGE', 'pass exactly one of --value or --file');
  }
  if (flags.value !== undefined) return new TextEncoder().encode(flags.value);
  try {
    return new Uint8Array(readFileSync(flags.file as string));
  } catch (cause) {
    throw cliError('CLI_FILE_NOT_FOUND', `secret file ${String(flags.file)} cannot be read`, {
      cause,
    });
  }
}

/** Registers `cloister secret set`. */
export function registerSecret(program: Command, ctx: CommandContext): void {
  const secret = program.command('secret').description('Upload user-defined secrets');
  secret
    .command('set')
    .description('Upload a user-defined secret (signed by an owner with role secrets:NAME)')
    .argument('<name>', 'secret name in the manifest')
    .option('--value <text>', 'the value (UTF-8); visible in the process list, prefer --file')
    .option('--file <path>', 'read the value (bytes) from a file')
    .requiredOption('--key <file>', 'owner private key (PEM)')
    .option('--owner <name>', 'owner name to sign as (default: the manifest owner with this key)')
    .option('--version <n>', 'secret version to write (default: the next one)')
    .option('--coordinator <url>', `coordinator https://host:port (or ${ENV_COORDINATOR})`)
    .option('--root-ca <file>', `verified root CA (or ${ENV_ROOT_CA})`)
    .option('--json', 'print one JSON document')
    .action(async (name: string, flags: SecretFlags) => {
      const value = valueOf(flags);
      const version = flags.version === undefined ? undefined : Number(flags.version);
      if (version !== undefined && !(Number.isSafeInteger(version) && version >= 0)) {
        throw cliError('CLI_USAGE', '--version must be a non-negative integer');
      }
      const key = await loadOwnerKey(flags.key);
      const ep = endpointFrom(flags);
      const api = new CoordinatorApi(ep);
      try {
        const owner = ownerNameFor(key, (await api.getManifest()).manifest, flags.owner);
        const r = await signAndSetSecret(api, {
          name,
          value,
          rootCaPem: ep.rootCaPem,
          owner,
          key,
          ...(version === undefined ? {} : { version }),
        });
        if (flags.json === true) printJson(ctx.io, { ...r, owner });
        else ctx.io.out(`secret ${r.name} set (version ${r.version}, signed by ${owner})`);
      } finally {
        await api.close();
      }
    });
}
