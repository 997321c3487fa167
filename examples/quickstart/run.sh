#!/usr/bin/env bash
# The quickstart (docs/quickstart.md): run a small confidential deployment on the simulation TEE,
# verify it from the outside, and fetch its page over TLS pinned to the verified root CA.
# Exits 0 only if every step checked out.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CLOISTER="${CLOISTER:-node $ROOT/packages/cli/bin/cloister.js}"
WORK="${QUICKSTART_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cloister-quickstart.XXXXXX")}"
UP_PID=""

cloister() { $CLOISTER "$@"; }
step() { printf '\n== %s\n' "$*"; }
cleanup() {
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  if [[ -z "${QUICKSTART_DIR:-}" && -z "${KEEP:-}" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "1. a deployment directory: $WORK"
mkdir -p "$WORK"
cp "$HERE/workloads.json" "$WORK/"
cp -r "$HERE/secrets" "$WORK/"

step "2. an owner key (signs the manifest and uploads secrets)"
cloister keygen owner --out "$WORK"

step "3. the manifest, with reference values computed by 'cloister sim measure'"
node "$HERE/render-manifest.mjs" "$HERE/manifest.template.json" "$WORK/workloads.json" \
  "$WORK/owner.pub.pem" "$WORK/manifest.json"

step "4. cloister up: coordinator, manifest, secret, one agent per workload"
# Started directly (not through the shell function) so that $! is the cloister process itself.
$CLOISTER up "$WORK" --keep-running >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 300); do
  [[ -f "$WORK/.cloister/up.json" ]] && break
  if ! kill -0 "$UP_PID" 2>/dev/null; then cat "$WORK/up.log"; echo "cloister up failed" >&2; exit 1; fi
  sleep 0.2
done
[[ -f "$WORK/.cloister/up.json" ]] || { cat "$WORK/up.log"; echo "cloister up did not become ready" >&2; exit 1; }
COORDINATOR="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).coordinator)' "$WORK/.cloister/up.json")"
echo "coordinator at $COORDINATOR"

step "5. cloister verify: attest the coordinator, check the manifest, save its root CA"
cloister verify --coordinator "$COORDINATOR" --allow-simulation --sim-root "$WORK/.cloister/sim" \
  --manifest "$WORK/manifest.json" --save-root "$WORK/root-ca.pem"

step "6. the client workload reached web through its egress (mTLS, SPIFFE-checked)"
for _ in $(seq 1 150); do
  grep -q 'client fetched through the mesh' "$WORK/up.log" && break
  sleep 0.2
done
grep 'client fetched through the mesh' "$WORK/up.log" || { cat "$WORK/up.log"; echo "the client did not get the page" >&2; exit 1; }

step "7. fetch the page over TLS pinned to the verified root CA"
PAGE="$(curl --silent --show-error --fail --retry 20 --retry-delay 1 --retry-all-errors \
  --cacert "$WORK/root-ca.pem" https://localhost:8443/)"
echo "$PAGE"
GREETING="$(cat "$HERE/secrets/greeting")"
if [[ "$PAGE" != *"$GREETING"* ]]; then echo "the page does not carry the secret" >&2; exit 1; fi

step "8. stop everything"
kill -TERM "$UP_PID"
wait "$UP_PID" || true
UP_PID=""
echo "quickstart OK: verified coordinator, attested workloads, page served over pinned TLS"
