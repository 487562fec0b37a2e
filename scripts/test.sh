#!/usr/bin/env bash
# Second README command: set everything up, then run the whole test suite: formatting and
# lints, unit and integration tests of every crate (on SQLite and on a real PostgreSQL that
# this script starts), and the black-box tests that spawn the real `sluice` binary and talk
# to it with real clients (tuspy, tus-js-client, ffprobe, ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# How many black-box tests the suite holds at least (raise it when adding tests).
MIN_BLACK_BOX_TESTS=195
SLUICE_SETUP_TEST_CLIENTS=1 scripts/setup.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A private PostgreSQL on loopback for the scale-out half of the tests, and a private Garage
# (S3-compatible store) for the S3 hot tier; both stopped on exit.
pg_dir=$(mktemp -d /tmp/sluice-test-pg.XXXXXX)
garage_dir=$(mktemp -d /tmp/sluice-test-garage.XXXXXX)
pg_port=$(free_port)
trap 'scripts/pg.sh stop "$pg_dir"; rm -rf "$pg_dir"; scripts/garage.sh stop "$garage_dir"; rm -rf "$garage_dir"' EXIT
echo "==> starting PostgreSQL on 127.0.0.1:$pg_port"
SLUICE_TEST_PG_URL=$(scripts/pg.sh start "$pg_dir" "$pg_port")
export SLUICE_TEST_PG_URL
echo "==> starting Garage"
garage_env=$(scripts/garage.sh start "$garage_dir" "$(free_port)" "$(free_port)" "$(free_port)")
set -a; eval "$garage_env"; set +a
echo "    S3 endpoint $SLUICE_TEST_S3_ENDPOINT, bucket $SLUICE_TEST_S3_BUCKET"

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --workspace
echo "==> black-box tests"
if [ $# -eq 0 ]; then
  # The whole suite: fewer tests collected than this means some went missing.
  export SLUICE_MIN_TESTS=$MIN_BLACK_BOX_TESTS
fi
SLUICE_BIN="$PWD/target/debug/sluice" .venv/bin/python -m pytest -q tests/e2e "$@"
if [ $# -eq 0 ]; then
  echo "==> all tests passed in $(( $(date +%s) - start )) s"
else
  echo "==> filtered run passed (pytest arguments: $*); this is not the whole suite"
fi
