/**
 * Strict JSON (RFC 8259) for signed collateral: RFC 8259 section 4 says member names "SHOULD be
 * unique" and leaves duplicates to the implementation; this reader rejects them, because a
 * signed TCB Info with a duplicated `tcbLevels` could be read one way by Intel's verifier and
 * another way by ours. It also caps nesting depth, and reports the exact text span of each
 * top-level member, which is what Intel signs (the `tcbInfo` / `enclaveIdentity` substring of a
 * PCS response body).
 *
 * Scalars are decoded by `JSON.parse` on their exact slice after the grammar is checked here.
 */
import { evidenceError } from '../error-codes.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

const MAX_DEPTH = 16;
// eslint-disable-next-line no-control-regex -- RFC 8259 forbids raw control characters in strings
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const WS = /[ \t\n\r]*/y;

function fail(field: string, why: string, pos: number): never {
  throw evidenceError('COLLATERAL_MALFORMED', `${field}: ${why} at offset ${pos}`, {
    details: { field, offset: pos },
  });
}

/** A parsed JSON document with the spans of its top-level object members. */
export interface StrictJson {
  readonly value: JsonValue;
  /** For a top-level object: each member's value span [start, end) in the text. */
  readonly memberSpans: ReadonlyMap<string, readonly [number, number]>;
}

/** Parses `text` strictly (see the file comment). Throws COLLATERAL_MALFORMED. */
export function parseStrictJson(text: string, field: string): StrictJson {
  let pos = 0;
  const spans = new Map<string, readonly [number, number]>();
  const ws = (): void => {
    WS.lastIndex = pos;
    WS.exec(text);
    pos = WS.lastIndex;
  };
  const token = (re: RegExp, what: string): string => {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m === null) fail(field, `expected ${what}`, pos);
    pos = re.lastIndex;
    return m[0];
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) fail(field, 'nesting too deep', pos);
    ws();
    const c = text[pos];
    if (c === '{') {
      pos++;
      const obj: { [k: string]: JsonValue } = Object.create(null) as { [k: string]: JsonValue };
      ws();
      if (text[pos] === '}') {
        pos++;
        return obj;
      }
      for (;;) {
        ws();
        const key = JSON.parse(token(STRING, 'a member name')) as string;
        if (Object.prototype.hasOwnProperty.call(obj, key))
          fail(field, `duplicate member "${key}"`, pos);
        ws();
        if (text[pos] !== ':') fail(field, 'expected ":"', pos);
        pos++;
        ws();
        const start = pos;
        obj[key] = value(depth + 1);
        if (depth === 0) spans.set(key, [start, pos]);
        ws();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === '}') {
          pos++;
          return obj;
        }
        fail(field, 'expected "," or "}"', pos);
      }
    }
    if (c === '[') {
      pos++;
      const arr: JsonValue[] = [];
      ws();
      if (text[pos] === ']') {
        pos++;
        return arr;
      }
      for (;;) {
        if (arr.length >= 4096) fail(field, 'array too long', pos);
        arr.push(value(depth + 1));
        ws();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === ']') {
          pos++;
          return arr;
        }
        fail(field, 'expected "," or "]"', pos);
      }
    }
    if (c === '"') return JSON.parse(token(STRING, 'a string')) as string;
    if (text.startsWith('true', pos)) {
      pos += 4;
      return true;
    }
    if (text.startsWith('false', pos)) {
      pos += 5;
      return false;
    }
    if (text.startsWith('null', pos)) {
      pos += 4;
      return null;
    }
    return JSON.parse(token(NUMBER, 'a value')) as number;
  };
  if (typeof text !== 'string') fail(field, 'not text', 0);
  const v = value(0);
  ws();
  if (pos !== text.length) fail(field, 'trailing characters', pos);
  return { value: v, memberSpans: spans };
}
