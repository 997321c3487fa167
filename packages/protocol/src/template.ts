/**
 * Cloister templates: a logic-free language for files, environment variables and arguments.
 *
 * A template is text with actions `{{ encoder .path }}`: exactly one encoder (`pem`, `hex`,
 * `base64`, `raw`, `string`) and one dotted path, nothing else: no conditionals, pipes, function
 * calls or variables. Keeping it this small means a template can be checked completely when the
 * manifest is set (a dry run), so a typo is reported with its JSON path then, not as a failed
 * activation later, and a template can never compute anything from a secret.
 *
 * Values (see docs/manifest.md):
 *   .secrets.<name>                  symmetric / plain secrets: bytes
 *   .secrets.<name>.cert|.private|.public   cert-ecdsa secrets: certificate, PKCS#8 key, SPKI
 *   .mesh.cert  .mesh.chain  .mesh.key  .mesh.rootCa  .mesh.intermediateCa
 *   .workload.name  .instance.id     text
 *
 * Encoders: `pem` (certificates and keys), `hex` and `base64` (bytes, text, DER of certificates
 * and keys), `raw` (the bytes themselves; files only, since environment and arguments cannot
 * hold arbitrary bytes), `string` (bytes that are UTF-8 without NUL, and text).
 */
import { concatBytes, toBase64, toHex, toPem, utf8 } from './bytes.js';
import { protocolError } from './error-codes.js';

export const TEMPLATE_ENCODERS = ['pem', 'hex', 'base64', 'raw', 'string'] as const;
export type TemplateEncoder = (typeof TEMPLATE_ENCODERS)[number];

/** Where a rendered template goes: file contents may be binary, env and args must be text. */
export type TemplateTarget = 'file' | 'env' | 'arg';

export interface TemplateText {
  readonly type: 'text';
  readonly text: string;
}
export interface TemplateAction {
  readonly type: 'action';
  readonly encoder: TemplateEncoder;
  /** Path segments without dots: `.secrets.apiKey` is `['secrets', 'apiKey']`. */
  readonly path: readonly string[];
  /** Offset of `{{` in the source, for error messages. */
  readonly offset: number;
}
export interface ParsedTemplate {
  readonly source: string;
  readonly parts: readonly (TemplateText | TemplateAction)[];
}

/** A secret's value as the coordinator holds it. */
export type SecretValue =
  | { readonly type: 'bytes'; readonly value: Uint8Array }
  | {
      readonly type: 'key-cert';
      /** Certificate, DER. */
      readonly certificate: Uint8Array;
      /** Private key, PKCS#8 DER. */
      readonly privateKey: Uint8Array;
      /** Public key, SubjectPublicKeyInfo DER. */
      readonly publicKey: Uint8Array;
    };

/** Everything a template may refer to. DER everywhere; absent values fail at render time. */
export interface TemplateContext {
  /** Every secret the manifest declares; `null` when it has no value yet (user-defined). */
  readonly secrets: Readonly<Record<string, SecretValue | null>>;
  readonly mesh: {
    /** The instance's mesh certificate (leaf), DER. */
    readonly cert?: Uint8Array;
    /** The mesh private key (PKCS#8 DER); only when the coordinator generated it. */
    readonly key?: Uint8Array;
    readonly rootCa?: Uint8Array;
    readonly intermediateCa?: Uint8Array;
  };
  readonly workload: { readonly name: string };
  readonly instance: { readonly id: string };
}

type ValueKind = 'bytes' | 'text' | 'certificate' | 'chain' | 'private-key' | 'public-key';
type Value =
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'text'; text: string }
  | { kind: 'certificate'; der: Uint8Array }
  | { kind: 'chain'; ders: Uint8Array[] }
  | { kind: 'private-key'; der: Uint8Array }
  | { kind: 'public-key'; der: Uint8Array };

const MAX_TEMPLATE = 1_000_000;
const MAX_ACTIONS = 1000;
/**
 * Caps on what one template renders to. An action can be larger than its source (hex doubles a
 * 1 MiB plain secret) and a template holds up to 1000 actions, so without a cap one activation
 * could make the coordinator build gigabytes and run out of memory. A file may be as large as an
 * activation bundle can carry (16 MB of base64url); an environment variable or argument as large
 * as one string the kernel passes to exec (MAX_ARG_STRLEN, 128 KiB).
 */
const MAX_RENDERED: Readonly<Record<TemplateTarget, number>> = {
  file: 12_000_000,
  env: 131_072,
  arg: 131_072,
};
const IDENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/**
 * Parses a template. Throws TEMPLATE_SYNTAX (details: offset) for an unclosed `{{`, an unknown
 * encoder, a missing or malformed path, or anything besides one encoder and one path.
 */
export function parseTemplate(source: string): ParsedTemplate {
  if (source.length > MAX_TEMPLATE) {
    throw protocolError('TEMPLATE_SYNTAX', `template longer than ${MAX_TEMPLATE} characters`, {
      details: { offset: MAX_TEMPLATE },
    });
  }
  const parts: (TemplateText | TemplateAction)[] = [];
  let pos = 0;
  let actions = 0;
  while (pos < source.length) {
    const open = source.indexOf('{{', pos);
    if (open < 0) {
      parts.push({ type: 'text', text: source.slice(pos) });
      break;
    }
    if (open > pos) parts.push({ type: 'text', text: source.slice(pos, open) });
    const close = source.indexOf('}}', open + 2);
    if (close < 0) {
      throw protocolError('TEMPLATE_SYNTAX', `unclosed "{{" at offset ${open}`, {
        details: { offset: open },
      });
    }
    if (++actions > MAX_ACTIONS) {
      throw protocolError('TEMPLATE_SYNTAX', `more than ${MAX_ACTIONS} actions`, {
        details: { offset: open },
      });
    }
    const inner = source.slice(open + 2, close);
    const words = inner
      .trim()
      .split(/[ \t]+/)
      .filter((w) => w.length > 0);
    if (words.length !== 2 || /[\r\n]/.test(inner)) {
      throw protocolError(
        'TEMPLATE_SYNTAX',
        `action at offset ${open} must be "{{ encoder .path }}" (one encoder, one path, one line)`,
        { details: { offset: open } },
      );
    }
    const [encoder, rawPath] = words as [string, string];
    if (!(TEMPLATE_ENCODERS as readonly string[]).includes(encoder)) {
      throw protocolError(
        'TEMPLATE_SYNTAX',
        `unknown encoder "${encoder}" at offset ${open}; use one of ${TEMPLATE_ENCODERS.join(', ')}`,
        { details: { offset: open, encoder } },
      );
    }
    const segs = rawPath.split('.');
    if (segs[0] !== '' || segs.length < 2 || !segs.slice(1).every((s) => IDENT.test(s))) {
      throw protocolError(
        'TEMPLATE_SYNTAX',
        `"${rawPath}" at offset ${open} is not a path like .secrets.name`,
        { details: { offset: open } },
      );
    }
    parts.push({
      type: 'action',
      encoder: encoder as TemplateEncoder,
      path: segs.slice(1),
      offset: open,
    });
    pos = close + 2;
  }
  return { source, parts };
}

function fail(
  code: 'TEMPLATE_INVALID_VALUE' | 'TEMPLATE_VALUE_MISSING',
  a: TemplateAction,
  msg: string,
): never {
  throw protocolError(code, `.${a.path.join('.')} (offset ${a.offset}): ${msg}`, {
    details: { offset: a.offset, path: `.${a.path.join('.')}` },
  });
}

const own = <T>(rec: Readonly<Record<string, T>>, key: string): T | undefined =>
  Object.hasOwn(rec, key) ? rec[key] : undefined;

function resolve(a: TemplateAction, ctx: TemplateContext): Value {
  const [root, name, field, ...rest] = a.path;
  if (rest.length > 0) fail('TEMPLATE_INVALID_VALUE', a, 'path is too long');
  switch (root) {
    case 'secrets': {
      if (name === undefined) fail('TEMPLATE_INVALID_VALUE', a, 'name a secret: .secrets.<name>');
      if (!Object.hasOwn(ctx.secrets, name)) fail('TEMPLATE_INVALID_VALUE', a, 'no such secret');
      const s = own(ctx.secrets, name);
      if (s === undefined) fail('TEMPLATE_INVALID_VALUE', a, 'no such secret');
      if (s === null) {
        if (field !== undefined && field !== 'cert' && field !== 'private' && field !== 'public')
          fail('TEMPLATE_INVALID_VALUE', a, `unknown field "${field}"`);
        fail('TEMPLATE_VALUE_MISSING', a, 'the secret has no value yet');
      }
      if (s.type === 'bytes') {
        if (field !== undefined)
          fail('TEMPLATE_INVALID_VALUE', a, 'this secret has no fields; drop the last segment');
        return { kind: 'bytes', bytes: s.value };
      }
      switch (field) {
        case 'cert':
          return { kind: 'certificate', der: s.certificate };
        case 'private':
          return { kind: 'private-key', der: s.privateKey };
        case 'public':
          return { kind: 'public-key', der: s.publicKey };
        case undefined:
        default:
          return fail(
            'TEMPLATE_INVALID_VALUE',
            a,
            'a certificate secret needs a field: .cert, .private or .public',
          );
      }
    }
    case 'mesh': {
      if (field !== undefined) fail('TEMPLATE_INVALID_VALUE', a, 'path is too long');
      const m = ctx.mesh;
      const need = <T>(v: T | undefined): T =>
        v === undefined ? fail('TEMPLATE_VALUE_MISSING', a, 'not available here') : v;
      switch (name) {
        case 'cert':
          return { kind: 'certificate', der: need(m.cert) };
        case 'chain':
          return { kind: 'chain', ders: [need(m.cert), need(m.intermediateCa)] };
        case 'key':
          return { kind: 'private-key', der: need(m.key) };
        case 'rootCa':
          return { kind: 'certificate', der: need(m.rootCa) };
        case 'intermediateCa':
          return { kind: 'certificate', der: need(m.intermediateCa) };
        case undefined:
        default:
          return fail(
            'TEMPLATE_INVALID_VALUE',
            a,
            'mesh values are cert, chain, key, rootCa, intermediateCa',
          );
      }
    }
    case 'workload':
      if (name !== 'name' || field !== undefined)
        fail('TEMPLATE_INVALID_VALUE', a, 'the only workload value is .workload.name');
      return { kind: 'text', text: ctx.workload.name };
    case 'instance':
      if (name !== 'id' || field !== undefined)
        fail('TEMPLATE_INVALID_VALUE', a, 'the only instance value is .instance.id');
      return { kind: 'text', text: ctx.instance.id };
    case undefined:
    default:
      return fail(
        'TEMPLATE_INVALID_VALUE',
        a,
        'paths start with .secrets, .mesh, .workload or .instance',
      );
  }
}

const PEM_LABEL: Partial<Record<ValueKind, string>> = {
  certificate: 'CERTIFICATE',
  chain: 'CERTIFICATE',
  'private-key': 'PRIVATE KEY',
  'public-key': 'PUBLIC KEY',
};

function valueBytes(v: Value, a: TemplateAction, encoder: string): Uint8Array {
  switch (v.kind) {
    case 'bytes':
      return v.bytes;
    case 'text':
      return utf8(v.text);
    case 'chain':
      return fail(
        'TEMPLATE_INVALID_VALUE',
        a,
        `a chain can only be encoded as pem, not ${encoder}`,
      );
    case 'certificate':
    case 'private-key':
    case 'public-key':
      return v.der;
  }
}

function encode(v: Value, a: TemplateAction, target: TemplateTarget): Uint8Array {
  switch (a.encoder) {
    case 'pem': {
      const label = PEM_LABEL[v.kind];
      if (label === undefined)
        fail(
          'TEMPLATE_INVALID_VALUE',
          a,
          'pem applies to certificates and keys; use hex or base64',
        );
      const ders = v.kind === 'chain' ? v.ders : [valueBytes(v, a, 'pem')];
      return utf8(ders.map((d) => toPem(label, d)).join(''));
    }
    case 'hex':
      return utf8(toHex(valueBytes(v, a, 'hex')));
    case 'base64':
      return utf8(toBase64(valueBytes(v, a, 'base64')));
    case 'raw':
      if (target !== 'file')
        fail('TEMPLATE_INVALID_VALUE', a, 'raw is for files only; use string, hex or base64');
      return valueBytes(v, a, 'raw');
    case 'string': {
      if (v.kind !== 'bytes' && v.kind !== 'text')
        fail('TEMPLATE_INVALID_VALUE', a, 'string applies to plain secrets and names; use pem');
      const bytes = valueBytes(v, a, 'string');
      // A NUL would silently truncate an environment variable or argument (C strings), and
      // invalid UTF-8 would be replaced: refuse both rather than pass a different value.
      if (bytes.includes(0)) fail('TEMPLATE_INVALID_VALUE', a, 'the value contains a NUL byte');
      try {
        new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        fail('TEMPLATE_INVALID_VALUE', a, 'the value is not UTF-8; use hex or base64');
      }
      return bytes;
    }
  }
}

/**
 * Renders a template to bytes. Throws TEMPLATE_SYNTAX, TEMPLATE_INVALID_VALUE (unknown value,
 * encoder that does not fit) or TEMPLATE_VALUE_MISSING (a value without content yet).
 */
export function renderTemplate(
  template: ParsedTemplate | string,
  context: TemplateContext,
  target: TemplateTarget = 'file',
): Uint8Array {
  const t = typeof template === 'string' ? parseTemplate(template) : template;
  const max = MAX_RENDERED[target];
  const out: Uint8Array[] = [];
  let size = 0;
  for (const p of t.parts) {
    const b = p.type === 'text' ? utf8(p.text) : encode(resolve(p, context), p, target);
    size += b.length;
    if (size > max) {
      const offset = p.type === 'action' ? p.offset : 0;
      throw protocolError(
        'TEMPLATE_INVALID_VALUE',
        `the rendered ${target} is larger than ${max} bytes (offset ${offset})`,
        { details: { offset, limit: max } },
      );
    }
    out.push(b);
  }
  return concatBytes(...out);
}

/**
 * Renders a template for an environment variable or an argument: the result is text without
 * NUL (a NUL in literal text is refused too).
 */
export function renderTemplateText(
  template: ParsedTemplate | string,
  context: TemplateContext,
  target: 'env' | 'arg',
): string {
  const t = typeof template === 'string' ? parseTemplate(template) : template;
  const bytes = renderTemplate(t, context, target);
  if (bytes.includes(0)) {
    throw protocolError('TEMPLATE_INVALID_VALUE', `the ${target} contains a NUL byte`, {
      details: { offset: 0 },
    });
  }
  return new TextDecoder().decode(bytes);
}

/** The dotted paths (`.mesh.key`, `.secrets.apiKey.cert`) a template refers to. */
export function templatePaths(template: ParsedTemplate | string): string[] {
  const t = typeof template === 'string' ? parseTemplate(template) : template;
  return t.parts.flatMap((p) => (p.type === 'action' ? [`.${p.path.join('.')}`] : []));
}
