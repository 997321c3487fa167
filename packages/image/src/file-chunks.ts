/**
 * Chunked file I/O for the layer loops in `ocicrypt.ts`: reads into a few buffers allocated once
 * and reused (a fresh megabyte buffer per read costs more in page faults and GC than the
 * cryptography on it), with reads ahead so the disk or page cache works while the caller
 * computes; and positioned, bounded writes behind. Memory stays flat in the file size.
 */
import { close, open, read, writev } from 'node:fs';
import type { Readable } from 'node:stream';

/** Bytes per read: large enough that per-call costs vanish, small enough to stay in cache. */
export const READ_CHUNK = 1024 * 1024;

/** A source of chunks; `release` hands a chunk's buffer back once the caller is done with it. */
export interface ChunkSource {
  next(): Promise<Buffer | null>;
  release(chunk: Buffer): void;
  close(): Promise<void>;
}

function readFull(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const step = (): void => {
      read(fd, buf, got, buf.length - got, pos + got, (err, n) => {
        if (err !== null) return reject(err);
        got += n;
        if (n === 0 || got === buf.length) resolve(got);
        else step();
      });
    };
    step();
  });
}

/** Reads a regular file front to back with `depth` reads in flight into reused buffers. */
export class FileChunks implements ChunkSource {
  readonly #fd: number;
  readonly #free: Buffer[] = [];
  /** Every buffer of this reader by its memory, to take a chunk (a view) back whole. */
  readonly #own = new Map<ArrayBufferLike, Buffer>();
  readonly #ahead: Promise<{ buf: Buffer; n: number }>[] = [];
  #pos = 0;
  #eof = false;
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(fd: number, chunk: number, depth: number) {
    this.#fd = fd;
    for (let i = 0; i < depth; i++) {
      // Shared memory: a hashing helper thread reads a chunk where it was read, no copy
      // (offload.ts `lend`).
      const b = Buffer.from(new SharedArrayBuffer(chunk));
      this.#own.set(b.buffer, b);
      this.#free.push(b);
    }
    this.#fill();
  }

  static open(path: string, chunk = READ_CHUNK, depth = 3): Promise<FileChunks> {
    return new Promise((resolve, reject) =>
      open(path, 'r', (err, fd) =>
        err === null ? resolve(new FileChunks(fd, chunk, depth)) : reject(err),
      ),
    );
  }

  #fill(): void {
    while (!this.#eof && !this.#closed && this.#free.length > 0) {
      const buf = this.#free.pop() as Buffer;
      const pos = this.#pos;
      this.#pos += buf.length;
      const p = readFull(this.#fd, buf, pos).then((n) => {
        if (n < buf.length) this.#eof = true;
        return { buf, n };
      });
      // Errors surface from `next`; never as an unhandled rejection of a read ahead.
      p.catch(() => undefined);
      this.#ahead.push(p);
    }
  }

  async next(): Promise<Buffer | null> {
    // Every buffer is still held by the caller (writes in flight): wait for one back.
    while (this.#ahead.length === 0 && !this.#eof && !this.#closed)
      await new Promise<void>((r) => (this.#wake = r));
    const p = this.#ahead.shift();
    if (p === undefined) return null;
    const { buf, n } = await p;
    if (n === 0) {
      this.#free.push(buf);
      return null;
    }
    return buf.subarray(0, n);
  }

  release(chunk: Buffer): void {
    const b = this.#own.get(chunk.buffer);
    if (this.#closed || b === undefined) return;
    this.#free.push(b);
    this.#fill();
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    await Promise.allSettled(this.#ahead);
    await new Promise<void>((resolve) => close(this.#fd, () => resolve()));
  }
}

/** Chunks of a stream (each a buffer the stream allocated; nothing to give back). */
export class StreamChunks implements ChunkSource {
  readonly #stream: Readable;
  readonly #it: AsyncIterator<Buffer>;

  constructor(stream: Readable) {
    this.#stream = stream;
    this.#it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  async next(): Promise<Buffer | null> {
    const r = await this.#it.next();
    return r.done === true ? null : r.value;
  }

  release(): void {}

  async close(): Promise<void> {
    this.#stream.destroy();
    await this.#it.return?.();
  }
}

/**
 * Appends to a new file (created exclusively, mode 0600 unless told) with at most `depth`
 * writes in flight. `write` resolves when the chunks are queued, and calls `written` once they
 * are on disk (so the caller can reuse their buffers).
 */
export class FileSink {
  readonly #fd: number;
  readonly #depth: number;
  #pos = 0;
  #inflight = 0;
  #room: (() => void) | undefined;
  #error: Error | undefined;
  #idle: (() => void) | undefined;
  #closed = false;

  private constructor(fd: number, depth: number) {
    this.#fd = fd;
    this.#depth = depth;
  }

  static create(path: string, opts: { mode?: number; depth?: number } = {}): Promise<FileSink> {
    const depth = opts.depth ?? 3;
    return new Promise((resolve, reject) =>
      open(path, 'wx', opts.mode ?? 0o600, (err, fd) =>
        err === null ? resolve(new FileSink(fd, depth)) : reject(err),
      ),
    );
  }

  get bytes(): number {
    return this.#pos;
  }

  #throwIfFailed(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  async write(chunks: readonly Buffer[], written?: () => void): Promise<void> {
    this.#throwIfFailed();
    while (this.#inflight >= this.#depth) {
      await new Promise<void>((r) => (this.#room = r));
      this.#throwIfFailed();
    }
    let len = 0;
    for (const c of chunks) len += c.length;
    const pos = this.#pos;
    this.#pos += len;
    this.#inflight++;
    this.#writeAll(chunks, pos, len, (err) => {
      this.#inflight--;
      if (err !== null) this.#error ??= err;
      written?.();
      const r = this.#room;
      this.#room = undefined;
      r?.();
      if (this.#inflight === 0) this.#idle?.();
    });
  }

  #writeAll(chunks: readonly Buffer[], pos: number, len: number, cb: (e: Error | null) => void) {
    writev(this.#fd, chunks as Buffer[], pos, (err, n) => {
      if (err !== null) return cb(err);
      if (n === len) return cb(null);
      if (n === 0) return cb(new Error('short write'));
      // Short write: the rest from where it stopped.
      const rest: Buffer[] = [];
      let skip = n;
      for (const c of chunks) {
        if (skip >= c.length) skip -= c.length;
        else {
          rest.push(skip > 0 ? c.subarray(skip) : c);
          skip = 0;
        }
      }
      this.#writeAll(rest, pos + n, len - n, cb);
    });
  }

  /** Waits for every write; throws the first write error. Closes the file. */
  async finish(): Promise<void> {
    await this.#drain();
    await this.close();
    this.#throwIfFailed();
  }

  async #drain(): Promise<void> {
    while (this.#inflight > 0) await new Promise<void>((r) => (this.#idle = r));
  }

  /** Waits for writes in flight (errors ignored) and closes the file. */
  async close(): Promise<void> {
    await this.#drain();
    if (this.#closed) return;
    this.#closed = true;
    await new Promise<void>((resolve) => close(this.#fd, () => resolve()));
  }
}
