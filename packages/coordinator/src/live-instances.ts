/**
 * Live instances per workload, in memory, for the `maxInstances` check of every activation
 * (docs/coordinator.md, "Activation", step 7).
 *
 * An instance is live until its mesh certificate expires. The store keeps each instance row
 * with its workload and expiry in clear-text metadata; this index is rebuilt from those rows at
 * start-up and then updated by the same synchronous code that writes the rows, inside the
 * commit, so it never disagrees with the store about a committed activation:
 * - the check and the update run in the commit callback, one activation after the other (the
 *   event loop serialises them), so the bound is exact without a lock held across `await`;
 * - if the commit as a whole fails, the caller undoes its update (`restore`).
 *
 * Counting is O(expired since the last count · log n): expiries sit in a min-heap per workload
 * and are dropped lazily; a heap entry whose instance was renewed or released since is stale
 * and is skipped.
 */

interface Entry {
  readonly exp: number;
  readonly id: string;
}

/** A binary min-heap on `exp`. */
class ExpiryHeap {
  readonly #a: Entry[] = [];
  get size(): number {
    return this.#a.length;
  }
  peek(): Entry | undefined {
    return this.#a[0];
  }
  push(e: Entry): void {
    const a = this.#a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((a[p] as Entry).exp <= e.exp) break;
      a[i] = a[p] as Entry;
      i = p;
    }
    a[i] = e;
  }
  pop(): Entry | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && (a[r] as Entry).exp < (a[l] as Entry).exp ? r : l;
      if ((a[c] as Entry).exp >= last.exp) break;
      a[i] = a[c] as Entry;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

interface Group {
  /** instance id -> expiry (ms) of its current certificate. */
  readonly live: Map<string, number>;
  readonly heap: ExpiryHeap;
}

/** What `set` replaced, for `restore`. */
export interface LiveUndo {
  readonly workload: string;
  readonly id: string;
  readonly previous: number | undefined;
}

export class LiveInstances {
  readonly #groups = new Map<string, Group>();

  #group(workload: string): Group {
    let g = this.#groups.get(workload);
    if (g === undefined) {
      g = { live: new Map(), heap: new ExpiryHeap() };
      this.#groups.set(workload, g);
    }
    return g;
  }

  /** Drops expired and stale heap entries of `g` up to `now`. */
  #expire(g: Group, now: number): void {
    for (let top = g.heap.peek(); top !== undefined && top.exp <= now; top = g.heap.peek()) {
      g.heap.pop();
      // Only delete when this entry is still the instance's current expiry (not renewed).
      if (g.live.get(top.id) === top.exp) g.live.delete(top.id);
    }
  }

  /** Live instances of `workload` at `now`. */
  count(workload: string, now: number): number {
    const g = this.#groups.get(workload);
    if (g === undefined) return 0;
    this.#expire(g, now);
    return g.live.size;
  }

  /** The expiry of a live instance, or undefined when it is not live at `now`. */
  expiry(workload: string, id: string, now: number): number | undefined {
    const exp = this.#groups.get(workload)?.live.get(id);
    return exp !== undefined && exp > now ? exp : undefined;
  }

  /** Records (or renews) instance `id` of `workload`, live until `exp`. */
  set(workload: string, id: string, exp: number): LiveUndo {
    const g = this.#group(workload);
    const previous = g.live.get(id);
    g.live.set(id, exp);
    g.heap.push({ exp, id });
    return { workload, id, previous };
  }

  /** Forgets instance `id` (released); returns the undo record. */
  delete(workload: string, id: string): LiveUndo {
    const g = this.#group(workload);
    const previous = g.live.get(id);
    g.live.delete(id);
    return { workload, id, previous };
  }

  /** Undoes one `set` or `delete` (its commit failed). */
  restore(u: LiveUndo): void {
    const g = this.#group(u.workload);
    if (u.previous === undefined) g.live.delete(u.id);
    else {
      g.live.set(u.id, u.previous);
      g.heap.push({ exp: u.previous, id: u.id });
    }
  }
}
