#!/usr/bin/env bash
# The test command (README): every unit, oracle and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --release "$@"
