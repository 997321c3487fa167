#!/usr/bin/env bash
# Builds a small, real OCI image without Docker: Debian's statically linked busybox in an OCI
# image layout under OUT_DIR, tagged `busybox:latest` (one gzip layer, linux/amd64).
#   usage: scripts/build-test-image.sh OUT_DIR
# Needs: umoci, busybox-static (Debian packages of the same names).
set -euo pipefail

out=${1:?usage: build-test-image.sh OUT_DIR}
busybox=${BUSYBOX:-/bin/busybox}
for tool in umoci; do
  command -v "$tool" >/dev/null || { echo "build-test-image: $tool is not installed" >&2; exit 20; }
done
[[ -x $busybox ]] || { echo "build-test-image: $busybox not found (install busybox-static)" >&2; exit 20; }
if ! file_out=$(LC_ALL=C od -An -c -N4 "$busybox" 2>/dev/null) || [[ $file_out != *E*L*F* ]]; then
  echo "build-test-image: $busybox is not an ELF binary" >&2; exit 20
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -rf "$out/busybox-layout.tmp"
layout="$out/busybox-layout.tmp"

umoci init --layout "$layout"
umoci new --image "$layout:busybox"
# --rootless keeps file ownership as recorded (root) without needing CAP_CHOWN.
umoci unpack --rootless --image "$layout:busybox" "$work/bundle"
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/root"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in sh echo cat ls env id sleep true false mount ps; do
  ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
umoci repack --image "$layout:busybox" "$work/bundle"
umoci config --image "$layout:busybox" --tag latest \
  --os linux --architecture amd64 \
  --config.entrypoint /bin/sh --config.cmd -c --config.cmd 'echo hello from busybox' \
  --config.env PATH=/bin --config.workingdir / \
  --author cloister-test --created 2024-01-01T00:00:00Z
umoci rm --image "$layout:busybox"
umoci gc --layout "$layout"
rm -rf "${out:?}/busybox"
mv "$layout" "$out/busybox"
echo "$out/busybox"
