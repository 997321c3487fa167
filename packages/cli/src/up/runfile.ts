/**
 * `workloads.json`, the run-file of `cloister up` (docs/quickstart.md): which command each
 * workload of the manifest runs under its agent. It is deliberately not part of the manifest:
 * the manifest says what may run and with which secrets (it is attested and signed); the
 * run-file only says what to start on this machine, and a wrong one simply fails attestation.
 *
 *   {
 *     "workloads": {
 *       "web":    { "command": ["python3", "-m", "http.server", "8080"] },
 *       "client": { "command": ["python3", "-c", "..."], "oneShot": true, "instances": 1 }
 *     }
 *   }
 *
 * - `command`: the program and its arguments. Under the sim TEE the measurement is
 *   simMeasurement(program bytes, arguments), exactly what `cloister sim measure -- CMD...`
 *   prints, so the manifest's package must pin that value. The manifest's `args`, when present,
 *   replace the arguments at launch (the measured executable stays).
 * - `image` (instead of `command`): an OCI image (`oci:DIR[:TAG]`, relative to the directory of
 *   workloads.json, `docker-archive:FILE`, `docker://...`) run under runc by the agent after
 *   attestation (docs/images.md). The manifest's `image.manifestDigest` pins it, and the sim
 *   measurement is that of `runc image DIGEST` (`cloister sim measure runc image DIGEST`).
 * - `instances` (default 1, at most 64): how many agents to start for the workload.
 * - `oneShot` (default false): a job rather than a service; `up` finishes once every one-shot
 *   workload has exited (unless `--keep-running`).
 */
import { parseStrictJson } from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';
import { clientError } from '../client/error-codes.js';

export interface RunWorkload {
  /** Exactly one of `command` and `image`. */
  readonly command?: readonly [string, ...string[]];
  readonly image?: string;
  readonly instances: number;
  readonly oneShot: boolean;
}

export interface RunFile {
  readonly workloads: Readonly<Record<string, RunWorkload>>;
}

/** Parses and checks a run-file against the manifest; lists every problem with its path. */
export function parseRunFile(text: string, manifest: Manifest): RunFile {
  const problems: { path: string; message: string }[] = [];
  const fail = (): never => {
    throw clientError(
      'UP_RUNFILE_INVALID',
      `workloads.json: ${problems
        .slice(0, 3)
        .map((p) => `${p.path || '/'}: ${p.message}`)
        .join('; ')}`,
      { details: { problems } },
    );
  };
  let json: unknown;
  try {
    json = parseStrictJson(text);
  } catch (cause) {
    throw clientError('UP_RUNFILE_INVALID', 'workloads.json is not strict JSON', { cause });
  }
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(json)) {
    problems.push({ path: '', message: 'must be an object' });
    return fail();
  }
  for (const k of Object.keys(json)) {
    if (k !== 'workloads') problems.push({ path: `/${k}`, message: 'unknown property' });
  }
  const ws = json['workloads'];
  if (!isObj(ws) || Object.keys(ws).length === 0) {
    problems.push({
      path: '/workloads',
      message: 'must be an object naming at least one workload',
    });
    return fail();
  }
  const out: Record<string, RunWorkload> = {};
  for (const [name, w] of Object.entries(ws)) {
    const at = `/workloads/${name}`;
    if (!Object.hasOwn(manifest.workloads, name)) {
      problems.push({ path: at, message: 'the manifest has no such workload' });
      continue;
    }
    if (!isObj(w)) {
      problems.push({ path: at, message: 'must be an object' });
      continue;
    }
    for (const k of Object.keys(w)) {
      if (!['command', 'image', 'instances', 'oneShot'].includes(k)) {
        problems.push({ path: `${at}/${k}`, message: 'unknown property' });
      }
    }
    const cmd = w['command'];
    const image = w['image'];
    if (image !== undefined) {
      if (cmd !== undefined)
        problems.push({ path: at, message: 'give either command or image, not both' });
      if (typeof image !== 'string' || image.length === 0 || image.length > 1024)
        problems.push({ path: `${at}/image`, message: 'must be an image reference string' });
      else if (manifest.workloads[name]?.image?.manifestDigest === undefined)
        problems.push({
          path: `${at}/image`,
          message: 'the manifest must pin the image (image.manifestDigest)',
        });
    } else if (
      !Array.isArray(cmd) ||
      cmd.length === 0 ||
      cmd.length > 4096 ||
      !cmd.every((a) => typeof a === 'string' && !a.includes('\u0000')) ||
      (cmd[0] as string).length === 0
    ) {
      problems.push({
        path: `${at}/command`,
        message: 'must be a non-empty array of strings (program first)',
      });
    }
    const inst = w['instances'] ?? 1;
    if (typeof inst !== 'number' || !Number.isInteger(inst) || inst < 1 || inst > 64) {
      problems.push({ path: `${at}/instances`, message: 'must be an integer from 1 to 64' });
    }
    const max = manifest.workloads[name]?.maxInstances;
    if (typeof inst === 'number' && max !== undefined && inst > max) {
      problems.push({ path: `${at}/instances`, message: `the manifest allows at most ${max}` });
    }
    const oneShot = w['oneShot'] ?? false;
    if (typeof oneShot !== 'boolean')
      problems.push({ path: `${at}/oneShot`, message: 'must be a boolean' });
    out[name] = {
      ...(image === undefined
        ? { command: cmd as [string, ...string[]] }
        : { image: image as string }),
      instances: inst as number,
      oneShot: oneShot as boolean,
    };
  }
  if (problems.length > 0) fail();
  return { workloads: out };
}
