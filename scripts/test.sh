#!/usr/bin/env bash
# Second README command: set everything up, then run the whole test suite: formatting and
# lints, unit and integration tests of every crate, and the black-box tests that spawn the
# real `sluice` binary and talk to it with real clients (tuspy, tus-js-client, ffprobe).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
SLUICE_SETUP_TEST_CLIENTS=1 scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --workspace
echo "==> black-box tests"
SLUICE_BIN="$PWD/target/debug/sluice" .venv/bin/python -m pytest -q tests/e2e "$@"
echo "==> all tests passed in $(( $(date +%s) - start )) s"
