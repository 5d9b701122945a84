#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs (Debian 12, root), then
# formatting, lints, and every test (unit, loopback, network namespaces, real peers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Proxied connections cost two descriptors each; the load tests need more than 1024.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --no-fail-fast
