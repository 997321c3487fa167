/**
 * The coordinator's state store: one SQLite file (better-sqlite3, WAL) under the data directory,
 * every value encrypted with AES-256-GCM under the data key.
 *
 * Why each choice:
 * - Storage is untrusted (DESIGN §1): a value is bound to its row by using `table \0 key` as the
 *   GCM additional data, so an attacker with the file cannot swap two rows (e.g. move a cheap
 *   secret into the slot of another) without failing authentication.
 * - Durability (docs/adr/0003-coordinator-durability.md). In WAL mode a committed transaction
 *   is in the WAL file, i.e. in the operating system's page cache, before `transaction()`
 *   returns, so with either setting an acknowledged write survives the coordinator process
 *   being killed (SIGKILL, crash, OOM). `durability: 'process'` (the default,
 *   `synchronous=NORMAL`) does not fsync at every commit, so an OS crash or power loss can lose
 *   the last transactions (never corrupt the database); `durability: 'full'`
 *   (`synchronous=FULL`) fsyncs the WAL at every commit and survives power loss too.
 * - Every multi-row change runs in one `BEGIN IMMEDIATE` transaction, so a crash leaves either
 *   all of it or none of it.
 * - better-sqlite3 is synchronous: a transaction is atomic with respect to every other request
 *   of this process without any lock held across an `await` (activations verify evidence
 *   concurrently and only their final check-and-insert is serialised).
 *
 * - Reads of the small tables every activation consults (the state, the current manifest and
 *   its CA, the secrets) are served from a cache of decrypted, frozen values: without it each
 *   activation paid an SQLite read, an AES-GCM decryption and a JSON parse per row, i.e. per
 *   secret of the manifest. The cache is filled only outside transactions (never with a write
 *   that could still roll back) and a table's entries are dropped on every write to it.
 *
 * Row metadata (`grp`, `exp`) is kept in the clear so the store can count live instances per
 * workload and purge expired instances and nonces without decrypting; it holds workload names
 * and expiry times only, never secret material.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { coordinatorError } from '../error-codes.js';
import type { Sealer } from './sealer.js';

/** Names of the tables the coordinator uses; each is a namespace of rows. */
export type TableName =
  'meta' | 'manifests' | 'history' | 'secrets' | 'instances' | 'nonces' | 'intermediates';

/**
 * What an acknowledged write survives: `process` = the coordinator process dying (SIGKILL,
 * crash); `full` = also an OS crash or power loss (an fsync per commit).
 */
export type Durability = 'process' | 'full';

export interface StoreOptions {
  /** Default `process`. */
  readonly durability?: Durability;
}

export interface PutOptions {
  /** Clear-text group (e.g. the workload of an instance), for counting. */
  readonly grp?: string;
  /** Clear-text expiry in ms since the epoch, for counting live rows and purging. */
  readonly exp?: number;
}

/** Tables read on every activation and written rarely: their decrypted rows are cached. */
const CACHED_TABLES: ReadonlySet<TableName> = new Set([
  'meta',
  'manifests',
  'intermediates',
  'secrets',
]);

/** Freezes a parsed JSON value all the way down, so a cached row cannot be changed by a caller. */
function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Decrypted rows of one cached table; `all` is the whole table in key order once listed. */
interface TableCache {
  readonly rows: Map<string, unknown>;
  all: [string, unknown][] | undefined;
}

const DB_FILE = 'state.db';
const KEY_FILE = 'data-key.sealed';
const KEY_FILE_MAGIC = 'cloister-sealed-data-key/v1';

/** Writes a file (owner-only) so that it is either absent or complete, even across a crash. */
function writeFileAtomic(dir: string, name: string, data: Uint8Array): void {
  const tmp = join(dir, `.${name}.tmp`);
  writeFileSync(tmp, data, { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, join(dir, name));
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Loads (or, on first start, creates and seals) the data key of `dataDir`. */
async function loadDataKey(dataDir: string, sealer: Sealer): Promise<Buffer> {
  const keyPath = join(dataDir, KEY_FILE);
  if (!existsSync(keyPath)) {
    if (existsSync(join(dataDir, DB_FILE))) {
      // A state file without its key is either tampering or an operator error; creating a new
      // key would silently orphan the old state, so refuse.
      throw coordinatorError(
        'COORDINATOR_UNSEAL_FAILED',
        `${KEY_FILE} is missing but ${DB_FILE} exists; restore the key file or recover the state`,
      );
    }
    const key = randomBytes(32);
    const sealed = await sealer.seal(key);
    const doc = JSON.stringify({
      format: KEY_FILE_MAGIC,
      sealer: sealer.kind,
      sealed: Buffer.from(sealed).toString('base64'),
    });
    try {
      writeFileAtomic(dataDir, KEY_FILE, Buffer.from(doc));
    } catch (cause) {
      throw coordinatorError('COORDINATOR_BAD_CONFIG', `cannot write ${KEY_FILE}`, { cause });
    }
    return key;
  }
  let sealed: Buffer;
  try {
    const doc = JSON.parse(readFileSync(keyPath, 'utf8')) as Record<string, unknown>;
    if (
      doc.format !== KEY_FILE_MAGIC ||
      doc.sealer !== sealer.kind ||
      typeof doc.sealed !== 'string'
    ) {
      throw new Error('unexpected key file');
    }
    sealed = Buffer.from(doc.sealed, 'base64');
  } catch (cause) {
    throw coordinatorError(
      'COORDINATOR_UNSEAL_FAILED',
      `${KEY_FILE} is not a ${sealer.kind} sealed key`,
      {
        cause,
      },
    );
  }
  const key = Buffer.from(await sealer.unseal(sealed));
  if (key.length !== 32)
    throw coordinatorError('COORDINATOR_UNSEAL_FAILED', 'unsealed key has the wrong size');
  return key;
}

/**
 * The typed error of an SQLite failure: a file that is not an intact database (truncated,
 * overwritten, bit flips) is COORDINATOR_STATE_CORRUPT; a file another process holds, or one
 * that cannot be opened or written (read-only or full disk), is a problem of the data directory.
 * Anything else is returned as it is.
 */
export function stateError(e: unknown): unknown {
  if (!(e instanceof Database.SqliteError)) return e;
  if (e.code === 'SQLITE_NOTADB' || e.code.startsWith('SQLITE_CORRUPT')) {
    return coordinatorError('COORDINATOR_STATE_CORRUPT', `${DB_FILE} is not an intact database`, {
      cause: e,
      details: { rule: 'sqlite', actual: e.code },
    });
  }
  return e;
}

/**
 * The typed error of a failure to open the database file: everything but corruption is the data
 * directory's (held by another coordinator, read-only, full, not a regular file...).
 */
function storeOpenError(e: unknown): unknown {
  const typed = stateError(e);
  if (typed !== e) return typed;
  const code = (e as { code?: unknown } | null)?.code;
  const actual = typeof code === 'string' ? code : 'unknown';
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
    return coordinatorError(
      'COORDINATOR_BAD_CONFIG',
      'the data directory is in use by another coordinator',
      { cause: e, details: { rule: 'dataDir', actual } },
    );
  }
  return coordinatorError('COORDINATOR_BAD_CONFIG', `cannot open ${DB_FILE}`, {
    cause: e,
    details: { rule: 'dataDir', actual },
  });
}

/** A change waiting for a group commit, and how it ended. */
interface Queued {
  readonly fn: () => unknown;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}
type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

/** The encrypted key/value store. Construct with `Store.open`. */
export class Store {
  readonly #db: Database.Database;
  readonly #key: Buffer;
  /** One transaction over a batch, each item in its own savepoint; made once, not per flush. */
  readonly #commitBatch: Database.Transaction<(batch: readonly Queued[]) => Settled[]>;
  /** When a group commit runs: see `commit`. */
  readonly #scheduleFlush: (flush: () => void) => void;
  readonly #cache = new Map<TableName, TableCache>();
  readonly #stmts: {
    get: Database.Statement<[string, string], { v: Buffer }>;
    put: Database.Statement<[string, string, Buffer, string | null, number | null]>;
    del: Database.Statement<[string, string]>;
    list: Database.Statement<[string], { k: string; v: Buffer }>;
    live: Database.Statement<[string, number], { k: string; grp: string | null; exp: number }>;
    purge: Database.Statement<[{ tbl: string; before: number; limit: number }]>;
    savepoint: Database.Statement<[]>;
    release: Database.Statement<[]>;
    rollbackTo: Database.Statement<[]>;
  };

  private constructor(db: Database.Database, key: Buffer, durability: Durability) {
    this.#db = db;
    this.#key = key;
    this.#scheduleFlush =
      durability === 'full' ? (flush) => setImmediate(flush) : (flush) => queueMicrotask(flush);
    this.#stmts = {
      get: db.prepare('SELECT v FROM rows WHERE tbl = ? AND k = ?'),
      put: db.prepare(
        'INSERT INTO rows (tbl, k, v, grp, exp) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v, grp = excluded.grp, exp = excluded.exp',
      ),
      del: db.prepare('DELETE FROM rows WHERE tbl = ? AND k = ?'),
      list: db.prepare('SELECT k, v FROM rows WHERE tbl = ? ORDER BY k'),
      live: db.prepare('SELECT k, grp, exp FROM rows WHERE tbl = ? AND exp > ? ORDER BY exp'),
      // The rows are picked first, at most `limit` of them (-1: all), so that a caller can
      // bound the work of one transaction. By key: the table has no rowid.
      purge: db.prepare(
        'DELETE FROM rows WHERE tbl = @tbl AND k IN ' +
          '(SELECT k FROM rows WHERE tbl = @tbl AND exp <= @before LIMIT @limit)',
      ),
      // One savepoint per queued commit inside the shared transaction (prepared once: building
      // a nested better-sqlite3 transaction function per commit cost more than the SQL).
      savepoint: db.prepare('SAVEPOINT queued'),
      release: db.prepare('RELEASE queued'),
      rollbackTo: db.prepare('ROLLBACK TO queued'),
    };
    this.#commitBatch = db.transaction((batch: readonly Queued[]): Settled[] =>
      batch.map((item) => {
        this.#stmts.savepoint.run();
        try {
          const value = item.fn();
          this.#stmts.release.run();
          return { ok: true, value };
        } catch (error) {
          this.#stmts.rollbackTo.run();
          this.#stmts.release.run();
          return { ok: false, error };
        }
      }),
    );
  }

  /** Opens the store of `dataDir`, creating it (and sealing a fresh data key) on first use. */
  static async open(dataDir: string, sealer: Sealer, opts: StoreOptions = {}): Promise<Store> {
    const durability = opts.durability ?? 'process';
    if (durability !== 'process' && durability !== 'full') {
      throw coordinatorError('COORDINATOR_BAD_CONFIG', 'durability is process or full', {
        details: { rule: 'durability', expected: ['process', 'full'], actual: durability },
      });
    }
    try {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    } catch (cause) {
      throw coordinatorError('COORDINATOR_BAD_CONFIG', 'cannot create the data directory', {
        cause,
      });
    }
    const key = await loadDataKey(dataDir, sealer);
    const dbPath = join(dataDir, DB_FILE);
    let db: Database.Database | undefined;
    try {
      // Owner-only from the start (the data directory may exist with a looser mode): SQLite
      // gives the WAL and SHM files the mode of the database file.
      if (!existsSync(dbPath)) closeSync(openSync(dbPath, 'a', 0o600));
      db = new Database(dbPath);
      // One coordinator per data directory: a second one on the same file would keep its own
      // live-instance index and row cache, so `maxInstances` would no longer be exact and each
      // would serve values the other had replaced. The lock is taken at the first read below
      // and held until close (the operating system drops it if the process dies).
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma(durability === 'full' ? 'synchronous = FULL' : 'synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      // Rows by expiry: the live instances read at start-up and each purge batch are range scans
      // of it (a purge batch of 1,000 among 200,000 rows: 6 ms, against 13-37 ms with the earlier
      // index on (tbl, grp, exp), which scanned every group's rows).
      db.exec(
        `CREATE TABLE IF NOT EXISTS rows (
           tbl TEXT NOT NULL, k TEXT NOT NULL, v BLOB NOT NULL, grp TEXT, exp INTEGER,
           PRIMARY KEY (tbl, k)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS rows_exp ON rows (tbl, exp);
         DROP INDEX IF EXISTS rows_grp;`,
      );
    } catch (cause) {
      db?.close();
      throw storeOpenError(cause);
    }
    return new Store(db, key, durability);
  }

  #aad(tbl: string, k: string): Buffer {
    return Buffer.from(`${tbl}\u0000${k}`, 'utf8');
  }

  #encrypt(tbl: string, k: string, value: unknown): Buffer {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#key, iv);
    c.setAAD(this.#aad(tbl, k));
    const ct = Buffer.concat([c.update(JSON.stringify(value), 'utf8'), c.final()]);
    return Buffer.concat([iv, c.getAuthTag(), ct]);
  }

  #decrypt(tbl: string, k: string, v: Buffer): unknown {
    try {
      const d = createDecipheriv('aes-256-gcm', this.#key, v.subarray(0, 12));
      d.setAAD(this.#aad(tbl, k));
      d.setAuthTag(v.subarray(12, 28));
      return JSON.parse(Buffer.concat([d.update(v.subarray(28)), d.final()]).toString('utf8'));
    } catch (cause) {
      throw coordinatorError(
        'COORDINATOR_STATE_CORRUPT',
        `stored row ${tbl}/${k} fails authentication`,
        {
          cause,
          details: { table: tbl },
        },
      );
    }
  }

  /**
   * The cache of `tbl` for a read. A hit is the committed value, and it is also the value inside
   * a transaction: any write to `tbl` (committed or not) drops the table's cache first, so a
   * table written in this transaction has no entries to hit. A miss may fill the cache only
   * outside a transaction, so a value that could still roll back is never kept.
   */
  #cacheOf(tbl: TableName): { cache: TableCache; fill: boolean } | undefined {
    if (!CACHED_TABLES.has(tbl)) return undefined;
    let cache = this.#cache.get(tbl);
    const fill = !this.#db.inTransaction;
    if (cache === undefined) {
      if (!fill) return undefined;
      cache = { rows: new Map(), all: undefined };
      this.#cache.set(tbl, cache);
    }
    return { cache, fill };
  }

  /**
   * A row's value, or undefined. Values of the cached tables are frozen (shared between
   * callers): copy before changing one.
   */
  get<T>(tbl: TableName, k: string): T | undefined {
    const c = this.#cacheOf(tbl);
    const cached = c?.cache.rows.get(k);
    if (cached !== undefined) return cached as T;
    const row = this.#stmts.get.get(tbl, k);
    if (row === undefined) return undefined;
    const value = this.#decrypt(tbl, k, row.v);
    // Only rows that exist: the cache holds no more than the table (a request naming missing
    // keys cannot grow it).
    if (c?.fill === true) c.cache.rows.set(k, deepFreeze(value));
    return value as T;
  }

  put(tbl: TableName, k: string, value: unknown, opts: PutOptions = {}): void {
    this.#cache.delete(tbl);
    this.#stmts.put.run(tbl, k, this.#encrypt(tbl, k, value), opts.grp ?? null, opts.exp ?? null);
  }

  /** Deletes a row; true when it existed. */
  delete(tbl: TableName, k: string): boolean {
    this.#cache.delete(tbl);
    return this.#stmts.del.run(tbl, k).changes > 0;
  }

  /** Every row of `tbl` in key order (frozen for the cached tables, see `get`). */
  list<T>(tbl: TableName): [string, T][] {
    const c = this.#cacheOf(tbl);
    if (c?.cache.all !== undefined) return [...c.cache.all] as [string, T][];
    const all = this.#stmts.list
      .all(tbl)
      .map((r): [string, unknown] => [r.k, this.#decrypt(tbl, r.k, r.v)]);
    if (c?.fill === true) {
      const cached = all.map(([k, v]): [string, unknown] => [k, deepFreeze(v)]);
      c.cache.all = cached;
      for (const [k, v] of cached) c.cache.rows.set(k, v);
    }
    return all as [string, T][];
  }

  /** Clear-text metadata of the rows of `tbl` that expire after `now`, soonest first. */
  liveRows(tbl: TableName, now: number): { k: string; grp: string | null; exp: number }[] {
    return this.#stmts.live.all(tbl, now);
  }

  /**
   * Deletes rows of `tbl` that expired at or before `before`, at most `limit` of them (all
   * without it); returns how many it deleted. Fewer than `limit` means none is left.
   */
  purgeExpired(tbl: TableName, before: number, limit?: number): number {
    this.#cache.delete(tbl);
    return this.#stmts.purge.run({ tbl, before, limit: limit ?? -1 }).changes;
  }

  /** Work waiting for the next group commit. */
  #pending: Queued[] = [];

  /**
   * Group commit: runs `fn` (synchronous) in its own savepoint inside a transaction shared with
   * the other queued `commit`s, and resolves once that transaction is committed (durable as the
   * store's durability says). Each `fn` still sees the writes of those queued before it (they
   * run in order) and a throwing `fn` rolls back only its own writes.
   *
   * How much is grouped depends on what a commit costs:
   * - `durability: 'full'`: every commit waits for an fsync (about 5 ms on a virtual disk), so
   *   the group is everything queued in the same turn of the event loop: one fsync acknowledges
   *   all the activations whose requests were read in that turn.
   * - `durability: 'process'`: a commit is a write to the page cache (tens of µs), so the group
   *   is what is queued before the current microtasks run out, usually one activation. Waiting
   *   for the end of the turn would hold every response of the turn until the last request of
   *   the turn is verified: under load the agents then receive their answers in bursts and the
   *   coordinator idles while they work through them (measured: a fifth of its time at 50
   *   concurrent agents).
   */
  commit<R>(fn: () => R): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (this.#pending.length === 1) this.#scheduleFlush(() => this.#flush());
    });
  }

  #flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    let results: Settled[];
    try {
      results = this.#commitBatch.immediate(batch);
    } catch (error) {
      // The commit itself failed (disk full, closed): nothing of the batch is acknowledged.
      for (const item of batch) item.reject(error);
      return;
    }
    batch.forEach((item, i) => {
      const r = results[i];
      if (r?.ok === true) item.resolve(r.value);
      else item.reject(r?.error);
    });
  }

  /**
   * Runs `fn` in one immediate transaction: all of its writes commit together (before this
   * returns, with the store's durability) or none do. `fn` must be synchronous.
   */
  transaction<R>(fn: () => R): R {
    return this.#db.transaction(fn).immediate();
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
