/**
 * Strict JSON for untrusted image metadata (RFC 8259 §4 says names SHOULD be unique; we make
 * it MUST): size-capped, depth-capped, duplicate keys refused. A duplicate key is a classic
 * parser-differential attack: Go's encoding/json keeps the last value, other parsers the first,
 * so two tools would see two different manifests behind one digest.
 */
import { imageError } from './error-codes.js';

/** Default cap on manifests, indexes, configs and archive metadata (the distribution spec's 4 MiB). */
export const MAX_METADATA_BYTES = 4 * 1024 * 1024;
const MAX_DEPTH = 64;

/** Parses `bytes` as a JSON object under the limits above; `what` names it in errors. */
export function parseStrictJson(
  bytes: Uint8Array,
  what: string,
  maxBytes: number = MAX_METADATA_BYTES,
): Record<string, unknown> {
  if (bytes.length > maxBytes)
    throw imageError('IMAGE_TOO_LARGE', `${what} is larger than ${maxBytes} bytes`, {
      details: { what, size: bytes.length, limit: maxBytes },
    });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (cause) {
    throw imageError('IMAGE_MALFORMED', `${what} is not UTF-8`, { cause, details: { what } });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw imageError('IMAGE_MALFORMED', `${what} is not valid JSON`, { cause, details: { what } });
  }
  checkStructure(text, what);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw imageError('IMAGE_MALFORMED', `${what} is not a JSON object`, { details: { what } });
  return value as Record<string, unknown>;
}

/** Walks syntactically valid JSON text, refusing duplicate object keys and deep nesting. */
function checkStructure(text: string, what: string): void {
  const stack: (Set<string> | null)[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '{' || c === '[') {
      stack.push(c === '{' ? new Set() : null);
      if (stack.length > MAX_DEPTH)
        throw imageError('IMAGE_MALFORMED', `${what} nests deeper than ${MAX_DEPTH}`, {
          details: { what },
        });
      i++;
    } else if (c === '}' || c === ']') {
      stack.pop();
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const raw = text.slice(i, j + 1);
      i = j + 1;
      while (i < text.length && /\s/.test(text[i] ?? '')) i++;
      const top = stack[stack.length - 1];
      if (text[i] === ':' && top) {
        const key = JSON.parse(raw) as string;
        if (top.has(key))
          throw imageError('IMAGE_MALFORMED', `${what} has a duplicate key`, {
            details: { what, key },
          });
        top.add(key);
      }
    } else i++;
  }
}

/**
 * A key as Go's encoding/json compares it with a struct field's name: ASCII letters without
 * case, and the four non-ASCII letters whose simple case mapping is ASCII (the Kelvin sign and
 * long s, dotted and dotless i) read as the letter they map to.
 */
function goFold(key: string): string {
  return key.replace(/[a-z\u0130\u0131\u017f\u212a]/g, (c) =>
    c === '\u0130' || c === '\u0131'
      ? 'I'
      : c === '\u017f'
        ? 'S'
        : c === '\u212a'
          ? 'K'
          : c.toUpperCase(),
  );
}

/**
 * Refuses an object with a key that Go's encoding/json would read as one of `fields` but that
 * is not spelt exactly so: Go matches struct fields case-insensitively and keeps the last match,
 * so `{"digest":A,"Digest":B}` is A here and B in containers/image and containerd, a parser
 * differential behind one digest. `fields` are the struct fields this code reads from `o`; map
 * keys (annotations, labels) are matched exactly by Go and are not checked.
 */
export function refuseGoFieldTwins(
  o: Record<string, unknown>,
  fields: readonly string[],
  what: string,
  code: 'IMAGE_MALFORMED' | 'IMAGE_ENC_MALFORMED' = 'IMAGE_MALFORMED',
): void {
  const wanted = new Map(fields.map((f) => [goFold(f), f]));
  for (const key of Object.keys(o)) {
    const field = wanted.get(goFold(key));
    if (field !== undefined && field !== key)
      throw imageError(
        code,
        `${what} has key ${JSON.stringify(key)}, which Go reads as its field ${field}`,
        { details: { what, key, field } },
      );
  }
}

/** Field readers with the path in the error, for hand-validated shapes. */
export function str(o: Record<string, unknown>, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string')
    throw imageError('IMAGE_MALFORMED', `${what}.${key} must be a string`, {
      details: { field: `${what}.${key}` },
    });
  return v;
}

export function optStr(o: Record<string, unknown>, key: string, what: string): string | undefined {
  return o[key] === undefined ? undefined : str(o, key, what);
}

export function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw imageError('IMAGE_MALFORMED', `${what} must be an object`, { details: { field: what } });
  return v as Record<string, unknown>;
}

export function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v))
    throw imageError('IMAGE_MALFORMED', `${what} must be an array`, { details: { field: what } });
  return v;
}

export function strRecord(v: unknown, what: string): Record<string, string> {
  const o = obj(v, what);
  for (const [k, x] of Object.entries(o))
    if (typeof x !== 'string')
      throw imageError('IMAGE_MALFORMED', `${what}.${k} must be a string`, {
        details: { field: `${what}.${k}` },
      });
  return o as Record<string, string>;
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
