// Renders manifest.json from manifest.template.json: "@IMAGE@" becomes the image pin from
// `cloister image convert --json`, "@MEASUREMENT@" the sim measurement of `runc image DIGEST`,
// "@OWNER_PUBLIC_KEY@" the owner's public key. Reference values are computed, never pasted.
// Usage: node render-manifest.mjs TEMPLATE CONVERT_JSON MEASUREMENT OWNER_PUB OUT
import { readFileSync, writeFileSync } from 'node:fs';

const [template, convert, measurement, ownerPub, out] = process.argv.slice(2);
if (out === undefined) {
  console.error('usage: render-manifest.mjs TEMPLATE CONVERT_JSON MEASUREMENT OWNER_PUB OUT');
  process.exit(2);
}
const rv = JSON.parse(readFileSync(convert, 'utf8')).referenceValues;
const values = {
  '@IMAGE@': {
    ref: 'oci:image:v1',
    manifestDigest: rv.manifestDigest,
    configDigest: rv.configDigest,
    diffIds: rv.diffIds,
  },
  '@MEASUREMENT@': measurement,
  '@OWNER_PUBLIC_KEY@': readFileSync(ownerPub, 'utf8'),
};
const fill = (v) => {
  if (typeof v === 'string') return Object.hasOwn(values, v) ? values[v] : v;
  if (Array.isArray(v)) return v.map(fill);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x)]));
  return v;
};
writeFileSync(
  out,
  `${JSON.stringify(fill(JSON.parse(readFileSync(template, 'utf8'))), null, 2)}\n`,
);
