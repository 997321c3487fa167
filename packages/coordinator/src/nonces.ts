/**
 * One-time activation nonces (DESIGN §3, "Activate a workload", step 1).
 *
 * A nonce is 32 random bytes, valid for a short TTL, and consumed by the first activation that
 * presents it, successful or not. This stops replay of recorded evidence: evidence is only
 * accepted when its report data binds a nonce this coordinator issued, has not yet seen used,
 * and that has not expired.
 *
 * Outstanding nonces live in memory only, and that is deliberate (docs/adr/0003): what a
 * restart must guarantee is that a consumed nonce is never accepted again, and that holds
 * without a durable write, because a restarted coordinator starts with no outstanding nonce at
 * all. A nonce issued before a crash is simply invalid afterwards (the agent asks for a new
 * one), and a 256-bit random value is never issued twice. Writing each nonce to disk at issue
 * and again at consumption would protect nothing more and cost two commits per activation.
 *
 * Consumption is synchronous (no `await` between the lookup and the delete), so two concurrent
 * requests presenting one nonce cannot both pass: JavaScript runs one of them to completion
 * first.
 */
import { randomBytes } from 'node:crypto';
import { coordinatorError } from './error-codes.js';

export interface IssuedNonce {
  /** base64url, 43 characters. */
  readonly nonce: string;
  readonly expiresAt: Date;
}

/** Default bound on outstanding nonces (about 100 bytes each). */
export const DEFAULT_MAX_OUTSTANDING_NONCES = 200_000;

export class NonceStore {
  readonly #ttlMs: number;
  readonly #max: number;
  /** nonce -> expiry (ms). Insertion order is issue order, so expiry order for a fixed TTL. */
  readonly #live = new Map<string, number>();

  constructor(ttlMs: number, maxOutstanding = DEFAULT_MAX_OUTSTANDING_NONCES) {
    this.#ttlMs = ttlMs;
    this.#max = maxOutstanding;
  }

  /** Outstanding (issued, unused, not yet purged) nonces. */
  get size(): number {
    return this.#live.size;
  }

  /** Drops expired nonces from the front (oldest first); stops at the first live one. */
  #purge(now: number): void {
    for (const [n, exp] of this.#live) {
      if (exp > now) break;
      this.#live.delete(n);
    }
  }

  /**
   * Issues a nonce. Refuses with COORDINATOR_BUSY when too many are outstanding: the challenge
   * endpoint is unauthenticated, so without a bound a client could grow the coordinator's
   * memory without limit by asking for nonces it never uses.
   */
  issue(now: Date): IssuedNonce {
    this.#purge(now.getTime());
    if (this.#live.size >= this.#max) {
      throw coordinatorError('COORDINATOR_BUSY', 'too many outstanding activation nonces', {
        details: {
          rule: 'nonces.outstanding',
          expected: `< ${this.#max}`,
          actual: this.#live.size,
        },
      });
    }
    const nonce = randomBytes(32).toString('base64url');
    const exp = now.getTime() + this.#ttlMs;
    this.#live.set(nonce, exp);
    return { nonce, expiresAt: new Date(exp) };
  }

  /**
   * Consumes `nonce`: succeeds once per issued nonce within its TTL; COORDINATOR_NONCE_INVALID
   * when it is unknown, used or expired. The nonce is gone after the first presentation, even
   * when that presentation fails, so a nonce is tried at most once.
   */
  consume(nonce: string, now: Date): void {
    const exp = this.#live.get(nonce);
    if (exp === undefined) {
      throw coordinatorError('COORDINATOR_NONCE_INVALID', 'the nonce is unknown or already used', {
        details: {
          rule: 'nonce.fresh',
          expected: 'an unused nonce from /v1/activate/challenge',
          actual: 'unknown or used',
        },
      });
    }
    this.#live.delete(nonce);
    if (exp <= now.getTime()) {
      throw coordinatorError('COORDINATOR_NONCE_INVALID', 'the nonce has expired', {
        details: {
          rule: 'nonce.ttl',
          expected: `before ${new Date(exp).toISOString()}`,
          actual: now.toISOString(),
        },
      });
    }
  }
}
