/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) computed on a helper thread.
 *
 * Why: a layer passes through several hash functions (source digest, HMAC, ciphertext digest,
 * diff_id) and Node runs `hash.update` synchronously on the calling thread, so a copy that
 * hashes everything in the main thread uses one core however many it has. Moving some of the
 * hashes here lets the main thread cipher while another core hashes the same bytes.
 *
 * Each update copies the chunk into a ring of shared memory owned by that hash (allocating a
 * fresh buffer per chunk costs more in page faults and GC than the copy); once `update` has
 * returned (or its promise resolved) the caller may reuse or forward its buffer. The ring
 * bounds the bytes in flight, so memory stays flat in the size of the data. With one CPU, or
 * when a worker cannot be started, the same API hashes in-thread.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

// Plain CommonJS run with `eval: true`: no module resolution, so it works from sources and
// from the compiled package alike.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash, createHmac } = require('node:crypto');
const open = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    const o = open.get(m.id);
    if (o !== undefined) o.h.update(o.ring.subarray(m.off, m.off + m.len));
    parentPort.postMessage({ op: 'ack', id: m.id });
  } else if (m.op === 'new') {
    const h = m.key === undefined ? createHash('sha256') : createHmac('sha256', m.key);
    open.set(m.id, { h, ring: new Uint8Array(m.ring) });
  } else if (m.op === 'digest') {
    const o = open.get(m.id);
    open.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, digest: o === undefined ? null : o.h.digest() });
  } else if (m.op === 'drop') {
    open.delete(m.id);
    parentPort.postMessage({ op: 'dropped', id: m.id });
  }
});
`;

/** Size of one slot of a hash's shared ring, and slots per ring. */
const SLOT = 1024 * 1024;
const SLOTS = 6;

/** Bytes a single hash may have queued on the helper thread (its ring). */
export const MAX_INFLIGHT_BYTES = SLOT * SLOTS;

/**
 * One open hash on the helper thread. Data goes through a ring of shared-memory slots that is
 * reused from hash to hash: no per-chunk allocation, no transfer, one memcpy per byte.
 */
interface Open {
  readonly ring: SharedArrayBuffer;
  readonly view: Uint8Array;
  /** Slots handed to the worker and not yet acknowledged. */
  busy: number;
  /** Slot being filled and how much of it is filled. */
  slot: number;
  fill: number;
  waiters: (() => void)[];
  onDigest: ((d: Buffer) => void) | undefined;
  onFail: ((e: Error) => void) | undefined;
  failed: Error | undefined;
}

class HashThread {
  readonly #worker: Worker;
  readonly #open = new Map<number, Open>();
  readonly #rings: SharedArrayBuffer[] = [];
  #nextId = 1;
  #awaited = 0;
  dead = false;

  constructor() {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true });
    this.#worker.unref();
    this.#worker.on('message', (m: { op: string; id: number; digest?: Uint8Array | null }) =>
      this.#onMessage(m),
    );
    const die = (e: Error): void => {
      if (this.dead) return;
      this.dead = true;
      for (const o of this.#open.values()) fail(o, e);
      this.#open.clear();
    };
    this.#worker.on('error', die);
    this.#worker.on('exit', () => die(new Error('hash worker exited')));
  }

  /**
   * Keeps the process alive exactly while someone awaits the worker (a digest, or room in a
   * ring). An idle worker, or a hash whose stream was abandoned unread, never holds it open.
   */
  async #awaiting<T>(p: Promise<T>): Promise<T> {
    if (this.#awaited++ === 0) this.#worker.ref();
    try {
      return await p;
    } finally {
      if (--this.#awaited === 0) this.#worker.unref();
    }
  }

  #onMessage(m: { op: string; id: number; digest?: Uint8Array | null }): void {
    const o = this.#open.get(m.id);
    if (o === undefined) return;
    if (m.op === 'ack') {
      o.busy--;
      for (const w of o.waiters.splice(0)) w();
    } else if (m.op === 'digest' || m.op === 'dropped') {
      this.#open.delete(m.id);
      this.#rings.push(o.ring);
      if (m.op === 'digest') o.onDigest?.(Buffer.from(m.digest ?? new Uint8Array(0)));
    }
  }

  open(key: Uint8Array | undefined): { id: number; o: Open } {
    const id = this.#nextId++;
    const ring = this.#rings.pop() ?? new SharedArrayBuffer(SLOT * SLOTS);
    const o: Open = {
      ring,
      view: new Uint8Array(ring),
      busy: 0,
      slot: 0,
      fill: 0,
      waiters: [],
      onDigest: undefined,
      onFail: undefined,
      failed: undefined,
    };
    this.#open.set(id, o);
    this.#worker.postMessage({
      op: 'new',
      id,
      ring,
      key: key === undefined ? undefined : Buffer.from(key),
    });
    return { id, o };
  }

  #post(id: number, o: Open): void {
    this.#worker.postMessage({ op: 'update', id, off: o.slot * SLOT, len: o.fill });
    o.busy++;
    o.slot = (o.slot + 1) % SLOTS;
    o.fill = 0;
  }

  /** Copies `chunk` into the ring; resolves when all of it is queued (undefined: at once). */
  write(id: number, o: Open, chunk: Uint8Array): Promise<void> | undefined {
    let off = 0;
    while (off < chunk.byteLength) {
      if (o.failed !== undefined) return undefined;
      // The slot being filled is free only while fewer than SLOTS are with the worker.
      if (o.busy >= SLOTS) {
        const rest = chunk.subarray(off);
        return this.#awaiting(new Promise<void>((r) => o.waiters.push(r))).then(() =>
          this.write(id, o, rest),
        );
      }
      const n = Math.min(SLOT - o.fill, chunk.byteLength - off);
      o.view.set(chunk.subarray(off, off + n), o.slot * SLOT + o.fill);
      o.fill += n;
      off += n;
      if (o.fill === SLOT) this.#post(id, o);
    }
    return undefined;
  }

  digest(id: number, o: Open): Promise<Buffer> {
    return this.#awaiting(
      new Promise((resolve, reject) => {
        if (o.failed !== undefined) return reject(o.failed);
        o.onDigest = resolve;
        o.onFail = reject;
        if (o.fill > 0) this.#post(id, o);
        this.#worker.postMessage({ op: 'digest', id });
      }),
    );
  }

  drop(id: number): void {
    if (this.#open.has(id)) this.#worker.postMessage({ op: 'drop', id });
  }
}

function fail(o: Open, e: Error): void {
  o.failed = e;
  for (const w of o.waiters.splice(0)) w();
  o.onFail?.(e);
}

let shared: HashThread | undefined;
let disabled = availableParallelism() < 2;

function thread(): HashThread | undefined {
  if (disabled) return undefined;
  if (shared === undefined || shared.dead) {
    try {
      shared = new HashThread();
    } catch {
      disabled = true;
      return undefined;
    }
  }
  return shared;
}

/**
 * An incremental SHA-256 or HMAC-SHA256 whose updates run on the helper thread when there is
 * one. Feed it with `update` (awaiting what it returns, if anything), then `digest` once.
 */
export class OffloadedHash {
  readonly #local: Hash | Hmac | undefined;
  readonly #thread: HashThread | undefined;
  readonly #key: Uint8Array | undefined;
  #id = 0;
  #o: Open | undefined;
  #tail: Promise<void> | undefined;
  #done = false;

  /** SHA-256, or HMAC-SHA256 when `hmacKey` is given. `offload: false` hashes in-thread. */
  constructor(opts: { hmacKey?: Uint8Array; offload?: boolean } = {}) {
    const t = opts.offload === false ? undefined : thread();
    if (t === undefined) {
      this.#local =
        opts.hmacKey === undefined ? createHash('sha256') : createHmac('sha256', opts.hmacKey);
      return;
    }
    this.#thread = t;
    this.#key = opts.hmacKey;
  }

  // Opened on first use: a stream that is created but never read costs no ring.
  #opened(): { t: HashThread; o: Open } {
    const t = this.#thread;
    if (t === undefined) throw new Error('unreachable');
    if (this.#o === undefined) {
      const { id, o } = t.open(this.#key);
      this.#id = id;
      this.#o = o;
    }
    return { t, o: this.#o };
  }

  /**
   * Feeds bytes. Returns undefined when they are queued, or a promise to await before the
   * caller reuses `chunk` or feeds more (the ring is full: backpressure).
   */
  update(chunk: Uint8Array): Promise<void> | undefined {
    if (this.#local !== undefined) {
      this.#local.update(chunk);
      return undefined;
    }
    const { t, o } = this.#opened();
    // Updates stay in order even when a caller feeds more before the last one was queued.
    const run = (): Promise<void> | undefined => t.write(this.#id, o, chunk);
    const queued = this.#tail === undefined ? run() : this.#tail.then(run);
    if (queued === undefined) return undefined;
    const tail: Promise<void> = queued.then(() => {
      if (this.#tail === tail) this.#tail = undefined;
    });
    this.#tail = tail;
    return tail;
  }

  /** The final digest (32 bytes). Rejects if the helper thread died. */
  async digest(): Promise<Buffer> {
    if (this.#done) throw new Error('OffloadedHash digested twice');
    this.#done = true;
    if (this.#local !== undefined) return this.#local.digest();
    const { t, o } = this.#opened();
    while (this.#tail !== undefined) await this.#tail;
    return t.digest(this.#id, o);
  }

  /** Forgets an unfinished hash (on error paths). */
  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#o !== undefined) this.#thread?.drop(this.#id);
  }
}
