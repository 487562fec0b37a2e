#!/usr/bin/env bash
# A private, throwaway Garage (S3-compatible object store) on 127.0.0.1 for the tests.
#   scripts/garage.sh install                     cargo install garage, unless `garage` is on PATH
#   scripts/garage.sh start DIR [S3_PORT [RPC_PORT [ADMIN_PORT]]]
#       one node (replication_factor 1, sqlite metadata), a bucket and a key; prints
#       KEY=VALUE lines for the tests: SLUICE_TEST_S3_ENDPOINT, _BUCKET, _REGION,
#       _ACCESS_KEY_ID, _SECRET_ACCESS_KEY (ports default to 3900, S3_PORT+1, S3_PORT+2)
#   scripts/garage.sh resume DIR                  start a stopped node again (same data, keys)
#   scripts/garage.sh stop DIR
set -euo pipefail
cmd=${1:?install|start|stop}
export PATH="$HOME/.cargo/bin:$PATH"

hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

case "$cmd" in
  install)
    if command -v garage >/dev/null; then exit 0; fi
    echo "==> building Garage (cargo install garage --locked; 10-20 min on 2 cores)" >&2
    nice -n 19 cargo install garage --locked
    ;;
  start)
    dir=${2:?DIR}; s3=${3:-3900}; rpc=${4:-$((s3 + 1))}; admin=${5:-$((s3 + 2))}
    command -v garage >/dev/null || { echo "garage not found: run scripts/garage.sh install" >&2; exit 1; }
    mkdir -p "$dir/meta" "$dir/data"
    dir=$(cd "$dir" && pwd)
    cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
    g() { garage -c "$dir/garage.toml" "$@"; }
    RUST_LOG=warn nohup garage -c "$dir/garage.toml" server >"$dir/log" 2>&1 &
    echo $! >"$dir/garage.pid"
    node=""
    for _ in $(seq 1 100); do
      node=$(g node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
      kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
      sleep 0.2
    done
    [ -n "$node" ] || { echo "garage did not start" >&2; cat "$dir/log" >&2; exit 1; }
    # `node id` reads the key from disk: the RPC listener may not be up yet. Wait for it
    # (the next commands talk to the node over RPC), and retry each of them briefly.
    for _ in $(seq 1 100); do
      g status >/dev/null 2>&1 && break
      kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
      sleep 0.2
    done
    retry() {
      for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
      "$@" >/dev/null
    }
    retry g layout assign -z dc1 -c 1G "$node"
    retry g layout apply --version 1
    bucket=sluice-test
    for _ in $(seq 1 100); do
      g bucket create "$bucket" >/dev/null 2>&1 && break
      sleep 0.2
    done
    g bucket info "$bucket" >/dev/null
    key_id="GK$(hex 12)"; secret=$(hex 32)
    g key import --yes -n sluice-test "$key_id" "$secret" >/dev/null
    g bucket allow --read --write --owner "$bucket" --key sluice-test >/dev/null
    echo "SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3"
    echo "SLUICE_TEST_S3_BUCKET=$bucket"
    echo "SLUICE_TEST_S3_REGION=garage"
    echo "SLUICE_TEST_S3_ACCESS_KEY_ID=$key_id"
    echo "SLUICE_TEST_S3_SECRET_ACCESS_KEY=$secret"
    ;;
  resume)
    # Start a stopped node again from its existing config, metadata and data (same bucket,
    # same keys): what a store outage followed by recovery looks like to Sluice.
    dir=${2:?DIR}
    [ -f "$dir/garage.toml" ] || { echo "no garage.toml in $dir: use start" >&2; exit 1; }
    RUST_LOG=warn nohup garage -c "$dir/garage.toml" server >>"$dir/log" 2>&1 &
    echo $! >"$dir/garage.pid"
    for _ in $(seq 1 100); do
      garage -c "$dir/garage.toml" status >/dev/null 2>&1 && break
      kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
      sleep 0.2
    done
    ;;
  stop)
    dir=${2:?DIR}
    if [ -f "$dir/garage.pid" ]; then
      pid=$(cat "$dir/garage.pid")
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/garage.pid"
    fi
    ;;
  *) echo "usage: $0 install | start DIR [S3_PORT [RPC_PORT [ADMIN_PORT]]] | resume DIR | stop DIR" >&2; exit 2 ;;
esac
