#!/usr/bin/env bash
# A confidential image (docs/images.md "Key release"): a busybox image encrypted to an image key,
# run by `cloister up` under runc. The coordinator releases the image key (a user-defined secret
# in a file template) and a greeting only to the attested workload; the container prints the
# greeting. Needs runc, umoci and busybox-static. Exits 0 only if the container printed it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CLOISTER="${CLOISTER:-node $ROOT/packages/cli/bin/cloister.js}"
WORK="${IMAGE_EXAMPLE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cloister-image.XXXXXX")}"
cloister() { $CLOISTER "$@"; }
step() { printf '\n== %s\n' "$*"; }
[[ -n "${IMAGE_EXAMPLE_DIR:-}" || -n "${KEEP:-}" ]] || trap 'rm -rf "$WORK"' EXIT
command -v runc >/dev/null || { echo "runc is not installed" >&2; exit 20; }

step "1. build the busybox test image"
"$ROOT/scripts/build-test-image.sh" "$WORK/build" >/dev/null

step "2. an image key pair and the owner key"
mkdir -p "$WORK/secrets"
node -e '
const { generateKeyPairSync } = require("node:crypto");
const fs = require("node:fs");
const k = generateKeyPairSync("rsa", { modulusLength: 3072 });
fs.writeFileSync(process.argv[1], k.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
fs.writeFileSync(process.argv[2], k.publicKey.export({ type: "spki", format: "pem" }));
' "$WORK/secrets/imageKey" "$WORK/image-key.pub.pem"
printf 'hello from a secret the coordinator released' >"$WORK/secrets/greeting"
cloister keygen owner --out "$WORK" >/dev/null

step "3. encrypt the image to the image key (ocicrypt jwe) and print its reference values"
cloister image convert "oci:$WORK/build/busybox:latest" "oci:$WORK/image:v1" \
  --recipient "jwe:$WORK/image-key.pub.pem" --json >"$WORK/convert.json"
DIGEST="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).referenceValues.manifestDigest)' "$WORK/convert.json")"
echo "manifestDigest: $DIGEST"

step "4. the manifest: measurement of 'runc image DIGEST', the image pin, the key in a file"
MEASUREMENT="$(cloister sim measure --json runc image "$DIGEST" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).measurement))')"
node "$HERE/render-manifest.mjs" "$HERE/manifest.template.json" "$WORK/convert.json" \
  "$MEASUREMENT" "$WORK/owner.pub.pem" "$WORK/manifest.json"
cp "$HERE/workloads.json" "$WORK/"

step "5. cloister up: coordinator, manifest, secrets (imageKey, greeting), the agent runs the image"
cloister up "$WORK" 2>&1 | tee "$WORK/up.log"
grep -q 'hello from a secret the coordinator released' "$WORK/up.log" ||
  { echo "the container did not print the released secret" >&2; exit 1; }
grep -q 'exited with status 0' "$WORK/up.log" || { echo "the container failed" >&2; exit 1; }
echo "confidential image OK: the key was released after attestation and the image ran under runc"
