/**
 * Launching the unmodified program: inherited stdio, the bundle's environment, signals
 * forwarded, and the program's exit status turned into the agent's own (128 + signal number
 * when it was killed, as a shell reports it), so an orchestrator sees the program's outcome.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { agentError } from './error-codes.js';

export const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** What to run. `executable` is the file actually executed (the one that was measured). */
export interface LaunchSpec {
  readonly executable: string;
  /** argv[0] shown to the program. */
  readonly argv0: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Where the program's standard output goes (default: inherited). */
  readonly stdout?: ProgramStdout;
}

/**
 * The program's standard output: this process's (`inherit`), or its standard error, for a
 * caller whose own standard output is a machine-readable stream (`cloister up --json`).
 */
export type ProgramStdout = 'inherit' | 'stderr';

/** spawn's `stdio` for `stdout`: stdin and stderr are always inherited. */
export function programStdio(
  stdout: ProgramStdout | undefined,
): 'inherit' | ['inherit', 2, 'inherit'] {
  return stdout === 'stderr' ? ['inherit', 2, 'inherit'] : 'inherit';
}

export interface Launched {
  readonly child: ChildProcess;
  /** Resolves with the exit status to use (never rejects once started). */
  readonly exited: Promise<number>;
}

/** Resolves a command name as execvp would (PATH search for names without a slash). */
export function resolveExecutable(cmd: string, path = process.env['PATH'] ?? ''): string {
  const candidates = cmd.includes('/')
    ? [resolve(cmd)]
    : path
        .split(delimiter)
        .filter((d) => d.length > 0 && isAbsolute(d))
        .map((d) => join(d, cmd));
  for (const c of candidates) {
    try {
      if (statSync(c).isFile()) {
        accessSync(c, fsConstants.X_OK);
        return c;
      }
    } catch {
      // try the next PATH entry
    }
  }
  throw agentError('AGENT_SPAWN_FAILED', `program not found or not executable: ${cmd}`, {
    details: { command: cmd },
  });
}

/** Exit status of a finished child: its code, or 128 + signal number when killed. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal === null ? undefined : osConstants.signals[signal];
  return 128 + (n ?? 0);
}

/** Starts the program and forwards SIGINT, SIGTERM and SIGHUP to it until it exits. */
export function launch(spec: LaunchSpec): Promise<Launched> {
  return new Promise((resolveLaunch, rejectLaunch) => {
    const child = spawn(spec.executable, [...spec.args], {
      argv0: spec.argv0,
      env: { ...spec.env },
      stdio: programStdio(spec.stdout),
      ...(spec.cwd === undefined ? {} : { cwd: spec.cwd }),
    });
    const handlers = FORWARDED_SIGNALS.map((sig) => {
      const h = () => {
        child.kill(sig);
      };
      process.on(sig, h);
      return [sig, h] as const;
    });
    const detach = () => {
      for (const [sig, h] of handlers) process.off(sig, h);
    };
    let started = false;
    const exited = new Promise<number>((resolveExit) => {
      child.once('exit', (code, signal) => {
        detach();
        resolveExit(exitStatus(code, signal));
      });
    });
    child.once('spawn', () => {
      started = true;
      resolveLaunch({ child, exited });
    });
    child.once('error', (e) => {
      if (started) return;
      detach();
      rejectLaunch(
        agentError('AGENT_SPAWN_FAILED', `cannot start ${spec.executable}`, {
          cause: e,
          details: { command: spec.executable },
        }),
      );
    });
  });
}
