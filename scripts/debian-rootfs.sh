#!/usr/bin/env bash
# Makes (once) the Debian bookworm rootfs tarball that the tests, the
# benchmarks and recipes/debian-tarball.toml read, and prints its path:
# ${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}/debian-bookworm-test-<hash>.tar.
# The one implementation is tests/support/rootfs.rs (through the
# tests/fixtures.rs program): mmdebstrap into a temporary .tar, checked, renamed
# into place; a cached tarball that is not whole (a directory, empty,
# truncated, a package missing) is rebuilt. The mirror comes from this
# machine's apt sources. mmdebstrap runs in root mode as root, else unshare mode.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --quiet --test fixtures
