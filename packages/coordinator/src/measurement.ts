/**
 * What a client needs to compute this coordinator's expected simulation measurement, apart from
 * the server (a subpath export, `@cloister/coordinator/measurement`, so `cloister verify` does
 * not load Fastify, SQLite and the rest to hash one file).
 */
import { readFile } from 'node:fs/promises';
import { simMeasurement } from '@cloister/evidence';

/** The coordinator package version (reported by /v1/status, part of the sim measurement). */
export const COORDINATOR_VERSION = '0.1.0';

let measurementCache: Promise<Uint8Array> | undefined;

/**
 * The simulation measurement of this coordinator: simMeasurement(Node.js executable bytes,
 * ["@cloister/coordinator", version]). Memoised per process (the executable is ~100 MB).
 */
export function coordinatorSimMeasurement(
  execPath: string = process.execPath,
): Promise<Uint8Array> {
  if (execPath !== process.execPath) {
    return readFile(execPath).then((b) =>
      simMeasurement(new Uint8Array(b), ['@cloister/coordinator', COORDINATOR_VERSION]),
    );
  }
  measurementCache ??= readFile(execPath).then((b) =>
    simMeasurement(new Uint8Array(b), ['@cloister/coordinator', COORDINATOR_VERSION]),
  );
  return measurementCache;
}
