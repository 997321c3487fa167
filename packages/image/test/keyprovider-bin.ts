/** Test entry point: `cloister keyprovider` without the rest of the CLI (skopeo runs it). */
import { runKeyprovider } from '@cloister/image';

process.exitCode = await runKeyprovider(
  process.stdin,
  (b) => process.stdout.write(b),
  (s) => process.stderr.write(s),
);
