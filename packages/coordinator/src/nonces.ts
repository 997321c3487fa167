/**
 * One-time activation nonces (DESIGN §3, "Activate a workload", step 1).
 *
 * A nonce is 32 random bytes, valid for a short TTL, and consumed by the first activation that
 * presents it, successful or not. This stops replay of recorded evidence: evidence is only
 * accepted when its report data binds a nonce this coordinator issued, has not yet seen used,
 * and that has not expired. Nonces live in the store (not in memory), so a restart neither
 * forgets outstanding ones nor resurrects used ones: consumption is a durable delete.
 */
import { randomBytes } from 'node:crypto';
import { coordinatorError } from './error-codes.js';
import type { Store } from './store/store.js';

export interface IssuedNonce {
  /** base64url, 43 characters. */
  readonly nonce: string;
  readonly expiresAt: Date;
}

export class NonceStore {
  readonly #store: Store;
  readonly #ttlMs: number;

  constructor(store: Store, ttlMs: number) {
    this.#store = store;
    this.#ttlMs = ttlMs;
  }

  /** Issues a nonce; resolves once it is stored durably. */
  async issue(now: Date): Promise<IssuedNonce> {
    const nonce = randomBytes(32).toString('base64url');
    const exp = now.getTime() + this.#ttlMs;
    await this.#store.commit(() => {
      // Opportunistic purge keeps the table bounded without a timer.
      this.#store.purgeExpired('nonces', now.getTime());
      this.#store.put('nonces', nonce, { exp }, { exp });
    });
    return { nonce, expiresAt: new Date(exp) };
  }

  /**
   * Consumes `nonce` durably (group commit); rejects with COORDINATOR_NONCE_INVALID when it is
   * unknown, used or expired. Consumptions run one after the other inside the commit, so two
   * concurrent requests presenting the same nonce cannot both succeed.
   */
  consumeDurably(nonce: string, now: Date): Promise<void> {
    return this.#store.commit(() => this.consume(nonce, now));
  }

  /**
   * Consumes `nonce` synchronously: succeeds once per issued nonce within its TTL. Call it inside
   * a transaction (or use `consumeDurably`).
   */
  consume(nonce: string, now: Date): void {
    const row = this.#store.get<{ exp: number }>('nonces', nonce);
    if (row === undefined) {
      throw coordinatorError('COORDINATOR_NONCE_INVALID', 'the nonce is unknown or already used', {
        details: {
          rule: 'nonce.fresh',
          expected: 'an unused nonce from /v1/activate/challenge',
          actual: 'unknown or used',
        },
      });
    }
    this.#store.delete('nonces', nonce);
    if (row.exp <= now.getTime()) {
      throw coordinatorError('COORDINATOR_NONCE_INVALID', 'the nonce has expired', {
        details: {
          rule: 'nonce.ttl',
          expected: `before ${new Date(row.exp).toISOString()}`,
          actual: now.toISOString(),
        },
      });
    }
  }
}
