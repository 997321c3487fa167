#!/usr/bin/env bash
# Installs what Cloister's quickstart and tests need on a Debian machine with Node 20 and npm:
# the Debian packages of the real components (runc, skopeo, umoci, registry, etcd, swtpm, ...)
# and the npm dependencies (which also builds the TypeScript packages).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(openssl runc skopeo umoci docker-registry etcd-server etcd-client swtpm swtpm-tools tpm2-tools
  busybox-static curl python3 stunnel4 haproxy iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
  echo "setup: installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund
else
  npx tsc -b
fi
