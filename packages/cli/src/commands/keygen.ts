/**
 * `cloister keygen NAME [--out DIR] [--json]`: makes an owner key pair, ECDSA P-256:
 * `DIR/NAME.pem` (PKCS#8 private key, mode 0600) and `DIR/NAME.pub.pem` (SPKI, for the
 * manifest's `owners` and for `cloister coordinator --owner-key`). Never overwrites a key.
 */
import type { Command } from 'commander';
import type { CommandContext } from '../main.js';
import { generateOwnerKey } from '../client/local.js';
import { printJson } from '../output.js';

/** Registers `cloister keygen`. */
export function registerKeygen(program: Command, ctx: CommandContext): void {
  program
    .command('keygen')
    .description('Make an owner key pair (ECDSA P-256): NAME.pem (private, 0600) and NAME.pub.pem')
    .argument('<name>', 'owner name (as in the manifest)')
    .option('--out <dir>', 'directory to write the keys to', '.')
    .option('--json', 'print one JSON document')
    .action(async (name: string, flags: { out: string; json?: boolean }) => {
      const r = await generateOwnerKey(name, flags.out);
      if (flags.json === true) printJson(ctx.io, { owner: name, ...r });
      else {
        ctx.io.out(
          `wrote ${r.privateKeyPath} (private, keep it secret) and ${r.publicKeyPath}\n` +
            `add the public key to the manifest as owners.${name}.publicKey`,
        );
      }
    });
}
