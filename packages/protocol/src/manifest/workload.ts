/**
 * Rendering a workload's files, environment and arguments from its templates (DESIGN §3,
 * "Activate a workload", step 3), and the dry run the coordinator does when a manifest is set:
 * every template is rendered against stand-in values of the right kinds, so an unknown secret,
 * a wrong encoder or a `raw` in an environment variable is reported with its JSON path before
 * any workload starts.
 */
import { fromBase64Url, utf8 } from '../bytes.js';
import { isCloisterError } from '@cloister/errors';
import { protocolError } from '../error-codes.js';
import { jsonPointer } from '../pointer.js';
import { parseTemplate, renderTemplate, renderTemplateText, templatePaths } from '../template.js';
import type { SecretValue, TemplateContext } from '../template.js';
import type { Manifest, Workload } from './schema.js';

/** One problem found in a manifest: where (JSON Pointer) and what. */
export interface ManifestProblem {
  /** JSON Pointer (RFC 6901) of the offending field, e.g. `/workloads/web/package`. */
  readonly path: string;
  readonly message: string;
  /** The error code a single-problem error would carry (schema, reference, template...). */
  readonly code?: string;
}

/** A workload's rendered launch parameters. */
export interface RenderedWorkload {
  /** Absolute path to content. */
  readonly files: Record<string, Uint8Array>;
  readonly env: Record<string, string>;
  readonly args: string[];
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function ownEntries(v: unknown): [string, unknown][] {
  return isObj(v) ? Object.entries(v) : [];
}

/** Visits every template of a (possibly not yet validated) workload with its JSON Pointer. */
function eachTemplate(
  name: string,
  w: unknown,
  visit: (source: string, path: string, target: 'file' | 'env' | 'arg', key: string) => void,
): void {
  if (!isObj(w)) return;
  for (const [p, v] of ownEntries(w['files'])) {
    if (typeof v === 'string') visit(v, jsonPointer('workloads', name, 'files', p), 'file', p);
  }
  for (const [k, v] of ownEntries(w['env'])) {
    if (typeof v === 'string') visit(v, jsonPointer('workloads', name, 'env', k), 'env', k);
  }
  const args = w['args'];
  if (Array.isArray(args)) {
    args.forEach((v: unknown, i) => {
      if (typeof v === 'string')
        visit(v, jsonPointer('workloads', name, 'args', i), 'arg', String(i));
    });
  }
}

/** Stand-in values of the right kind for every secret a manifest declares. */
function dryRunContext(manifest: unknown, workload: string): TemplateContext {
  const secrets: Record<string, SecretValue | null> = {};
  const m = isObj(manifest) ? manifest : {};
  for (const [name, s] of ownEntries(m['secrets'])) {
    if (!isObj(s)) continue;
    if (s['type'] === 'cert-ecdsa') {
      secrets[name] = {
        type: 'key-cert',
        certificate: utf8('dry-run'),
        privateKey: utf8('dry-run'),
        publicKey: utf8('dry-run'),
      };
    } else {
      secrets[name] = { type: 'bytes', value: utf8('dry-run') };
    }
  }
  const dummy = utf8('dry-run');
  return {
    secrets,
    mesh: { cert: dummy, key: dummy, rootCa: dummy, intermediateCa: dummy },
    workload: { name: workload },
    instance: { id: 'dry-run' },
  };
}

/**
 * Parses and renders every template of the manifest against stand-in values and returns the
 * problems (empty when all templates are fine). Used by `validateManifest`.
 */
export function templateProblems(manifest: unknown): ManifestProblem[] {
  const problems: ManifestProblem[] = [];
  const m = isObj(manifest) ? manifest : {};
  for (const [name, w] of ownEntries(m['workloads'])) {
    const ctx = dryRunContext(manifest, name);
    eachTemplate(name, w, (source, path, target) => {
      try {
        const t = parseTemplate(source);
        if (target === 'file') renderTemplate(t, ctx, 'file');
        else renderTemplateText(t, ctx, target);
      } catch (e) {
        if (!isCloisterError(e)) throw e;
        problems.push({ path, message: e.message, code: e.code });
      }
    });
  }
  return problems;
}

/**
 * Dry-runs every template of a manifest. Throws MANIFEST_INVALID whose `details.problems` lists
 * each failing template with its JSON Pointer.
 */
export function dryRunManifestTemplates(manifest: Manifest): void {
  const problems = templateProblems(manifest);
  if (problems.length > 0) {
    throw protocolError(
      'MANIFEST_INVALID',
      `${problems.length} template problem(s): ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`,
      { details: { problems } },
    );
  }
}

/**
 * Cap on everything one workload renders to (files, environment, arguments). Each template is
 * capped on its own, but a manifest may hold thousands of them: this keeps one activation's
 * bundle, and the memory the coordinator spends on it, bounded.
 */
const MAX_RENDERED_WORKLOAD = 64 * 1024 * 1024;

function workloadOf(manifest: Manifest, name: string): Workload {
  const w = Object.hasOwn(manifest.workloads, name) ? manifest.workloads[name] : undefined;
  if (w === undefined) {
    throw protocolError('TEMPLATE_INVALID_VALUE', `no workload "${name}" in the manifest`, {
      details: { path: jsonPointer('workloads', name) },
    });
  }
  return w;
}

/**
 * The dotted template paths a workload uses (e.g. `.mesh.key`, `.secrets.db`): lets the
 * coordinator know whether it must generate the mesh key and which secrets must have values.
 */
export function workloadTemplatePaths(manifest: Manifest, workload: string): Set<string> {
  const out = new Set<string>();
  eachTemplate(workload, workloadOf(manifest, workload), (source) => {
    for (const p of templatePaths(source)) out.add(p);
  });
  return out;
}

/**
 * Renders a workload's files, environment and arguments. `context.secrets` should hold every
 * secret the manifest declares (missing user-defined values as `null`). Errors carry the JSON
 * Pointer of the template in `details.field`.
 */
export function renderWorkload(
  manifest: Manifest,
  workload: string,
  context: TemplateContext,
): RenderedWorkload {
  const w = workloadOf(manifest, workload);
  const files: Record<string, Uint8Array> = {};
  const env: Record<string, string> = {};
  const args: string[] = [];
  let total = 0;
  const count = (n: number): void => {
    total += n;
    if (total > MAX_RENDERED_WORKLOAD) {
      throw protocolError(
        'TEMPLATE_INVALID_VALUE',
        `the workload renders to more than ${MAX_RENDERED_WORKLOAD} bytes`,
        { details: { limit: MAX_RENDERED_WORKLOAD } },
      );
    }
  };
  const wrap = (path: string, f: () => void): void => {
    try {
      f();
    } catch (e) {
      if (!isCloisterError(e)) throw e;
      throw protocolError(e.code as 'TEMPLATE_INVALID_VALUE', `${path}: ${e.message}`, {
        cause: e,
        details: { ...e.details, field: path },
      });
    }
  };
  for (const [p, v] of Object.entries(w.files ?? {})) {
    const path = jsonPointer('workloads', workload, 'files', p);
    wrap(path, () => {
      const content =
        typeof v === 'string'
          ? renderTemplate(v, context, 'file')
          : v.encoding === 'utf8'
            ? utf8(v.data)
            : fromBase64Url(v.data, path);
      count(content.length);
      files[p] = content;
    });
  }
  for (const [k, v] of Object.entries(w.env ?? {})) {
    wrap(jsonPointer('workloads', workload, 'env', k), () => {
      const value = renderTemplateText(v, context, 'env');
      count(value.length);
      env[k] = value;
    });
  }
  (w.args ?? []).forEach((v, i) => {
    wrap(jsonPointer('workloads', workload, 'args', i), () => {
      const value = renderTemplateText(v, context, 'arg');
      count(value.length);
      args.push(value);
    });
  });
  return { files, env, args };
}
