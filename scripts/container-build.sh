#!/usr/bin/env bash
# Build metro's container image from deploy/container/Containerfile, with no image registry:
#   - the base is Debian 12's libpcap0.8 and its dependencies, unpacked by mmdebstrap
#     (variant `extract`: files only, no shell, no package manager);
#   - the binary is the one in the Debian package (scripts/package.sh), with the
#     file capabilities set here (cap_net_raw, cap_net_admin, cap_bpf, cap_perfmon, permitted
#     only), so package, image and binary agree.
#
#   scripts/container-build.sh        # as root; CONTAINER_ENGINE=docker for Docker
#
# Tags localhost/metro:VERSION and prints that name on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${CONTAINER_ENGINE:-podman}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}

for t in mmdebstrap setcap dpkg-deb "$ENGINE"; do
  command -v "$t" >/dev/null || { echo "container-build.sh: $t is missing (apt-get install mmdebstrap libcap2-bin podman)" >&2; exit 1; }
done

DEB=$(scripts/package.sh)
CTX=target/container
rm -rf "$CTX"
mkdir -p "$CTX/pkg"
dpkg-deb -x "$DEB" "$CTX/pkg"
cp "$CTX/pkg/usr/bin/metro" "$CTX/metro"
cp "$CTX/pkg/etc/metro/metro.yaml" "$CTX/metro.yaml"
rm -rf "$CTX/pkg"
# As the package's postinst: permitted only (metro raises what the container grants).
setcap cap_net_raw,cap_net_admin,cap_bpf,cap_perfmon+p "$CTX/metro"
cp deploy/container/Containerfile deploy/container/passwd deploy/container/group \
  deploy/container/nsswitch.conf "$CTX/"

# The base: documentation, locales and iconv modules left out (metro needs none).
mmdebstrap --quiet --variant=extract --include=libpcap0.8 \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/lib/*/gconv/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  "$SUITE" "$CTX/rootfs.tar" \
  "deb $MIRROR/debian $SUITE main" "deb $MIRROR/debian $SUITE-updates main" \
  "deb $MIRROR/debian-security $SUITE-security main" >&2

# "metro 0.1.0 (commit abc, built 2026-12-01)": the labels repeat what the binary says.
LINE=$("$CTX/metro" --version)
VERSION=$(sed -E 's/^metro ([^ ]+) .*/\1/' <<<"$LINE")
REVISION=$(sed -E 's/.*\(commit ([^,]+),.*/\1/' <<<"$LINE")
CREATED=$(sed -E 's/.*built ([0-9-]+)\)$/\1/' <<<"$LINE")
IMAGE=localhost/metro:$VERSION
"$ENGINE" build --quiet --layers=false -f "$CTX/Containerfile" -t "$IMAGE" \
  --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" --build-arg CREATED="$CREATED" \
  "$CTX" >&2
echo "$IMAGE"
