/**
 * Sealing of the coordinator's data key to the TEE it runs in.
 *
 * The data key encrypts every value the store writes; whoever holds it can read and forge the
 * whole state. It therefore never touches the disk in the clear: it is sealed by a `Sealer`,
 * a key only the same TEE running the same coordinator code can derive. Hardware sealers
 * (SEV-SNP `MSG_KEY_REQ` derived keys, TPM objects sealed to PCRs) implement the same interface.
 *
 * The simulation sealer stands in for them in development: its sealing key is
 * HKDF-SHA256(ikm = the sim platform's private scalar (`d` of its JWK), salt =
 * "cloister/seal/sim/v1", info = the coordinator's measurement), so another sim platform, or
 * other coordinator code, cannot unseal the key file. It protects nothing against whoever can read the sim root
 * directory, which is exactly the simulation TEE's trust model (a software root key).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { coordinatorError } from '../error-codes.js';

/** Seals small secrets (the data key) to the TEE and code that sealed them. */
export interface Sealer {
  /** A short name recorded next to the sealed blob ("sim", "snp", "tpm"). */
  readonly kind: string;
  seal(plaintext: Uint8Array): Promise<Uint8Array>;
  /** Throws COORDINATOR_UNSEAL_FAILED when the blob was sealed elsewhere or tampered with. */
  unseal(blob: Uint8Array): Promise<Uint8Array>;
}

const SEALED_V1 = 1;
const AAD = Buffer.from('cloister/sealed-data-key/v1');

/** AES-256-GCM sealing under a key derived from a platform secret and a code identity. */
export class DerivedKeySealer implements Sealer {
  readonly kind: string;
  readonly #key: Buffer;

  /**
   * @param kind name of the platform ("sim")
   * @param platformSecret the platform's secret key material (never leaves this object)
   * @param codeIdentity the measurement of the code allowed to unseal
   */
  constructor(kind: string, platformSecret: Uint8Array, codeIdentity: Uint8Array) {
    if (platformSecret.length < 16) {
      throw coordinatorError('COORDINATOR_BAD_CONFIG', 'platform secret too short to seal with');
    }
    this.kind = kind;
    this.#key = Buffer.from(
      hkdfSync('sha256', platformSecret, `cloister/seal/${kind}/v1`, codeIdentity, 32),
    );
  }

  seal(plaintext: Uint8Array): Promise<Uint8Array> {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#key, iv);
    c.setAAD(AAD);
    const ct = Buffer.concat([c.update(plaintext), c.final()]);
    return Promise.resolve(
      new Uint8Array(Buffer.concat([Buffer.of(SEALED_V1), iv, c.getAuthTag(), ct])),
    );
  }

  unseal(blob: Uint8Array): Promise<Uint8Array> {
    try {
      if (blob.length < 1 + 12 + 16 || blob[0] !== SEALED_V1) throw new Error('bad header');
      const b = Buffer.from(blob);
      const d = createDecipheriv('aes-256-gcm', this.#key, b.subarray(1, 13));
      d.setAAD(AAD);
      d.setAuthTag(b.subarray(13, 29));
      return Promise.resolve(new Uint8Array(Buffer.concat([d.update(b.subarray(29)), d.final()])));
    } catch (cause) {
      return Promise.reject(
        coordinatorError(
          'COORDINATOR_UNSEAL_FAILED',
          `the sealed data key does not unseal on this ${this.kind} platform`,
          { cause },
        ),
      );
    }
  }
}
