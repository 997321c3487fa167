import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { simMeasurement } from '@cloister/evidence';
import { COORDINATOR_VERSION, coordinatorSimMeasurement } from '../src/measurement.js';

test('the streamed coordinator measurement equals simMeasurement of the whole file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cloister-measure-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Sizes around the 1 MiB read chunk, and an empty file.
  for (const size of [0, 1, 1024 * 1024 - 1, 1024 * 1024, 3 * 1024 * 1024 + 17]) {
    const file = join(dir, `exe-${size}`);
    const bytes = randomBytes(size);
    writeFileSync(file, bytes);
    assert.deepEqual(
      await coordinatorSimMeasurement(file),
      await simMeasurement(new Uint8Array(bytes), ['@cloister/coordinator', COORDINATOR_VERSION]),
      `size ${size}`,
    );
  }
});

test("the coordinator's own measurement is memoised and keeps no copy of the executable", async () => {
  const external = (): number => process.memoryUsage().external;
  const before = external();
  const a = await coordinatorSimMeasurement();
  // Node.js is ~100 MB: hashed as a stream, nothing near that size stays behind.
  assert.ok(external() - before < 16 * 1024 * 1024, `external grew by ${external() - before}`);
  assert.equal(await coordinatorSimMeasurement(), a);
});
