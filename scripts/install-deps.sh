#!/usr/bin/env bash
# Installs every system tool imgbuild's tests and benchmarks use (Debian 12),
# and the few oracles that only PyPI has, pinned, in a venv of Debian's python3
# (/opt/imgbuild/pypi, never the system's site-packages) linked into /usr/local/bin.
#   scripts/install-deps.sh          install what is missing (as root)
#   scripts/install-deps.sh --check  exit 1 and list what is missing (any user)
# qemu 10 comes from bookworm-backports: plain bookworm's qemu-system-x86 would
# replace qemu-img 10 with 7.2. The mirror is read from the existing apt source,
# never written here.
set -euo pipefail
# From bookworm-backports.
backports=(qemu-system-x86 qemu-utils e2fsprogs)
# From bookworm.
packages=(ovmf mmdebstrap libarchive13 libvhdi-utils libqcow-utils
  dosfstools mtools gdisk systemd-boot-efi acl cpio zstd xz-utils hyperfine time
  systemd passwd util-linux file tar python3
  # libvhdi's Python bindings: the data oracle for 4096-byte-sector VHDX (formats/tests/it/vhdx_oracle.rs)
  python3-libvhdi
  # tree::drivers tests: lsinitramfs (oracle) and lz4 -l (lz4 legacy initramfs writer)
  initramfs-tools-core lz4
  # GRUB's own grub-mkimage and modules: the oracle for our i386-pc core image
  grub-common grub-pc-bin
  # the KubeVirt containerDisk's oracles: skopeo reads and pushes the OCI
  # archive to a registry the test starts on 127.0.0.1
  skopeo docker-registry
  # the venv the PyPI oracles below live in
  python3-venv)
# From PyPI (pip in the venv), each with the commands it puts on PATH.
# cot, the Common OVF Tool: an OVF/OVA reader independent of VMware's, the
# OVA's oracle (formats/tests/it/package_oracle.rs; it exits 0 even when it
# reports ERRORs, so the tests read its output)
pypi=(cot==2.2.1)
pypi_commands=(cot)
venv=/opt/imgbuild/pypi

# The PyPI packages not installed at their pinned versions, and the commands
# not linked into /usr/local/bin.
missing_pypi() {
  local p c
  for p in "${pypi[@]}"; do
    [ "$("$venv/bin/pip" show "${p%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" = "${p#*==}" ] || echo "$p(PyPI)"
  done
  for c in "${pypi_commands[@]}"; do
    [ "$(readlink /usr/local/bin/"$c")" = "$venv/bin/$c" ] || echo "/usr/local/bin/$c"
  done
}

missing_apt() {
  local p
  for p in "${backports[@]}" "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || echo "$p"
  done
  # qemu-img 10 (backports), not bookworm's 7.2.
  if command -v qemu-img >/dev/null; then
    v=$(qemu-img --version | sed -n '1s/^qemu-img version \([0-9]*\).*/\1/p')
    [ "${v:-0}" -ge 10 ] || echo "qemu-utils(>=10, bookworm-backports)"
  fi
}

missing() {
  missing_apt
  missing_pypi
}

if [ "${1:-}" = --check ]; then
  m=$(missing)
  [ -z "$m" ] && exit 0
  echo "$m" | tr '\n' ' '; echo
  exit 1
fi
if [ -z "$(missing)" ]; then
  echo "install-deps.sh: every tool is installed"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (missing: $(missing | tr '\n' ' '))" >&2; exit 1; }
src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/imgbuild-backports.sources
if [ ! -f "$bp" ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$bp"
fi
if [ -n "$(missing_apt)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -t bookworm-backports "${backports[@]}" >/dev/null
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
if [ -n "$(missing_pypi)" ]; then
  [ -x "$venv/bin/pip" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${pypi[@]}"
  for c in "${pypi_commands[@]}"; do ln -sfn "$venv/bin/$c" /usr/local/bin/"$c"; done
fi
qemu-img --version | sed -n 1p   # not head: a SIGPIPE would fail under pipefail
mke2fs -V 2>&1 | sed -n 1p
cot --version 2>&1 | sed -n 1p
