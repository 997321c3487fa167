/**
 * `cloister manifest set|get|history`: the owner side of the manifest (DESIGN §3 "Set the
 * manifest", "Update"), over a connection pinned to the root CA `cloister verify` saved.
 *
 * - `set FILE --key OWNER.pem [--owner NAME] [--kind update|package-update]`: validates the file
 *   locally (path-precise errors before anything is sent), signs the transition it creates
 *   (seq, previous head, canonical manifest hash, kind) and sends it.
 * - `get [--out FILE]`: the current manifest; its canonical hash is recomputed locally.
 * - `history [--verify]`: the transitions; `--verify` re-checks the hash chain (and each
 *   update's owner approvals when the coordinator serves the manifests).
 */
import type { Command } from 'commander';
import { manifestHash, parseManifestText, verifyHistory } from '@cloister/protocol';
import type { HistoryEntry, Manifest } from '@cloister/protocol';
import type { CommandContext } from '../main.js';
import { CoordinatorApi } from '../client/api.js';
import { clientError } from '../client/error-codes.js';
import {
  endpointFrom,
  ENV_COORDINATOR,
  ENV_ROOT_CA,
  loadOwnerKey,
  readInputText,
  writeRootCa,
} from '../client/local.js';
import { signAndSetManifest } from '../client/ops.js';
import { cliError } from '../error-codes.js';
import { printJson } from '../output.js';

interface Endpoint {
  coordinator?: string;
  rootCa?: string;
  json?: boolean;
}

function endpointOptions(cmd: Command): Command {
  return cmd
    .option('--coordinator <url>', `coordinator https://host:port (or ${ENV_COORDINATOR})`)
    .option(
      '--root-ca <file>',
      `verified root CA from \`cloister verify --save-root\` (or ${ENV_ROOT_CA})`,
    )
    .option('--json', 'print one JSON document');
}

async function withApi<T>(flags: Endpoint, f: (api: CoordinatorApi) => Promise<T>): Promise<T> {
  const api = new CoordinatorApi(endpointFrom(flags));
  try {
    return await f(api);
  } finally {
    await api.close();
  }
}

/** Registers `cloister manifest set|get|history`. */
export function registerManifest(program: Command, ctx: CommandContext): void {
  const manifest = program.command('manifest').description('Set, read and audit the manifest');

  endpointOptions(
    manifest
      .command('set')
      .description('Sign and set (or update) the manifest')
      .argument('<file>', 'manifest.json')
      .requiredOption('--key <file>', 'owner private key (PEM)')
      .option('--owner <name>', 'owner name to sign as (default: the owner with this key)')
      .option('--kind <kind>', 'update or package-update (for a manifest already set)', 'update'),
  ).action(
    async (file: string, flags: Endpoint & { key: string; owner?: string; kind: string }) => {
      if (flags.kind !== 'update' && flags.kind !== 'package-update') {
        throw cliError('CLI_USAGE', '--kind must be update or package-update');
      }
      const m = parseManifestText(readInputText(file, 'manifest'));
      const key = await loadOwnerKey(flags.key);
      const r = await withApi(flags, (api) =>
        signAndSetManifest(api, m, key, {
          kind: flags.kind as 'update' | 'package-update',
          ...(flags.owner === undefined ? {} : { owner: flags.owner }),
        }),
      );
      if (flags.json === true) printJson(ctx.io, r);
      else {
        ctx.io.out(
          `manifest ${r.kind === 'set' ? 'set' : 'updated'}: ${r.manifestHash} (transition ${r.seq}, ${r.transitionHash}, signed by ${r.owner})`,
        );
      }
    },
  );

  endpointOptions(
    manifest
      .command('get')
      .description('Print the current manifest and its canonical hash')
      .option('--out <file>', 'also write the manifest to this file'),
  ).action(async (flags: Endpoint & { out?: string }) => {
    const r = await withApi(flags, (api) => api.getManifest());
    const local = await manifestHash(r.manifest);
    // A hash that does not match the body would make every later comparison meaningless.
    if (local !== r.manifestHash) {
      throw clientError(
        'VERIFY_HISTORY_MISMATCH',
        'the manifest does not have the hash the coordinator states',
        {
          details: { rule: 'manifestHash', expected: r.manifestHash, actual: local },
        },
      );
    }
    if (flags.out !== undefined)
      await writeRootCa(flags.out, `${JSON.stringify(r.manifest, null, 2)}`);
    if (flags.json === true) printJson(ctx.io, r);
    else
      ctx.io.out(
        `${JSON.stringify(r.manifest, null, 2)}\n# manifest hash ${r.manifestHash} (seq ${r.seq})`,
      );
  });

  endpointOptions(
    manifest
      .command('history')
      .description('List the manifest history (a hash chain of transitions)')
      .option('--verify', 'verify the chain (and owner approvals, when manifests are served)'),
  ).action(async (flags: Endpoint & { verify?: boolean }) => {
    const h = await withApi(flags, (api) => api.history());
    const entries = h.entries as HistoryEntry[];
    let verified: { head: string; length: number; approvals: boolean } | undefined;
    if (flags.verify === true) {
      const manifests = h.manifests as Record<string, Manifest> | undefined;
      const v = await verifyHistory(entries, manifests === undefined ? {} : { manifests });
      verified = { ...v, approvals: manifests !== undefined };
    }
    if (flags.json === true) {
      printJson(ctx.io, { entries, ...(verified === undefined ? {} : { verified }) });
      return;
    }
    const lines = entries.map(
      (e) =>
        `${String(e.seq).padStart(4)}  ${e.at}  ${e.kind.padEnd(14)} ${e.manifestHash}  signed by ${e.signatures.map((s) => s.owner).join(', ') || '-'}`,
    );
    if (entries.length === 0) lines.push('(no manifest set yet)');
    if (verified !== undefined) {
      lines.push(
        `history verified: ${verified.length} transition(s), head ${verified.head}${verified.approvals ? ', owner approvals checked' : ' (chain only: the coordinator did not serve the manifests)'}`,
      );
    }
    ctx.io.out(lines.join('\n'));
  });
}
