/**
 * RFC 8785 JSON Canonicalization Scheme (JCS) and the manifest hash.
 *
 * Serialisation is done by the `canonicalize` library (RFC 8785 §3.2: ECMAScript number and
 * string serialisation, keys sorted by UTF-16 code units, no whitespace). Before handing a value
 * to it we check what RFC 8785 §3 requires of the input and the library does not: I-JSON
 * (RFC 7493) strings, i.e. no lone surrogates, finite numbers only, and nothing but plain JSON
 * values (a `toJSON` method or `undefined` would make two different inputs hash alike).
 */
import canonicalizeModule from 'canonicalize';
import { sha256, toHex, utf8 } from './bytes.js';
import { protocolError } from './error-codes.js';
import type { Manifest } from './manifest/schema.js';

// The package is CommonJS: depending on the loader, its default import is the serialiser or a
// namespace holding it (and TypeScript types it as the latter).
type Canon = (v: unknown) => string | undefined;
const canonModule = canonicalizeModule as unknown as Canon | { readonly default: Canon };
const canonicalizeFn: Canon = typeof canonModule === 'function' ? canonModule : canonModule.default;

const MAX_DEPTH = 64;
// In `u` mode a surrogate pair is one code point, so only lone surrogates are category Cs.
const LONE_SURROGATE = /\p{Cs}/u;

function check(v: unknown, path: string, depth: number): void {
  if (depth > MAX_DEPTH) {
    throw protocolError('MANIFEST_INVALID', `${path || '/'}: nested deeper than ${MAX_DEPTH}`, {
      details: { problems: [{ path, message: 'too deeply nested' }] },
    });
  }
  const bad = (message: string): never => {
    throw protocolError('MANIFEST_INVALID', `${path || '/'}: ${message}`, {
      details: { problems: [{ path, message }] },
    });
  };
  if (v === null || typeof v === 'boolean') return;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) bad('numbers must be finite (I-JSON)');
    return;
  }
  if (typeof v === 'string') {
    if (LONE_SURROGATE.test(v)) bad('string contains a lone surrogate (not I-JSON)');
    return;
  }
  if (Array.isArray(v)) {
    // An index loop, not forEach: forEach skips the holes of a sparse array, and the serialiser
    // drops them too, so `[1, , 2]` would hash as `[1,2]` (and `[, 1]` would serialise as `[,1]`).
    for (let i = 0; i < v.length; i++) {
      if (!Object.hasOwn(v, i)) bad(`index ${i} is a hole in a sparse array`);
      check(v[i], `${path}/${i}`, depth + 1);
    }
    return;
  }
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v) as unknown;
    if (proto !== Object.prototype && proto !== null) bad('not a plain JSON object');
    for (const [k, x] of Object.entries(v)) {
      if (LONE_SURROGATE.test(k)) bad('key contains a lone surrogate (not I-JSON)');
      check(x, `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`, depth + 1);
    }
    return;
  }
  bad(`${typeof v} is not a JSON value`);
}

/** RFC 8785 canonical JSON text of a plain JSON value. Throws MANIFEST_INVALID otherwise. */
export function canonicalJson(value: unknown): string {
  check(value, '', 0);
  const s = canonicalizeFn(value);
  if (s === undefined) throw protocolError('MANIFEST_INVALID', 'not a JSON value');
  return s;
}

/** UTF-8 bytes of the RFC 8785 canonical form. */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}

/** The manifest's canonical bytes (RFC 8785): what the manifest hash covers. */
export function canonicalManifestBytes(manifest: Manifest): Uint8Array {
  return canonicalJsonBytes(manifest);
}

/**
 * SHA-256 of the canonical bytes, lowercase hex. Whitespace, key order and number spelling do
 * not change it; any change of meaning does.
 */
export async function manifestHash(manifest: Manifest): Promise<string> {
  return toHex(await sha256(canonicalManifestBytes(manifest)));
}
