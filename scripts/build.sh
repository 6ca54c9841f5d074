#!/usr/bin/env bash
# The build command (README): installs the system tools a build needs when
# any is missing (scripts/install-deps.sh, as root or through sudo), builds
# imgbuild, and builds RECIPE into DIR (default ./out):
#   scripts/build.sh recipes/debian-bookworm.toml [-o DIR] [other imgbuild build options]
# A recipe with an mmdebstrap source bootstraps Debian once (cached under
# ~/.cache/imgbuild) and needs root (or user namespaces for mmdebstrap's
# unshare mode).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/build.sh RECIPE [-o DIR] [imgbuild build options]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
if ! missing=$("$here/scripts/install-deps.sh" --check); then
  if [ "$(id -u)" = 0 ]; then
    "$here/scripts/install-deps.sh"
  elif command -v sudo >/dev/null; then
    sudo "$here/scripts/install-deps.sh"
  else
    echo "build.sh: missing tools: $missing; run scripts/install-deps.sh as root" >&2
    exit 1
  fi
fi
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p imgbuild
exec "$here/target/release/imgbuild" build "$@"
