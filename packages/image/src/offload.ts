/**
 * SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104) and layer diff_ids (gzip, RFC 1952, inflated
 * and hashed; OCI image-spec `config.md` §rootfs) computed on a helper thread.
 *
 * Why: a layer passes through several hash functions (source digest, HMAC, ciphertext digest,
 * diff_id) and Node runs `hash.update` synchronously on the calling thread, so a copy that
 * hashes everything in the main thread uses one core however many it has. Moving some of the
 * work here lets the main thread cipher while another core hashes the same bytes.
 *
 * Each update copies the chunk once into a ring of shared memory owned by one tap; the helper
 * thread feeds that slot to every sink of the tap (say the source digest and the diff_id), so
 * several functions of the same bytes cost one copy. A chunk that was read into shared memory
 * in the first place is lent instead (`lend`): no copy at all, and the caller takes it back
 * when the helper is done with it (measured on a 512 MiB image: 3-7 % less CPU, 4-6 % faster).
 * Allocating a fresh buffer per chunk costs more in page faults and GC than the copy. Once
 * `update` has returned (or its promise resolved) the caller may reuse or forward its buffer. The ring bounds the bytes in flight, so
 * memory stays flat in the size of the data. With one CPU, or when a worker cannot be started,
 * the same API computes in-thread. There is one helper per core (the main thread has its own
 * share of the work: the cipher), taken round robin, so the taps of one layer land on different
 * cores.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { createGunzip, type Gunzip } from 'node:zlib';

/** What a tap computes over the bytes it is fed. */
export type SinkSpec =
  | { readonly kind: 'sha256' }
  | { readonly kind: 'hmac'; readonly key: Uint8Array }
  /**
   * SHA-256 of the decompressed bytes (a layer's diff_id), with a cap on the decompressed size.
   * Malformed gzip or an exceeded cap is recorded, not thrown while streaming: on plaintext that
   * is not authenticated yet, an early error would be an oracle. `digest` reports it.
   */
  | { readonly kind: 'diffId'; readonly compression: 'none' | 'gzip'; readonly max: number };

/** The result of one sink: a 32-byte digest, or why a diffId sink failed. */
export type SinkResult =
  { readonly digest: Buffer } | { readonly failure: 'gzip' | 'limit'; readonly message: string };

/** Output chunk of inflate: small enough to be served by the allocator's reused heap. */
const INFLATE_CHUNK = 256 * 1024;

/**
 * One sink's state, the same code on the helper thread and in-thread (the worker source below
 * is built from this function's text, so both run exactly this logic).
 */
function makeSink(
  spec: { kind: string; key?: Uint8Array; compression?: string; max?: number },
  deps: {
    createHash: typeof createHash;
    createHmac: typeof createHmac;
    createGunzip: typeof createGunzip;
    inflateChunk: number;
  },
): {
  update(b: Uint8Array, done: () => void): boolean;
  finish(cb: (r: { digest?: Uint8Array; failure?: string; message?: string }) => void): void;
  drop(): void;
} {
  if (spec.kind === 'sha256' || spec.kind === 'hmac' || spec.compression !== 'gzip') {
    const h =
      spec.kind === 'hmac'
        ? deps.createHmac('sha256', spec.key as Uint8Array)
        : deps.createHash('sha256');
    const max = spec.kind === 'diffId' ? (spec.max as number) : Infinity;
    let n = 0;
    let failure: string | undefined;
    return {
      update(b) {
        if (failure !== undefined) return true;
        n += b.byteLength;
        if (n > max) failure = 'limit';
        else h.update(b);
        return true;
      },
      finish(cb) {
        if (failure !== undefined)
          cb({ failure, message: 'decompressed layer exceeds the size limit' });
        else cb({ digest: h.digest() });
      },
      drop() {},
    };
  }
  // gzip: inflate (on the libuv pool) and hash the output on this thread.
  const h = deps.createHash('sha256');
  const max = spec.max as number;
  const gz: Gunzip = deps.createGunzip({ chunkSize: deps.inflateChunk });
  let out = 0;
  let failure: string | undefined;
  let message = '';
  let pending = 0;
  let onIdle: (() => void) | undefined;
  const waiting = new Set<() => void>();
  const fail = (f: string, m: string): void => {
    if (failure !== undefined) return;
    failure = f;
    message = m;
    gz.destroy();
    // The input is no longer read: release every slot still queued.
    for (const w of [...waiting]) w();
  };
  gz.on('data', (d: Uint8Array) => {
    if (failure !== undefined) return;
    out += d.byteLength;
    if (out > max) fail('limit', 'decompressed layer exceeds the size limit');
    else h.update(d);
  });
  gz.on('error', (e: Error) => fail('gzip', e.message));
  return {
    update(b, done) {
      if (failure !== undefined) return true;
      pending++;
      let called = false;
      const release = (): void => {
        if (called) return;
        called = true;
        waiting.delete(release);
        pending--;
        done();
        if (pending === 0 && onIdle !== undefined) onIdle();
      };
      waiting.add(release);
      gz.write(b, () => release());
      return false;
    },
    finish(cb) {
      const end = (): void => {
        if (failure !== undefined) return cb({ failure, message });
        let settled = false;
        const settle = (): void => {
          if (settled) return;
          settled = true;
          if (failure !== undefined) cb({ failure, message });
          else cb({ digest: h.digest() });
        };
        gz.once('end', settle);
        gz.once('close', settle);
        gz.end();
      };
      if (pending === 0 || failure !== undefined) end();
      else onIdle = end;
    },
    drop() {
      failure ??= 'gzip';
      gz.destroy();
    },
  };
}

// Plain CommonJS run with `eval: true`: no module resolution, so it works from sources and
// from the compiled package alike. `makeSink` is inlined from its text; `__name` is the no-op
// that transpilers keeping function names (esbuild `keepNames`) wrap nested functions in.
const WORKER_SOURCE = `
var __name = (f) => f;
const { parentPort } = require('node:worker_threads');
const { createHash, createHmac } = require('node:crypto');
const { createGunzip } = require('node:zlib');
const deps = { createHash, createHmac, createGunzip, inflateChunk: ${INFLATE_CHUNK} };
const makeSink = ${makeSink.toString()};
const open = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    const o = open.get(m.id);
    if (o === undefined) return parentPort.postMessage({ op: 'ack', id: m.id });
    // A lent chunk (shared memory the caller read into) or a slot of the tap's ring.
    const b = m.shared !== undefined ? new Uint8Array(m.shared, m.off, m.len) : o.ring.subarray(m.off, m.off + m.len);
    let left = o.sinks.length;
    const done = () => { if (--left === 0) parentPort.postMessage({ op: 'ack', id: m.id }); };
    for (const s of o.sinks) if (s.update(b, done)) done();
  } else if (m.op === 'new') {
    open.set(m.id, { ring: new Uint8Array(m.ring), sinks: m.sinks.map((s) => makeSink(s, deps)) });
  } else if (m.op === 'digest') {
    const o = open.get(m.id);
    open.delete(m.id);
    if (o === undefined) return parentPort.postMessage({ op: 'digest', id: m.id, results: null });
    const results = new Array(o.sinks.length);
    let left = o.sinks.length;
    const reply = () => parentPort.postMessage({ op: 'digest', id: m.id, results });
    if (left === 0) return reply();
    o.sinks.forEach((s, i) => s.finish((r) => { results[i] = r; if (--left === 0) reply(); }));
  } else if (m.op === 'drop') {
    const o = open.get(m.id);
    open.delete(m.id);
    if (o !== undefined) for (const s of o.sinks) s.drop();
    parentPort.postMessage({ op: 'dropped', id: m.id });
  }
});
`;

/** Size of one slot of a tap's shared ring, and slots per ring. */
const SLOT = 1024 * 1024;
const SLOTS = 4;

/** Bytes a single tap may have queued on the helper thread (its ring). */
export const MAX_INFLIGHT_BYTES = SLOT * SLOTS;

type RawResult = { digest?: Uint8Array; failure?: string; message?: string };

/**
 * One open tap on the helper thread. Data goes through a ring of shared-memory slots that is
 * reused from tap to tap: no per-chunk allocation, no transfer, one memcpy per byte.
 */
interface Open {
  readonly ring: SharedArrayBuffer;
  readonly view: Uint8Array;
  /** Slots handed to the worker and not yet acknowledged. */
  busy: number;
  /**
   * Updates with the worker, in the order it acknowledges them: `undefined` for a ring slot,
   * the resolver of a lent chunk (`lend`).
   */
  readonly inFlight: ((() => void) | undefined)[];
  /** Slot being filled and how much of it is filled. */
  slot: number;
  fill: number;
  waiters: (() => void)[];
  onDigest: ((r: RawResult[]) => void) | undefined;
  onFail: ((e: Error) => void) | undefined;
  failed: Error | undefined;
  /** What this tap adds to its thread's `load` (reserved when the tap is created). */
  readonly weight: number;
}

class HashThread {
  readonly #worker: Worker;
  readonly #open = new Map<number, Open>();
  readonly #rings: SharedArrayBuffer[] = [];
  #nextId = 1;
  #awaited = 0;
  dead = false;

  /** Taps open on this thread, weighted by sinks (how busy a new tap would find it). */
  load = 0;

  constructor() {
    // No inherited Node flags: the source is CommonJS, and a parent started with
    // `--input-type=module` (say) would make the worker read it as a module.
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    this.#worker.on('message', (m: { op: string; id: number; results?: RawResult[] | null }) =>
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
    // After the listeners: attaching a 'message' listener refs the worker again.
    this.#worker.unref();
  }

  /**
   * Keeps the process alive exactly while someone awaits the worker (a digest, or room in a
   * ring). An idle worker, or a tap whose stream was abandoned unread, never holds it open.
   */
  async #awaiting<T>(p: Promise<T>): Promise<T> {
    if (this.#awaited++ === 0) this.#worker.ref();
    try {
      return await p;
    } finally {
      if (--this.#awaited === 0) this.#worker.unref();
    }
  }

  #onMessage(m: { op: string; id: number; results?: RawResult[] | null }): void {
    const o = this.#open.get(m.id);
    if (o === undefined) return;
    if (m.op === 'ack') {
      const lent = o.inFlight.shift();
      if (lent !== undefined) return lent();
      o.busy--;
      for (const w of o.waiters.splice(0)) w();
    } else if (m.op === 'digest' || m.op === 'dropped') {
      this.#open.delete(m.id);
      this.load -= o.weight;
      this.#rings.push(o.ring);
      if (m.op === 'digest') {
        if (m.results === null || m.results === undefined)
          o.onFail?.(new Error('hash worker lost the tap'));
        else o.onDigest?.(m.results);
      }
    }
  }

  open(sinks: readonly SinkSpec[]): { id: number; o: Open } {
    const id = this.#nextId++;
    const ring = this.#rings.pop() ?? new SharedArrayBuffer(SLOT * SLOTS);
    const o: Open = {
      ring,
      view: new Uint8Array(ring),
      busy: 0,
      inFlight: [],
      slot: 0,
      fill: 0,
      waiters: [],
      onDigest: undefined,
      onFail: undefined,
      failed: undefined,
      weight: weightOf(sinks),
    };
    this.#open.set(id, o);
    this.#worker.postMessage({
      op: 'new',
      id,
      ring,
      sinks: sinks.map((s) => (s.kind === 'hmac' ? { ...s, key: Buffer.from(s.key) } : s)),
    });
    return { id, o };
  }

  #post(id: number, o: Open): void {
    this.#worker.postMessage({ op: 'update', id, off: o.slot * SLOT, len: o.fill });
    o.inFlight.push(undefined);
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

  /**
   * Hands the worker `chunk`, which lives in shared memory, without copying it: resolves once
   * the worker is done with it (the caller must not reuse it before). Bytes still in the ring
   * go first, so the order holds.
   */
  lend(id: number, o: Open, chunk: Uint8Array): Promise<void> | undefined {
    if (o.failed !== undefined) return undefined;
    if (o.fill > 0) this.#post(id, o);
    return this.#awaiting(
      new Promise<void>((resolve) => {
        o.inFlight.push(resolve);
        this.#worker.postMessage({
          op: 'update',
          id,
          shared: chunk.buffer,
          off: chunk.byteOffset,
          len: chunk.byteLength,
        });
      }),
    );
  }

  digest(id: number, o: Open): Promise<RawResult[]> {
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
    const o = this.#open.get(id);
    if (o === undefined) return;
    // Whoever still waits for room in the ring stops waiting (and stops holding the worker).
    fail(o, new Error('hash abandoned'));
    this.#worker.postMessage({ op: 'drop', id });
  }
}

function fail(o: Open, e: Error): void {
  o.failed = e;
  for (const w of o.waiters.splice(0)) w();
  // Lent chunks are the caller's again: the tap is dead, whatever the worker still reads of
  // them goes into a result nobody takes.
  for (const lent of o.inFlight.splice(0)) lent?.();
  o.onFail?.(e);
}

/** Rough cost of a tap's sinks per byte (a gzip diff_id is a hash plus inflate's callbacks). */
function weightOf(sinks: readonly SinkSpec[]): number {
  let w = 0;
  for (const s of sinks) w += s.kind === 'diffId' && s.compression === 'gzip' ? 2 : 1;
  return w;
}

/** Helper threads: one per core (capped), so the taps of one layer hash on several cores. */
const HELPERS = Math.min(availableParallelism(), 4);
const helpers: (HashThread | undefined)[] = [];
let disabled = HELPERS < 2;

/** The helper thread with the fewest open taps (spreads the taps of a copy over the cores). */
function thread(): HashThread | undefined {
  if (disabled) return undefined;
  let best = -1;
  for (let i = 0; i < HELPERS; i++) {
    const t = helpers[i];
    if (t === undefined || t.dead) {
      best = i;
      break;
    }
    if (best < 0 || t.load < (helpers[best] as HashThread).load) best = i;
  }
  let t = helpers[best];
  if (t === undefined || t.dead) {
    try {
      t = new HashThread();
      helpers[best] = t;
    } catch {
      disabled = true;
      return undefined;
    }
  }
  return t;
}

/** Load reserved on the helper threads by open taps (0 when none is open): for diagnostics. */
export function helperLoad(): number {
  return helpers.reduce((sum, t) => sum + (t === undefined || t.dead ? 0 : t.load), 0);
}

const LOCAL_DEPS = { createHash, createHmac, createGunzip, inflateChunk: INFLATE_CHUNK };

/**
 * Feeds `chunk` to in-thread sinks: undefined when every one took it at once, else a promise
 * resolved when the last one has (inflate runs on the libuv pool).
 */
function feedLocal(
  local: readonly ReturnType<typeof makeSink>[],
  chunk: Uint8Array,
): Promise<void> | undefined {
  let left = local.length;
  let resolve: (() => void) | undefined;
  const done = (): void => {
    if (--left === 0) resolve?.();
  };
  for (const s of local) if (s.update(chunk, done)) done();
  if (left === 0) return undefined;
  return new Promise<void>((r) => {
    resolve = r;
    if (left === 0) r();
  });
}

/**
 * Several functions (SHA-256, HMAC-SHA256, diff_id) of one byte stream, computed on the helper
 * thread when there is one. Feed it with `update` (awaiting what it returns, if anything), then
 * call `results` once: one result per sink, in the order given.
 */
export class OffloadedTap {
  readonly #sinks: readonly SinkSpec[];
  readonly #thread: HashThread | undefined;
  readonly #local: ReturnType<typeof makeSink>[] | undefined;
  #id = 0;
  #o: Open | undefined;
  /** The last update not yet queued (the ring or a local sink was full), if any. */
  #tail: Promise<void> | undefined;
  #done = false;

  /** `offload: false` computes in-thread (inflate still runs on the libuv pool). */
  constructor(sinks: readonly SinkSpec[], opts: { offload?: boolean } = {}) {
    this.#sinks = sinks;
    const t = opts.offload === false ? undefined : thread();
    if (t === undefined) this.#local = sinks.map((s) => makeSink(s, LOCAL_DEPS));
    else {
      this.#thread = t;
      // Reserved now, so the next taps of the same layer pick other threads.
      t.load += weightOf(sinks);
    }
  }

  // Opened on first use: a tap that is created but never fed costs no ring.
  #opened(): { t: HashThread; o: Open } {
    const t = this.#thread;
    if (t === undefined) throw new Error('unreachable');
    if (this.#o === undefined) {
      const { id, o } = t.open(this.#sinks);
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
    const local = this.#local;
    if (local !== undefined) return this.#inOrder(() => feedLocal(local, chunk));
    const { t, o } = this.#opened();
    return this.#inOrder(() => t.write(this.#id, o, chunk));
  }

  /**
   * Feeds a chunk that lives in shared memory (a `SharedArrayBuffer`) without copying it.
   * More may be fed at once; the returned promise resolves when the helper is done with the
   * chunk, and not before may the caller reuse it. Any other chunk is copied, as by `update`.
   */
  lend(chunk: Uint8Array): Promise<void> {
    const t = this.#thread;
    if (t === undefined || !(chunk.buffer instanceof SharedArrayBuffer))
      return this.update(chunk) ?? Promise.resolve();
    const { o } = this.#opened();
    // Earlier bytes still wait for room in the ring: this chunk goes after them, later ones
    // after it.
    if (this.#tail !== undefined)
      return this.#inOrder(() => t.lend(this.#id, o, chunk)) ?? Promise.resolve();
    return t.lend(this.#id, o, chunk) ?? Promise.resolve();
  }

  /**
   * Runs `run` after the updates before it, so they stay in order even when a caller feeds more
   * before the last one was queued.
   */
  #inOrder(run: () => Promise<void> | undefined): Promise<void> | undefined {
    const queued = this.#tail === undefined ? run() : this.#tail.then(run);
    if (queued === undefined) return undefined;
    const tail: Promise<void> = queued.then(() => {
      if (this.#tail === tail) this.#tail = undefined;
    });
    this.#tail = tail;
    return tail;
  }

  /** One result per sink. Rejects if the helper thread died. */
  async results(): Promise<SinkResult[]> {
    if (this.#done) throw new Error('OffloadedTap finished twice');
    this.#done = true;
    let raw: RawResult[];
    if (this.#local !== undefined) {
      while (this.#tail !== undefined) await this.#tail;
      const local = this.#local;
      raw = await Promise.all(
        local.map((s) => new Promise<RawResult>((resolve) => s.finish(resolve))),
      );
    } else {
      const { t, o } = this.#opened();
      while (this.#tail !== undefined) await this.#tail;
      raw = await t.digest(this.#id, o);
    }
    return raw.map((r): SinkResult => {
      if (r.digest !== undefined) return { digest: Buffer.from(r.digest) };
      return {
        failure: r.failure === 'limit' ? 'limit' : 'gzip',
        message: r.message ?? '',
      };
    });
  }

  /** Forgets an unfinished tap (on error paths). */
  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#local !== undefined) for (const s of this.#local) s.drop();
    else if (this.#o !== undefined) this.#thread?.drop(this.#id);
    else if (this.#thread !== undefined) this.#thread.load -= weightOf(this.#sinks);
  }
}

/**
 * An incremental SHA-256 or HMAC-SHA256 whose updates run on the helper thread when there is
 * one. Feed it with `update` (awaiting what it returns, if anything), then `digest` once.
 */
export class OffloadedHash {
  readonly #local: Hash | Hmac | undefined;
  readonly #tap: OffloadedTap | undefined;

  /** SHA-256, or HMAC-SHA256 when `hmacKey` is given. `offload: false` hashes in-thread. */
  constructor(opts: { hmacKey?: Uint8Array; offload?: boolean } = {}) {
    if (opts.offload === false || disabled) {
      this.#local =
        opts.hmacKey === undefined ? createHash('sha256') : createHmac('sha256', opts.hmacKey);
      return;
    }
    this.#tap = new OffloadedTap([
      opts.hmacKey === undefined ? { kind: 'sha256' } : { kind: 'hmac', key: opts.hmacKey },
    ]);
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
    return this.#tap?.update(chunk);
  }

  #digested = false;

  /** The final digest (32 bytes). Rejects if the helper thread died. */
  async digest(): Promise<Buffer> {
    if (this.#digested) throw new Error('OffloadedHash digested twice');
    this.#digested = true;
    if (this.#local !== undefined) return this.#local.digest();
    const [r] = await (this.#tap as OffloadedTap).results();
    if (r === undefined || !('digest' in r)) throw new Error('hash worker returned no digest');
    return r.digest;
  }

  /** Forgets an unfinished hash (on error paths). */
  abandon(): void {
    if (this.#digested) return;
    this.#digested = true;
    this.#tap?.abandon();
  }
}
