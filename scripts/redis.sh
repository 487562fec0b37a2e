#!/usr/bin/env bash
# A private, throwaway Redis on 127.0.0.1 for the tests (no persistence).
#   scripts/redis.sh start DIR [PORT]   → prints the URL (redis://127.0.0.1:PORT)
#   scripts/redis.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?DIR}; port=${3:-56379}
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
      --protected-mode yes --daemonize yes --dir "$dir" \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 1 100); do
      if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        echo "$port" >"$dir/port"
        echo "redis://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.05
    done
    echo "redis-server did not answer on port $port" >&2; cat "$dir/redis.log" >&2 || true; exit 1
    ;;
  stop)
    if [ -f "$dir/redis.pid" ]; then
      pid=$(cat "$dir/redis.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      rm -f "$dir/redis.pid"
    fi
    ;;
  *) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
