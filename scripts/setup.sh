#!/usr/bin/env bash
# Installs what Cloister's quickstart and tests need on a Debian machine with Node 20 and npm:
# the Debian packages of the real components the tests start (runc, skopeo, umoci, registry)
# and the npm dependencies (which also builds the TypeScript packages).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests and the quickstart use: openssl (bench limits, test certificates), runc, skopeo,
# umoci, docker-registry and busybox-static (images), curl and python3 (the quickstart's
# unmodified programs).
packages=(openssl runc skopeo umoci docker-registry busybox-static curl python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 -qq)
  "${apt[@]}" update
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund
else
  npx tsc -b
fi
