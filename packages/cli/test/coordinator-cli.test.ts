// `cloister coordinator` flags that are checked before anything starts: --instance-retention.
import { strict as assert } from 'node:assert';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { isCloisterError } from '@cloister/errors';
import type { ExitCode } from '@cloister/errors';
import { parseDuration, registerCoordinator } from '../src/commands/coordinator.js';
import type { CommandContext } from '../src/main.js';
import { reportError } from '../src/output.js';
import { tempDir } from './helpers.js';

/** Runs `cloister coordinator ARGS --json` and returns the exit code and the JSON printed. */
async function coordinatorCli(
  args: readonly string[],
): Promise<{ code: ExitCode; json: Record<string, unknown> }> {
  let out = '';
  const io = { out: (t: string) => void (out += t), err: () => undefined };
  const ctx: CommandContext = { io, exitCode: 0 };
  const program = new Command('cloister').exitOverride().configureOutput({
    writeOut: io.out,
    writeErr: io.err,
  });
  registerCoordinator(program, ctx);
  const argv = ['coordinator', ...args, '--json'];
  let code: ExitCode;
  try {
    await program.parseAsync(argv, { from: 'user' });
    code = ctx.exitCode;
  } catch (e) {
    code = reportError(io, e, true);
  }
  return { code, json: JSON.parse(out) as Record<string, unknown> };
}

describe('cloister coordinator --instance-retention', () => {
  it('parses 30s, 15m, 24h and 7d', () => {
    assert.equal(parseDuration('--instance-retention', '30s'), 30_000);
    assert.equal(parseDuration('--instance-retention', '15m'), 900_000);
    assert.equal(parseDuration('--instance-retention', '24h'), 86_400_000);
    assert.equal(parseDuration('--instance-retention', '7d'), 604_800_000);
    assert.equal(parseDuration('--instance-retention', '1s'), 1_000);
  });

  it('refuses zero, negative, fractional, unitless and unknown durations with CLI_USAGE', () => {
    for (const bad of [
      '0s',
      '0d',
      '-1d',
      '+1d',
      '1.5h',
      '7',
      'd',
      '',
      '7w',
      '7 d',
      ' 7d',
      '7d ',
      '1e3s',
      '7D',
      '99999999999999999d',
    ]) {
      assert.throws(
        () => parseDuration('--instance-retention', bad),
        (e: unknown) =>
          isCloisterError(e) &&
          e.code === 'CLI_USAGE' &&
          e.kind === 'usage' &&
          e.message.includes('--instance-retention') &&
          e.details?.['actual'] === bad,
        JSON.stringify(bad),
      );
    }
  });

  it('a bad duration fails the command with exit code 2 before anything starts', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const base = ['--data', join(dir, 'data'), '--owner-key', join(dir, 'missing.pem')];
      const bad = await coordinatorCli([...base, '--instance-retention', '0s']);
      assert.equal(bad.code, 2);
      assert.equal((bad.json['error'] as { code: string }).code, 'CLI_USAGE');
      // A good one passes, and the next check (the owner key file) is what fails.
      const good = await coordinatorCli([...base, '--instance-retention', '12h']);
      assert.equal(good.code, 2);
      assert.equal((good.json['error'] as { code: string }).code, 'COORDINATOR_BAD_CONFIG');
    } finally {
      await cleanup();
    }
  });
});
