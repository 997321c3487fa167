// Renders manifest.json from manifest.template.json: each "@MEASUREMENT:<workload>@" becomes the
// sim measurement of that workload's command in workloads.json, as `cloister sim measure` computes
// it, and "@OWNER_PUBLIC_KEY@" the owner's public key. Reference values are computed, never pasted.
// Usage: node render-manifest.mjs TEMPLATE WORKLOADS OWNER_PUB OUT   (CLOISTER = how to run the CLI)
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const [template, workloads, ownerPub, out] = process.argv.slice(2);
if (out === undefined) {
  console.error('usage: render-manifest.mjs TEMPLATE WORKLOADS OWNER_PUB OUT');
  process.exit(2);
}
const [cmd, ...pre] = (process.env.CLOISTER ?? 'cloister').split(/\s+/).filter(Boolean);
const run = JSON.parse(readFileSync(workloads, 'utf8'));
const manifest = JSON.parse(readFileSync(template, 'utf8'));
const measurements = {};
for (const [name, w] of Object.entries(run.workloads)) {
  // execFile with an argument array: the command is passed exactly, no shell quoting involved.
  const res = JSON.parse(
    execFileSync(cmd, [...pre, 'sim', 'measure', '--json', '--', ...w.command], {
      encoding: 'utf8',
    }),
  );
  measurements[name] = res.measurement;
}
const owner = readFileSync(ownerPub, 'utf8');
const fill = (v) => {
  if (typeof v === 'string') {
    if (v === '@OWNER_PUBLIC_KEY@') return owner;
    const m = /^@MEASUREMENT:([A-Za-z0-9_-]+)@$/.exec(v);
    if (m !== null) {
      if (measurements[m[1]] === undefined) throw new Error(`no command for workload ${m[1]}`);
      return measurements[m[1]];
    }
    return v;
  }
  if (Array.isArray(v)) return v.map(fill);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x)]));
  return v;
};
writeFileSync(out, `${JSON.stringify(fill(manifest), null, 2)}\n`);
for (const [name, m] of Object.entries(measurements)) console.log(`  ${name.padEnd(8)} ${m}`);
