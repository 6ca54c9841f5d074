#!/usr/bin/env bash
# Installs every system tool imgbuild's tests and benchmarks use (Debian 12).
# qemu 10 comes from bookworm-backports: plain bookworm's qemu-system-x86 would
# replace qemu-img 10 with 7.2. The mirror is read from the existing apt source,
# never written here.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root" >&2; exit 1; }
src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/imgbuild-backports.sources
if [ ! -f "$bp" ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$bp"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-utils e2fsprogs >/dev/null
apt-get install -y -qq ovmf mmdebstrap libarchive13 libvhdi-utils libqcow-utils \
  dosfstools mtools gdisk systemd-boot-efi acl cpio zstd xz-utils hyperfine time \
  systemd passwd util-linux file >/dev/null
# libvhdi's Python bindings: the data oracle for 4096-byte-sector VHDX (formats/tests/vhdx_oracle.rs)
apt-get install -y -qq python3-libvhdi >/dev/null
# tree::drivers tests: lsinitramfs (oracle) and lz4 -l (lz4 legacy initramfs writer)
apt-get install -y -qq initramfs-tools-core lz4 >/dev/null
qemu-img --version | sed -n 1p   # not head: a SIGPIPE would fail under pipefail
mke2fs -V 2>&1 | sed -n 1p
