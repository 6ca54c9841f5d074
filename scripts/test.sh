#!/usr/bin/env bash
# The test command (README). On a fresh Debian 12 machine it:
#   1. installs the system tools the tests use when any is missing
#      (scripts/install-deps.sh, as root or through sudo; else it says so),
#   2. checks formatting and clippy,
#   3. prepares the shared fixtures (the cached Debian rootfs, tests/fixtures.rs),
#   4. runs every test binary of the workspace, not stopping at the first
#      that fails (cargo test --no-fail-fast): the unit tests of each crate,
#      one integration binary per crate (tests/it, formats/tests/it: a
#      module per area) and the doc-tests,
#   5. prints a summary: tests run, passed, failed and skipped (each skip
#      with its reason), the tests per binary and per module, the tests
#      that ran longer than a minute and every QEMU boot.
# Outside CI a test may skip only for a missing tool, and says so in the
# summary; with CI=true a skip is a failure. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh --test it e2e::`: the e2e module of
# tests/it; `scripts/test.sh -p imgbuild-formats --test formats_it`).
# The report (cargo's output, skips, boots, summary) is in target/test-report/.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
report=$PWD/target/test-report
rm -rf "$report"
mkdir -p "$report"
export IMGBUILD_TEST_REPORT=$report
ci=${CI:-false}
step() { printf '\n== test.sh: %s ==\n' "$*"; }
die() { echo "test.sh: $*" >&2; exit 1; }

step "system tools"
if ! missing=$(scripts/install-deps.sh --check); then
  if [ "$(id -u)" = 0 ]; then
    scripts/install-deps.sh || die "scripts/install-deps.sh failed"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo scripts/install-deps.sh || die "sudo scripts/install-deps.sh failed"
  elif [ "$ci" = true ]; then
    die "missing: $missing; CI must run as root or with sudo"
  else
    echo "test.sh: missing tools: $missing"
    echo "test.sh: run 'sudo scripts/install-deps.sh' to test everything; the tests that need them are skipped and listed at the end"
  fi
else
  echo "every tool is installed"
fi

step "formatting and lints"
cargo fmt --all -- --check || die "cargo fmt --check failed: run cargo fmt --all"
cargo clippy --workspace --all-targets --quiet -- -D warnings || die "cargo clippy found warnings"

step "fixtures"
cargo test --release --test fixtures || die "preparing the fixtures failed"

step "cargo test --workspace --release --no-fail-fast $*"
cargo test --workspace --release --no-fail-fast "$@" 2>&1 | tee "$report/cargo-test.log"
rc=${PIPESTATUS[0]}

python3 scripts/test_summary.py "$report" "$rc" "$(( $(date +%s) - start ))" "$ci" | tee "$report/summary.txt"
exit "${PIPESTATUS[0]}"
