#!/usr/bin/env bash
# Builds (once) the Debian bookworm rootfs tarball that the test suite and the
# boot tests read, and prints its path. Cached in
# ${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}/debian-bookworm-test.tar; delete it
# to rebuild. The mirror comes from this machine's apt sources, never a
# hard-coded host. Needs root (mmdebstrap --mode=root).
set -euo pipefail
cache=${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}
out=$cache/debian-bookworm-test.tar
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "debian-rootfs.sh: run as root (mmdebstrap --mode=root)" >&2; exit 1; }

mirror=
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ]; then
  # First URIs: line of a deb822 stanza that is not the security archive.
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$src")
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { if ($i !~ /security/) { print $i; exit } } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "debian-rootfs.sh: no mirror found in $src or /etc/apt/sources.list" >&2; exit 1; }

mkdir -p "$cache"
tmp=$(mktemp "$cache/.debian-bookworm-test.XXXXXX.tar")
trap 'rm -f "$tmp"' EXIT
# A fixed epoch makes mmdebstrap clamp file times and package installs reproducible.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} mmdebstrap --mode=root --variant=minbase \
  --include=linux-image-cloud-amd64,systemd-sysv,udev,systemd-boot-efi,login,passwd,sudo,iproute2,kmod,initramfs-tools \
  bookworm "$tmp" "deb $mirror bookworm main" >&2
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"
