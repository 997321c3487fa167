/**
 * `cloister keyprovider`: the ocicrypt keyprovider `cmd` protocol on stdin/stdout, so that
 * `skopeo copy --encryption-key provider:cloister:COORDINATOR.pub` and
 * `--decryption-key provider:cloister` (with OCICRYPT_KEYPROVIDER_CONFIG naming this command)
 * produce and read Cloister's `provider.cloister` layer keys. Unwrapping needs the private key
 * in CLOISTER_KEYPROVIDER_KEY; inside the TEE the agent supplies it after attestation.
 */
import type { Command } from 'commander';
import { runKeyprovider, KEYPROVIDER_ENV } from '@cloister/image';
import type { CommandContext } from '../main.js';

/** Registers `cloister keyprovider`. */
export function registerKeyprovider(program: Command, ctx: CommandContext): void {
  program
    .command('keyprovider')
    .description(
      `ocicrypt keyprovider (cmd protocol on stdin/stdout); keys from ${KEYPROVIDER_ENV.publicKey} / ${KEYPROVIDER_ENV.privateKey}`,
    )
    .option('--json', 'accepted for uniformity: the protocol is always JSON')
    .action(async () => {
      const code = await runKeyprovider(
        process.stdin,
        (b) => process.stdout.write(b),
        (s) => ctx.io.err(s),
      );
      if (code !== 0) ctx.exitCode = 10;
    });
}
