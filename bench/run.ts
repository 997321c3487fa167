/**
 * `npm run bench [-- NAME...]`: runs the benchmarks and prints each figure as ratios measured in
 * the same run, against the physical limit on this machine (`openssl speed` for the primitive
 * that bounds the work) and against a peer doing the same work. Not a test: nothing asserts.
 */
const suites: Record<string, () => Promise<void>> = {
  evidence: async () => (await import('./evidence.js')).benchEvidence(),
  coordinator: async () => (await import('./coordinator.js')).benchCoordinator(),
  image: async () => {
    await (await import('./image.js')).benchImage();
  },
};

const wanted = process.argv.slice(2);
for (const [name, run] of Object.entries(suites)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  console.log(`\n== ${name} ==`);
  await run();
}
