// Shared fixtures of the CLI tests: a CLI runner over the register functions this package owns,
// sim hardware on disk, owner keys, and an in-process coordinator on a loopback port.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { createCoordinator, createLogger } from '@cloister/coordinator';
import type { CoordinatorOptions, RunningCoordinator } from '@cloister/coordinator';
import { generateSimHardware, simMeasurement, toHex } from '@cloister/evidence';
import type { ExitCode } from '@cloister/errors';
import type { CommandContext } from '../src/main.js';
import { reportError } from '../src/output.js';
import { generateOwnerKey } from '../src/client/local.js';
import { writeSimHardware } from '../src/sim-hardware.js';
import { registerKeygen } from '../src/commands/keygen.js';
import { registerManifest } from '../src/commands/manifest.js';
import { registerSecret } from '../src/commands/secret.js';
import { registerSim } from '../src/commands/sim.js';
import { registerStatus } from '../src/commands/status.js';
import { registerUp } from '../src/commands/up.js';
import { registerVerify } from '../src/commands/verify.js';

export interface CliRun {
  code: ExitCode;
  out: string;
  err: string;
  json: () => Record<string, unknown>;
}

/** Runs `cloister ARGS` with this package's commands, capturing output. */
export async function cli(args: readonly string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const io = {
    out: (t: string) => void (out += t.endsWith('\n') ? t : `${t}\n`),
    err: (t: string) => void (err += t.endsWith('\n') ? t : `${t}\n`),
  };
  const ctx: CommandContext = { io, exitCode: 0 };
  const program = new Command('cloister')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });
  for (const r of [
    registerVerify,
    registerKeygen,
    registerManifest,
    registerSecret,
    registerSim,
    registerStatus,
    registerUp,
  ])
    r(program, ctx);
  let code: ExitCode;
  try {
    await program.parseAsync([...args], { from: 'user' });
    code = ctx.exitCode;
  } catch (e) {
    code = reportError(io, e, args.includes('--json'));
  }
  return { code, out, err, json: () => JSON.parse(out) as Record<string, unknown> };
}

export async function tempDir(
  prefix = 'cloister-cli-',
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A fresh sim hardware directory. */
export async function makeSim(dir: string): Promise<string> {
  const sim = join(dir, 'sim');
  await writeSimHardware(sim, await generateSimHardware());
  return sim;
}

/** Measurement hex of a program run under the sim agent. */
export async function measure(
  executableBytes: Uint8Array,
  args: readonly string[],
): Promise<string> {
  return toHex(await simMeasurement(executableBytes, args));
}

export interface Deployment {
  dir: string;
  sim: string;
  ownerKey: string;
  ownerPub: string;
  coord: RunningCoordinator;
  close: () => Promise<void>;
}

/** Sim hardware, an owner key and a running coordinator (sim TEE) in a temp dir. */
export async function startDeployment(
  extra: Partial<CoordinatorOptions> = {},
): Promise<Deployment> {
  const { dir, cleanup } = await tempDir();
  const sim = await makeSim(dir);
  const k = await generateOwnerKey('alice', dir);
  const coord = await createCoordinator({
    dataDir: join(dir, 'data'),
    listen: '127.0.0.1:0',
    ownerKeyPem: k.publicKeyPem,
    simulation: { rootDir: sim },
    logger: createLogger('silent'),
    ...extra,
  });
  return {
    dir,
    sim,
    ownerKey: k.privateKeyPath,
    ownerPub: k.publicKeyPem,
    coord,
    close: async () => {
      await coord.close();
      await cleanup();
    },
  };
}

/** A small valid manifest on the sim TEE with one owner (alice) holding every role. */
export function simManifest(
  ownerPub: string,
  measurement = 'ab'.repeat(48),
): Record<string, unknown> {
  return {
    version: 1,
    trustDomain: 'test.local',
    packages: { app: { tee: 'sim', measurement } },
    workloads: { web: { package: 'app', env: { GREETING: '{{ string .secrets.greeting }}' } } },
    secrets: { greeting: { type: 'plain', userDefined: true } },
    owners: { alice: { publicKey: ownerPub, roles: ['update', 'secrets:greeting'] } },
    updates: { threshold: 1 },
    policy: { allowSimulation: true },
  };
}
