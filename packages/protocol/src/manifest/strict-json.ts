/**
 * Strict JSON text parsing (RFC 8259 plus the I-JSON rules of RFC 7493 §2.3): the text must be
 * valid JSON, object member names must be unique, nesting is capped and the size is capped.
 *
 * Why: `JSON.parse` keeps the last of two duplicate keys while another parser may keep the
 * first, so a manifest with `"debug": false, "debug": true` could mean different things to the
 * owner's tooling and to the coordinator. `__proto__`, `constructor` and `prototype` members are
 * refused too, since code that indexes objects by user-chosen names could reach the prototype.
 *
 * Syntax is checked by the engine's `JSON.parse` (which is iterative, so deep input cannot
 * overflow the stack); a linear scan of the already-valid text then checks names and depth.
 */
import { protocolError } from '../error-codes.js';
import { jsonPointer } from '../pointer.js';

export interface StrictJsonOptions {
  /** Maximum UTF-16 length of the text (default 1 MiB). */
  readonly maxLength?: number;
  /** Maximum nesting of objects and arrays (default 32). */
  readonly maxDepth?: number;
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

interface Frame {
  readonly obj: boolean;
  readonly keys: Set<string>;
  expectKey: boolean;
  key: string | number;
}

/** Parses JSON text strictly. Throws MANIFEST_JSON_INVALID with `details.path` where known. */
export function parseStrictJson(text: string, options: StrictJsonOptions = {}): unknown {
  const maxLength = options.maxLength ?? 1_048_576;
  const maxDepth = options.maxDepth ?? 32;
  if (typeof text !== 'string') {
    throw protocolError('MANIFEST_JSON_INVALID', 'the manifest is not text');
  }
  if (text.length > maxLength) {
    throw protocolError(
      'MANIFEST_JSON_INVALID',
      `the text is longer than ${maxLength} characters`,
      {
        details: { path: '', limit: maxLength },
      },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw protocolError(
      'MANIFEST_JSON_INVALID',
      `not valid JSON: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause, details: { path: '' } },
    );
  }
  const stack: Frame[] = [];
  const here = (): string => jsonPointer(...stack.map((f) => f.key));
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22)
        j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.obj === true && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        top.key = key;
        if (FORBIDDEN_KEYS.has(key)) {
          throw protocolError(
            'MANIFEST_JSON_INVALID',
            `${here()}: the member name "${key}" is not allowed`,
            {
              details: { path: here() },
            },
          );
        }
        if (top.keys.has(key)) {
          throw protocolError(
            'MANIFEST_JSON_INVALID',
            `${here()}: duplicate member name "${key}"`,
            {
              details: { path: here() },
            },
          );
        }
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length >= maxDepth) {
        throw protocolError('MANIFEST_JSON_INVALID', `${here()}: nested deeper than ${maxDepth}`, {
          details: { path: here(), limit: maxDepth },
        });
      }
      stack.push({
        obj: c === 0x7b,
        keys: new Set(),
        expectKey: c === 0x7b,
        key: c === 0x7b ? '' : 0,
      });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top !== undefined) {
        if (top.obj) top.expectKey = true;
        else top.key = (top.key as number) + 1;
      }
    }
  }
  return value;
}
