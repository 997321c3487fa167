/**
 * What a client needs to compute this coordinator's expected simulation measurement, apart from
 * the server (a subpath export, `@cloister/coordinator/measurement`, so `cloister verify` does
 * not load Fastify, SQLite and the rest to hash one file).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { simMeasurementFraming } from '@cloister/evidence';

/** The coordinator package version (reported by /v1/status, part of the sim measurement). */
export const COORDINATOR_VERSION = '0.1.0';

const ARGS = ['@cloister/coordinator', COORDINATOR_VERSION];

/**
 * simMeasurement(bytes of `file`, ARGS), hashed as the file streams by: the executable is a
 * Node.js binary of ~100 MB, which read whole would leave that much garbage (and twice as much
 * in copies) that the collector may keep for the life of the process (measured: 200 MB of
 * external memory, a long-running coordinator's largest item).
 */
async function measureFile(file: string): Promise<Uint8Array> {
  const { size } = await stat(file);
  const { head, tail } = simMeasurementFraming(size, ARGS);
  const h = createHash('sha384').update(head);
  let read = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    read += (chunk as Buffer).length;
    h.update(chunk as Buffer);
  }
  // The length prefix was taken before reading: a file that changed meanwhile is not measured.
  if (read !== size) throw new Error(`${file} changed while it was measured`);
  return new Uint8Array(h.update(tail).digest());
}

let measurementCache: Promise<Uint8Array> | undefined;

/**
 * The simulation measurement of this coordinator: simMeasurement(Node.js executable bytes,
 * ["@cloister/coordinator", version]). Memoised per process.
 */
export function coordinatorSimMeasurement(
  execPath: string = process.execPath,
): Promise<Uint8Array> {
  if (execPath !== process.execPath) return measureFile(execPath);
  measurementCache ??= measureFile(execPath);
  return measurementCache;
}
