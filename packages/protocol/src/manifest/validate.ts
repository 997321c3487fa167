/**
 * Manifest validation (DESIGN §4): the JSON Schema, then the rules a schema cannot express
 * (cross-references between sections, key types, thresholds), then a dry run of every template.
 * All problems are collected, each with the JSON Pointer of its field, and reported in one
 * error, so an owner fixes a manifest in one round instead of one error at a time.
 */
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import { isCloisterError } from '@cloister/errors';
import { fromBase64Url, fromPem } from '../bytes.js';
import { protocolError } from '../error-codes.js';
import { ownerKeyType, recoveryKeyType } from '../keys.js';
import { jsonPointer } from '../pointer.js';
import {
  FileValueSchema,
  LiteralFileSchema,
  ManifestSchema,
  PACKAGE_SCHEMAS,
  SECRET_SCHEMAS,
} from './schema.js';
import type { Manifest } from './schema.js';
import { parseStrictJson } from './strict-json.js';
import type { StrictJsonOptions } from './strict-json.js';
import { templateProblems } from './workload.js';
import type { ManifestProblem } from './workload.js';

const MAX_PROBLEMS = 200;

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const entries = (v: unknown): [string, unknown][] => (isObj(v) ? Object.entries(v) : []);
const has = (v: unknown, k: string): boolean => isObj(v) && Object.hasOwn(v, k);
const get = (v: unknown, k: string): unknown =>
  isObj(v) && Object.hasOwn(v, k) ? v[k] : undefined;

function schemaErrors(schema: TSchema, value: unknown, prefix: string): ManifestProblem[] {
  const out: ManifestProblem[] = [];
  for (const e of Value.Errors(schema, value)) {
    out.push({ path: prefix + e.path, message: e.message, code: 'schema' });
    if (out.length >= MAX_PROBLEMS) break;
  }
  return out;
}

/** Replaces "expected union value" errors of discriminated unions with the variant's errors. */
function discriminated(
  sectionPath: string,
  section: unknown,
  tag: string,
  variants: Readonly<Record<string, TSchema>>,
): ManifestProblem[] {
  const out: ManifestProblem[] = [];
  for (const [name, v] of entries(section)) {
    const base = `${sectionPath}${jsonPointer(name)}`;
    if (!isObj(v)) {
      out.push({ path: base, message: 'Expected object', code: 'schema' });
      continue;
    }
    const t = get(v, tag);
    const schema = typeof t === 'string' && Object.hasOwn(variants, t) ? variants[t] : undefined;
    if (schema === undefined) {
      out.push({
        path: `${base}/${tag}`,
        message: `must be one of ${Object.keys(variants).join(', ')}`,
        code: 'schema',
      });
      continue;
    }
    out.push(...schemaErrors(schema, v, base));
  }
  return out;
}

function schemaProblems(json: unknown): ManifestProblem[] {
  const all = schemaErrors(ManifestSchema, json, '');
  // Union members are re-checked against the variant their tag selects, for precise messages.
  const unionRoots: RegExp[] = [
    /^\/packages\/[^/]+/,
    /^\/secrets\/[^/]+/,
    /^\/workloads\/[^/]+\/files\/[^/]+/,
  ];
  // A member whose *name* breaks the record's key pattern is reported at its own path as an
  // unexpected property: keep those, drop the rest of the union noise.
  const kept = all.filter(
    (p) =>
      !unionRoots.some((r) => {
        const m = r.exec(p.path);
        return m !== null && !(m[0] === p.path && p.message === 'Unexpected property');
      }),
  );
  const out = [...kept];
  out.push(...discriminated('/packages', get(json, 'packages'), 'tee', PACKAGE_SCHEMAS));
  out.push(...discriminated('/secrets', get(json, 'secrets'), 'type', SECRET_SCHEMAS));
  for (const [w, wl] of entries(get(json, 'workloads'))) {
    for (const [p, f] of entries(get(wl, 'files'))) {
      const path = jsonPointer('workloads', w, 'files', p);
      if (isObj(f)) {
        out.push(...schemaErrors(LiteralFileSchema, f, path));
        // Literal content is decoded only when a workload activates: check it now, so a typo
        // is reported when the manifest is set instead of failing every activation later.
        const data = get(f, 'data');
        if (get(f, 'encoding') === 'base64url' && typeof data === 'string') {
          try {
            fromBase64Url(data);
          } catch (e) {
            if (!isCloisterError(e)) throw e;
            out.push({
              path: `${path}/data`,
              message: 'not unpadded, canonical base64url',
              code: 'schema',
            });
          }
        }
      } else if (!Value.Check(FileValueSchema, f))
        out.push({
          path,
          message: 'must be a template string or { data, encoding }',
          code: 'schema',
        });
    }
  }
  // Key names that fail a record's pattern are reported by TypeBox at the member path; keep them.
  const seen = new Set<string>();
  return out.filter((p) => {
    const k = `${p.path}\u0000${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

/**
 * An IPv4 dotted quad (no leading zeros, which some read as octal) or an IPv6 address of 16-bit
 * hex groups, at most one `::` (RFC 4291 §2.2 forms 1 and 2). The schema's pattern only limits
 * the characters; the certificate is made when the manifest is set, and an address it cannot
 * encode must be a validation problem with its path, not a failed set. The mixed form
 * (`::ffff:192.0.2.1`, §2.2 form 3) is refused: the certificate library in use encodes its
 * dotted part as if it were one hex group, so the certificate would name another address.
 */
function isIpAddress(s: string): boolean {
  if (!s.includes(':')) return IPV4.test(s);
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === '' ? [] : h.split(':')));
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? groups.length <= 7 : groups.length === 8;
}

function referenceProblems(m: unknown): ManifestProblem[] {
  const out: ManifestProblem[] = [];
  const add = (path: string, message: string): void => {
    out.push({ path, message, code: 'reference' });
  };
  const packages = get(m, 'packages');
  const workloads = get(m, 'workloads');
  const secrets = get(m, 'secrets');
  const allowSim = get(get(m, 'policy'), 'allowSimulation') === true;

  // Packages: an identity that pins nothing would accept any code on that TEE.
  for (const [name, p] of entries(packages)) {
    const at = (f: string): string => jsonPointer('packages', name, f);
    switch (get(p, 'tee')) {
      case 'sgx':
        if (
          !has(p, 'mrenclave') &&
          !(has(p, 'mrsigner') && has(p, 'productId') && has(p, 'minSvn'))
        )
          add(at('mrenclave'), 'pin the enclave: mrenclave, or mrsigner with productId and minSvn');
        break;
      case 'tdx':
        if (!has(p, 'mrtd')) add(at('mrtd'), 'pin the TD: mrtd is required');
        break;
      case 'sev-snp':
        // HOST_DATA is chosen by the host at launch: alone it says nothing about the guest code.
        if (!has(p, 'measurement'))
          add(at('measurement'), 'pin the guest: measurement is required');
        break;
      case 'sim':
        if (!allowSim)
          add(at('tee'), 'a sim package needs policy.allowSimulation = true (development only)');
        break;
      default:
        break;
    }
  }

  // Workloads.
  for (const [name, w] of entries(workloads)) {
    const at = (...t: (string | number)[]): string => jsonPointer('workloads', name, ...t);
    const pkg = get(w, 'package');
    if (typeof pkg === 'string' && !has(packages, pkg))
      add(at('package'), `names the unknown package "${pkg}"`);
    const mesh = get(w, 'mesh');
    const ingress = get(mesh, 'ingress');
    const inPorts = new Set<unknown>();
    if (Array.isArray(ingress)) {
      ingress.forEach((r: unknown, i) => {
        const port = get(r, 'port');
        if (inPorts.has(port))
          add(at('mesh', 'ingress', i, 'port'), `port ${String(port)} is listed twice`);
        inPorts.add(port);
      });
    }
    const egress = get(mesh, 'egress');
    const listens = new Set<unknown>();
    if (Array.isArray(egress)) {
      egress.forEach((r: unknown, i) => {
        const target = get(r, 'workload');
        const port = get(r, 'port');
        const listen = get(r, 'listen');
        if (typeof listen === 'string') {
          const [, portText] = listen.split(':');
          const n = Number(portText);
          if (!(n >= 1 && n <= 65535))
            add(at('mesh', 'egress', i, 'listen'), 'port must be 1-65535');
        }
        if (listens.has(listen))
          add(at('mesh', 'egress', i, 'listen'), 'listen address used twice');
        listens.add(listen);
        if (typeof target !== 'string') return;
        if (!has(workloads, target)) {
          add(at('mesh', 'egress', i, 'workload'), `names the unknown workload "${target}"`);
          return;
        }
        const theirs = get(get(get(workloads, target), 'mesh'), 'ingress');
        const ok = Array.isArray(theirs) && theirs.some((x: unknown) => get(x, 'port') === port);
        if (!ok)
          add(
            at('mesh', 'egress', i, 'port'),
            `workload "${target}" has no mesh ingress on port ${String(port)}`,
          );
      });
    }
    for (const [path, v] of entries(get(w, 'volumes'))) {
      const s = get(v, 'secret');
      if (typeof s !== 'string') continue;
      const sec = get(secrets, s);
      if (sec === undefined) add(at('volumes', path, 'secret'), `names the unknown secret "${s}"`);
      else if (get(sec, 'type') !== 'symmetric' || get(sec, 'bits') !== 256)
        add(at('volumes', path, 'secret'), `secret "${s}" must be symmetric with 256 bits`);
    }
  }

  // Secrets.
  for (const [name, s] of entries(secrets)) {
    const at = (f: string): string => jsonPointer('secrets', name, f);
    const type = get(s, 'type');
    const user = get(s, 'userDefined') === true;
    if (type === 'plain' && !user)
      add(at('userDefined'), 'a plain secret is uploaded by an owner: set userDefined to true');
    if (type === 'cert-ecdsa' && user)
      add(at('userDefined'), 'certificate secrets are generated; they cannot be user-defined');
    if (user && get(s, 'perInstance') === true)
      add(at('perInstance'), 'a user-defined secret has one value; it cannot be per instance');
    const ips = type === 'cert-ecdsa' ? get(s, 'ipAddresses') : undefined;
    if (Array.isArray(ips)) {
      ips.forEach((ip: unknown, i) => {
        if (typeof ip === 'string' && !isIpAddress(ip))
          out.push({
            path: jsonPointer('secrets', name, 'ipAddresses', i),
            message: 'not an IPv4 or IPv6 address',
            code: 'schema',
          });
      });
    }
  }

  // Owners: key types, duplicate keys (one person counted twice toward a threshold), roles.
  const ownerKeys = new Map<string, string>();
  let updaters = 0;
  for (const [name, o] of entries(get(m, 'owners'))) {
    const pem = get(o, 'publicKey');
    if (typeof pem === 'string') {
      try {
        ownerKeyType(pem);
        const k = fromPem(pem, 'PUBLIC KEY').join(',');
        const prev = ownerKeys.get(k);
        if (prev !== undefined)
          add(jsonPointer('owners', name, 'publicKey'), `the same key as owner "${prev}"`);
        else ownerKeys.set(k, name);
      } catch (e) {
        if (!isCloisterError(e)) throw e;
        add(jsonPointer('owners', name, 'publicKey'), e.message);
      }
    }
    const roles = get(o, 'roles');
    if (!Array.isArray(roles)) continue;
    roles.forEach((r: unknown, i) => {
      if (typeof r !== 'string') return;
      if (r === 'update') updaters++;
      const [kind, target] = r.split(':');
      if (kind === 'secrets' && target !== undefined) {
        const sec = get(secrets, target);
        if (sec === undefined)
          add(jsonPointer('owners', name, 'roles', i), `names the unknown secret "${target}"`);
        else if (get(sec, 'userDefined') !== true)
          add(jsonPointer('owners', name, 'roles', i), `secret "${target}" is not user-defined`);
      }
      if (kind === 'package' && target !== undefined && !has(packages, target))
        add(jsonPointer('owners', name, 'roles', i), `names the unknown package "${target}"`);
    });
  }
  const threshold = get(get(m, 'updates'), 'threshold');
  if (typeof threshold === 'number' && threshold > updaters)
    add(
      '/updates/threshold',
      `threshold ${threshold} exceeds the ${updaters} owner(s) with role "update"`,
    );

  // Recovery.
  const recovery = get(m, 'recovery');
  const recKeys = new Map<string, string>();
  for (const [name, pem] of entries(get(recovery, 'keys'))) {
    if (typeof pem !== 'string') continue;
    try {
      recoveryKeyType(pem);
      const k = fromPem(pem, 'PUBLIC KEY').join(',');
      const prev = recKeys.get(k);
      if (prev !== undefined)
        add(jsonPointer('recovery', 'keys', name), `the same key as "${prev}"`);
      else recKeys.set(k, name);
    } catch (e) {
      if (!isCloisterError(e)) throw e;
      add(jsonPointer('recovery', 'keys', name), e.message);
    }
  }
  const rt = get(recovery, 'threshold');
  const nKeys = entries(get(recovery, 'keys')).length;
  if (typeof rt === 'number' && rt > nKeys)
    add('/recovery/threshold', `threshold ${rt} exceeds the ${nKeys} recovery key(s)`);
  return out;
}

/**
 * Every problem of a manifest (schema, references, templates), each with its JSON Pointer;
 * empty when the manifest is valid. For linting: to accept a manifest use `validateManifest`.
 */
export function listManifestProblems(json: unknown): ManifestProblem[] {
  if (!isObj(json))
    return [{ path: '', message: 'the manifest must be a JSON object', code: 'schema' }];
  const problems = [...schemaProblems(json), ...referenceProblems(json), ...templateProblems(json)];
  return problems.slice(0, MAX_PROBLEMS);
}

/**
 * Validates a parsed manifest and returns it typed. Throws one MANIFEST_INVALID error whose
 * `details.problems` lists every problem found (path + message).
 */
export function validateManifest(json: unknown): Manifest {
  const problems = listManifestProblems(json);
  if (problems.length > 0) {
    const head = problems
      .slice(0, 5)
      .map((p) => `${p.path || '/'}: ${p.message}`)
      .join('; ');
    throw protocolError(
      'MANIFEST_INVALID',
      `the manifest has ${problems.length} problem(s): ${head}${problems.length > 5 ? '; ...' : ''}`,
      { details: { problems } },
    );
  }
  return json as Manifest;
}

/**
 * Parses manifest text strictly (no duplicate keys, bounded size and nesting; see
 * `parseStrictJson`) and validates it.
 */
export function parseManifestText(text: string, options?: StrictJsonOptions): Manifest {
  return validateManifest(parseStrictJson(text, options));
}
