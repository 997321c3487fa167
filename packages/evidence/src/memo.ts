/**
 * The memo pieces every verifier shares: exact bytes as a Map key, and a bounded memo.
 *
 * Verifiers cache work that depends only on bytes (parsed certificates, verified signatures,
 * imported keys). Keys are the bytes themselves, never a digest or a part of them: a cache keyed
 * by a signature value alone would accept an altered signed object carrying a previously
 * verified signature. Memos are bounded (cleared when full) so hostile input cannot grow memory
 * without limit.
 */

const LATIN1 = new TextDecoder('latin1');

/** The exact bytes as a string usable as a Map key (windows-1252 decoding is one-to-one). */
export function bytesKey(b: Uint8Array): string {
  return LATIN1.decode(b);
}

/** A small bounded memo (cleared when full: simple, and enough against unbounded growth). */
export class BoundedMemo<V> {
  readonly #map = new Map<string, V>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  get(k: string): V | undefined {
    return this.#map.get(k);
  }
  set(k: string, v: V): V {
    if (this.#map.size >= this.#max) this.#map.clear();
    this.#map.set(k, v);
    return v;
  }
}
