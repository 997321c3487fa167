/**
 * Simulation TEE measurement (docs/sim.md): what stands in for a launch digest.
 *
 *   measurement = SHA-384( "cloister/sim/measure/v1" || u32le(count)
 *                          || for each item: u32le(length) || bytes )
 *
 * with the executable's bytes as the first item and then each argument's UTF-8 bytes. The
 * length prefixes make the encoding injective: `["ab", "c"]` and `["a", "bc"]` differ.
 */
import { concatBytes, utf8 } from '../bytes.js';
import { sha384 } from '../crypto.js';

export const SIM_MEASURE_LABEL = 'cloister/sim/measure/v1';

function u32le(v: number): Uint8Array {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError('length exceeds u32');
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
}

/**
 * The bytes around the executable's in the measured encoding: SHA-384(head || executable ||
 * tail) is the measurement. For hashing a large executable as a stream (the coordinator's own,
 * a Node.js binary of ~100 MB) without holding it in memory.
 */
export function simMeasurementFraming(
  executableLength: number,
  args: readonly string[] = [],
): { readonly head: Uint8Array; readonly tail: Uint8Array } {
  const encoded = args.map((a) => utf8(a));
  return {
    head: concatBytes(utf8(SIM_MEASURE_LABEL), u32le(1 + encoded.length), u32le(executableLength)),
    tail: concatBytes(...encoded.flatMap((a) => [u32le(a.length), a])),
  };
}

/** SHA-384 measurement of an executable and its arguments (48 bytes). */
export async function simMeasurement(
  executable: Uint8Array,
  args: readonly string[] = [],
): Promise<Uint8Array> {
  const { head, tail } = simMeasurementFraming(executable.length, args);
  return sha384(concatBytes(head, executable, tail));
}
