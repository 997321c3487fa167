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

/** SHA-384 measurement of an executable and its arguments (48 bytes). */
export async function simMeasurement(
  executable: Uint8Array,
  args: readonly string[] = [],
): Promise<Uint8Array> {
  const items = [executable, ...args.map((a) => utf8(a))];
  const parts: Uint8Array[] = [utf8(SIM_MEASURE_LABEL), u32le(items.length)];
  for (const it of items) parts.push(u32le(it.length), it);
  return sha384(concatBytes(...parts));
}
