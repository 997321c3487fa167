/**
 * Every single-byte change of every real SEV-SNP report is rejected with a CloisterError: bytes
 * in the signed region break the signature (or a parse check first), r and s break the
 * signature, and the rest of the signature area must be zero. Never a TypeError or RangeError.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readVector, requireVectors } from '@cloister/testkit';
import { isCloisterError } from '@cloister/errors';
import { verifySnpReport } from '@cloister/evidence';
import { SNP_VECTORS } from './snp-vectors.js';

const dir = requireVectors();

for (const v of SNP_VECTORS) {
  test(
    `${v.name}: every single-byte mutation is rejected`,
    { skip: dir === undefined },
    async () => {
      const off = v.offset ?? 0;
      const good = readVector(v.report).slice(off, off + 1184);
      const opts = { now: new Date(v.at), vcek: readVector(v.cert) };
      await verifySnpReport(good, opts); // warm the chain cache; the original verifies
      const codes = new Map<string, number>();
      const accepted: number[] = [];
      const BATCH = 64;
      for (let start = 0; start < good.length; start += BATCH) {
        const batch: Promise<void>[] = [];
        for (let i = start; i < Math.min(start + BATCH, good.length); i++) {
          const bad = new Uint8Array(good);
          bad[i] = (bad[i] as number) ^ 0xff;
          batch.push(
            verifySnpReport(bad, opts).then(
              () => {
                accepted.push(i);
              },
              (e: unknown) => {
                assert.ok(isCloisterError(e), `offset 0x${i.toString(16)}: ${String(e)}`);
                codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
              },
            ),
          );
        }
        await Promise.all(batch);
      }
      assert.deepEqual(accepted, [], 'mutations that were accepted');
      // The bulk of the signed region is caught by the signature itself.
      assert.ok((codes.get('SIGNATURE_INVALID') ?? 0) > 300);
      assert.ok((codes.get('EVIDENCE_BAD_FIELD') ?? 0) > 0);
    },
  );
}
