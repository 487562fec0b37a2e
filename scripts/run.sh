#!/usr/bin/env bash
# First README command: set everything up, then run `sluice serve` on the embedded default
# (SQLite, local tiers, in-process workers) in ./sluice-data. Extra arguments go to serve.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${CARGO_TARGET_DIR:-target}/release/sluice" serve "$@"
