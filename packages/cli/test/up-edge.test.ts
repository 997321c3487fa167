// `cloister up` and the local commands at their edges: interrupted start-ups, a directory
// already in use, a busy port, a crashing service, lax numbers, --json on usage errors, and
// files a local user could plant where keys and the root CA are written.
import { strict as assert } from 'node:assert';
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { chmod, mkdir, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { resolveExecutable } from '@cloister/agent';
import { isCloisterError } from '@cloister/errors';
import type { ExitCode } from '@cloister/errors';
import { generateOwnerKey, writeRootCa } from '../src/client/local.js';
import { registerCoordinator } from '../src/commands/coordinator.js';
import { main } from '../src/main.js';
import type { CommandContext } from '../src/main.js';
import { reportError } from '../src/output.js';
import { startUp } from '../src/up/runtime.js';
import { cli, measure, tempDir } from './helpers.js';

const entry = new URL('./cli-entry.ts', import.meta.url).pathname;

/** A listener holding a loopback port, as another program would. */
async function occupiedPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return { port: typeof a === 'object' && a !== null ? a.port : 0, server };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitFor(what: string, f: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An up directory whose manifest pins exactly these commands (and these image workloads). */
async function writeUpDir(
  dir: string,
  runs: Record<string, { command: string[]; oneShot?: boolean }>,
  images: Record<string, string> = {},
): Promise<void> {
  const owner = await generateOwnerKey('owner', dir);
  const packages: Record<string, unknown> = {};
  const workloads: Record<string, unknown> = {};
  for (const [name, r] of Object.entries(runs)) {
    const [cmd, ...args] = r.command as [string, ...string[]];
    const bytes = new Uint8Array(await readFile(resolveExecutable(cmd)));
    packages[name] = { tee: 'sim', measurement: await measure(bytes, args) };
    workloads[name] = { package: name };
  }
  for (const name of Object.keys(images)) {
    packages[name] = { tee: 'sim', measurement: 'ab'.repeat(48) };
    workloads[name] = {
      package: name,
      image: { ref: 'oci:image:v1', manifestDigest: `sha256:${'0'.repeat(64)}` },
    };
  }
  await writeFile(
    join(dir, 'manifest.json'),
    JSON.stringify({
      version: 1,
      trustDomain: 'edge.test',
      packages,
      workloads,
      owners: { owner: { publicKey: owner.publicKeyPem, roles: ['update'] } },
      policy: { allowSimulation: true },
    }),
  );
  await writeFile(
    join(dir, 'workloads.json'),
    JSON.stringify({
      workloads: {
        ...runs,
        ...Object.fromEntries(Object.entries(images).map(([n, image]) => [n, { image }])),
      },
    }),
  );
}

// A service that ignores SIGINT (as many servers do) and writes its pid where it is told.
const SERVICE = [
  "process.on('SIGINT', () => undefined);",
  "require('node:fs').writeFileSync(process.argv[1], String(process.pid));",
  'setInterval(() => undefined, 1000);',
].join('\n');

describe('cloister up: interrupted during start-up', () => {
  it(
    'SIGINT while a workload is still starting stops what already runs and exits cleanly',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-int-');
      try {
        const pidFile = join(t.dir, 'svc.pid');
        // `slow` is an image workload whose layout blocks on a FIFO: start-up hangs there, after
        // `svc` already runs, until the test writes to it.
        await writeUpDir(
          t.dir,
          { svc: { command: [process.execPath, '-e', SERVICE, pidFile] } },
          { slow: 'oci:image:v1' },
        );
        await mkdir(join(t.dir, 'image'));
        execFileSync('mkfifo', [join(t.dir, 'image', 'oci-layout')]);
        // Only resolved, never run: the image never opens.
        const bin = join(t.dir, 'bin');
        await mkdir(bin);
        await writeFile(join(bin, 'runc'), '#!/bin/sh\nexit 1\n');
        await chmod(join(bin, 'runc'), 0o755);

        const child = spawn(
          process.execPath,
          [
            '--conditions=source',
            '--import',
            'tsx',
            entry,
            'up',
            t.dir,
            '--keep-running',
            '--json',
          ],
          {
            env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
          child.once('exit', (code, signal) => r({ code, signal })),
        );
        let released = false;
        const release = async (): Promise<void> => {
          if (released) return;
          released = true;
          const fh = await open(join(t.dir, 'image', 'oci-layout'), 'w');
          await fh.close();
        };
        try {
          await waitFor('the service to run', async () => {
            try {
              await stat(pidFile);
              return true;
            } catch {
              return false;
            }
          });
          const svcPid = Number(await readFile(pidFile, 'utf8'));
          assert.ok(alive(svcPid));
          child.kill('SIGINT');
          // The service is stopped at once, although the other workload is still starting.
          await waitFor('the service to be stopped', () => Promise.resolve(!alive(svcPid)), 10_000);
          await release();
          const { code, signal } = await exited;
          assert.equal(signal, null, err);
          assert.notEqual(code, 0, err);
          assert.doesNotMatch(out, /"ready"/);
          await assert.rejects(stat(join(t.dir, '.cloister', 'up.json')));
          await assert.rejects(stat(join(t.dir, '.cloister', 'up.lock')));
        } finally {
          await release().catch(() => undefined);
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        }
      } finally {
        await t.cleanup();
      }
    },
  );
});

describe('cloister up: one run per directory', () => {
  it(
    'a second up on a directory in use is refused and leaves the first one alone',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-twice-');
      try {
        await writeUpDir(t.dir, { svc: { command: ['sleep', '600'] } });
        const first = await startUp(t.dir, { graceMs: 1000 });
        try {
          const upJson = await readFile(join(t.dir, '.cloister', 'up.json'), 'utf8');
          const r = await cli(['up', t.dir, '--json']);
          assert.equal(r.code, 2, r.err);
          const e = r.json()['error'] as { code: string; details: { pid: number } };
          assert.equal(e.code, 'CLI_USAGE');
          assert.equal(e.details.pid, process.pid);
          // The first run's state file is untouched.
          assert.equal(await readFile(join(t.dir, '.cloister', 'up.json'), 'utf8'), upJson);
        } finally {
          await first.stop();
        }
        // Once it stopped, the directory can be used again.
        const again = await startUp(t.dir, { graceMs: 1000 });
        await again.stop();
      } finally {
        await t.cleanup();
      }
    },
  );

  it(
    'a lock left by a process that no longer runs is taken over',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-stale-');
      try {
        await writeUpDir(t.dir, { svc: { command: ['sleep', '600'] } });
        const gone = spawn(process.execPath, ['-e', '0']);
        await new Promise((r) => gone.once('exit', r));
        await mkdir(join(t.dir, '.cloister'), { recursive: true });
        await writeFile(join(t.dir, '.cloister', 'up.lock'), `${String(gone.pid)}\n`);
        const up = await startUp(t.dir, { graceMs: 1000 });
        await up.stop();
        await assert.rejects(stat(join(t.dir, '.cloister', 'up.lock')));
      } finally {
        await t.cleanup();
      }
    },
  );
});

describe('cloister up and coordinator: a port already in use', () => {
  it(
    'up --port on a busy port is a usage error (exit 2) that says so',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-port-');
      const busy = await occupiedPort();
      try {
        await writeUpDir(t.dir, { svc: { command: ['sleep', '600'] } });
        const r = await cli(['up', t.dir, '--port', String(busy.port), '--json']);
        assert.equal(r.code, 2, r.out);
        const e = r.json()['error'] as { code: string; message: string };
        assert.equal(e.code, 'CLI_USAGE');
        assert.match(e.message, /in use/);
        await assert.rejects(stat(join(t.dir, '.cloister', 'up.json')));
        await assert.rejects(stat(join(t.dir, '.cloister', 'up.lock')));
      } finally {
        busy.server.close();
        await t.cleanup();
      }
    },
  );

  it(
    'coordinator --listen on a busy port is COORDINATOR_BAD_CONFIG (exit 2)',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-coord-');
      const busy = await occupiedPort();
      try {
        const k = await generateOwnerKey('owner', t.dir);
        const sim = join(t.dir, 'sim');
        assert.equal((await cli(['sim', 'init', sim, '--json'])).code, 0);
        let out = '';
        const io = { out: (s: string) => void (out += s), err: () => undefined };
        const ctx: CommandContext = { io, exitCode: 0 };
        const program = new Command('cloister').exitOverride();
        registerCoordinator(program, ctx);
        let code: ExitCode;
        try {
          await program.parseAsync(
            [
              'coordinator',
              '--data',
              join(t.dir, 'data'),
              '--owner-key',
              k.publicKeyPath,
              '--listen',
              `127.0.0.1:${busy.port}`,
              '--simulation',
              '--sim-root',
              sim,
              '--json',
            ],
            { from: 'user' },
          );
          code = ctx.exitCode;
        } catch (e) {
          code = reportError(io, e, true);
        }
        assert.equal(code, 2, out);
        const e = (JSON.parse(out) as { error: { code: string } }).error;
        assert.equal(e.code, 'COORDINATOR_BAD_CONFIG');
      } finally {
        busy.server.close();
        await t.cleanup();
      }
    },
  );
});

describe('cloister up: outcomes', () => {
  it('a service that crashes on its own makes up exit non-zero', { timeout: 60_000 }, async () => {
    const t = await tempDir('cloister-up-edge-crash-');
    try {
      await writeUpDir(t.dir, { svc: { command: ['false'] } });
      const r = await cli(['up', t.dir, '--json']);
      const docs = r.out.split(/\n(?=\{)/).map((x) => JSON.parse(x) as Record<string, unknown>);
      assert.equal(docs.at(-1)?.['event'], 'stopped', r.out);
      assert.equal((docs.at(-1)?.['instances'] as { status: number }[])[0]?.status, 1);
      assert.notEqual(r.code, 0);
    } finally {
      await t.cleanup();
    }
  });
});

describe('cloister up --json: standard output is only the JSON documents', () => {
  it("the programs' output goes to standard error", { timeout: 60_000 }, async () => {
    const t = await tempDir('cloister-up-edge-json-');
    try {
      await writeUpDir(t.dir, {
        job: {
          command: ['sh', '-c', 'echo said-on-stdout; echo said-on-stderr >&2'],
          oneShot: true,
        },
      });
      const child = spawn(
        process.execPath,
        ['--conditions=source', '--import', 'tsx', entry, 'up', t.dir, '--json'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0, err);
      const docs = out
        .trim()
        .split(/\n(?=\{)/)
        .map((x) => JSON.parse(x) as Record<string, unknown>);
      assert.deepEqual(
        docs.map((d) => d['event']),
        ['ready', 'stopped'],
        out,
      );
      assert.match(err, /said-on-stdout/);
      assert.match(err, /said-on-stderr/);
    } finally {
      await t.cleanup();
    }
  });
});

describe('command line edges', () => {
  it('--port takes only a decimal number from 0 to 65535', { timeout: 60_000 }, async () => {
    const t = await tempDir('cloister-up-edge-args-');
    try {
      await writeUpDir(t.dir, { svc: { command: ['sleep', '600'] } });
      for (const bad of ['', ' ', '1e3', '0x50', '80.0', '+80', '-1', '65536', 'http']) {
        const r = await cli(['up', t.dir, '--port', bad, '--json']);
        assert.equal(r.code, 2, JSON.stringify(bad));
        assert.equal((r.json()['error'] as { code: string }).code, 'CLI_USAGE');
      }
      await assert.rejects(stat(join(t.dir, '.cloister')));
    } finally {
      await t.cleanup();
    }
  });

  it(
    'with --json a usage error the parser finds is still one JSON document',
    { timeout: 60_000 },
    async () => {
      for (const argv of [
        ['up', '--json', '--bogus', 'x'],
        ['up', '--json'],
        ['keygen', '--json'],
        ['coordinator', '--json'],
      ]) {
        let out = '';
        const io = { out: (s: string) => void (out += s), err: () => undefined };
        assert.equal(await main(argv, io), 2, argv.join(' '));
        const doc = JSON.parse(out) as { error: { code: string; message: string } };
        assert.equal(doc.error.code, 'CLI_USAGE');
        assert.ok(doc.error.message.length > 0);
      }
    },
  );

  it('a --json after -- belongs to the program, not to cloister', { timeout: 60_000 }, async () => {
    let out = '';
    let err = '';
    const io = { out: (s: string) => void (out += s), err: (s: string) => void (err += s) };
    const code = await main(['sim', 'measure', '--', '/nonexistent/app', '--json'], io);
    assert.equal(code, 2);
    assert.equal(out, '');
    assert.match(err, /CLI_FILE_NOT_FOUND/);
  });
});

describe('files a local user could plant', () => {
  it(
    'writeRootCa does not write through a file or symlink planted at its temporary name',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-tmp-');
      try {
        const victim = join(t.dir, 'victim');
        await writeFile(victim, 'precious\n');
        const target = join(t.dir, 'root-ca.pem');
        await symlink(victim, `${target}.${process.pid}.tmp`);
        await writeRootCa(target, '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n');
        assert.equal(await readFile(victim, 'utf8'), 'precious\n');
        assert.match(await readFile(target, 'utf8'), /BEGIN CERTIFICATE/);
        assert.equal((await stat(target)).isFile(), true);
      } finally {
        await t.cleanup();
      }
    },
  );

  it(
    'keygen refuses when NAME.pub.pem exists and leaves no private key behind',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-keygen-');
      try {
        await writeFile(join(t.dir, 'alice.pub.pem'), 'an older public key\n');
        const r = await cli(['keygen', 'alice', '--out', t.dir, '--json']);
        assert.equal(r.code, 2);
        assert.equal((r.json()['error'] as { code: string }).code, 'CLI_USAGE');
        await assert.rejects(stat(join(t.dir, 'alice.pem')));
        // And a retry after the user moved the old file away works.
        await rm(join(t.dir, 'alice.pub.pem'));
        const again = await cli(['keygen', 'alice', '--out', t.dir, '--json']);
        assert.equal(again.code, 0, again.out);
      } finally {
        await t.cleanup();
      }
    },
  );

  it(
    'up refuses an owner.pub.pem without owner.pem and creates no key',
    { timeout: 60_000 },
    async () => {
      const t = await tempDir('cloister-up-edge-ownerpub-');
      try {
        await writeUpDir(t.dir, { svc: { command: ['sleep', '600'] } });
        await rm(join(t.dir, 'owner.pem'));
        await assert.rejects(startUp(t.dir), (e: unknown) => isCloisterError(e));
        await assert.rejects(stat(join(t.dir, 'owner.pem')));
      } finally {
        await t.cleanup();
      }
    },
  );
});
