#!/usr/bin/env bash
# Benchmarks llmserve-cache on loopback: starts memcached and two cache services on free
# ports (one with the default L1, one with --l1-bytes 0 so that hits come from
# memcached), runs llmserve-cachebench against each, and stops everything it started.
# Usage: tools/cachebench/run.sh [build dir, default build] [extra cachebench flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
shift || true
bin=$build/services/cache/llmserve-cache
bench=$build/tools/cachebench/llmserve-cachebench
[ -x "$bin" ] && [ -x "$bench" ] || { echo "build llmserve-cache and llmserve-cachebench in $build first" >&2; exit 1; }

pids=()
tmp=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
memcached -l 127.0.0.1 -p "$port" -U 0 -u "$(id -un)" -m 256 -t 2 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
kill -0 "${pids[0]}" 2>/dev/null || { echo "memcached did not start" >&2; exit 1; }

started=
start_cache() { # name, extra flags...; sets $started to the port
  local name=$1; shift
  LLMSERVE_LOG_LEVEL=warn "$bin" --listen 127.0.0.1:0 --rpc-threads 1 --memcached "--SERVER=127.0.0.1:$port" "$@" >"$tmp/$name.out" &
  pids+=($!)
  for _ in $(seq 200); do grep -q '^SERVING$' "$tmp/$name.out" && break; sleep 0.05; done
  started=$(sed -n 's/^LISTENING port=//p' "$tmp/$name.out")
  [ -n "$started" ] || { echo "llmserve-cache ($name) did not start" >&2; exit 1; }
}
start_cache l1
with_l1=$started
start_cache nol1 --l1-bytes 0
no_l1=$started

echo "## L1 hits (default L1), one lookup in flight"
"$bench" --target "127.0.0.1:$with_l1" --phases l1 "$@"
echo "## memcached hits and misses (--l1-bytes 0), one lookup in flight"
"$bench" --target "127.0.0.1:$no_l1" --phases hit,miss "$@"
echo "## throughput: 4 streams x 16 in flight"
"$bench" --target "127.0.0.1:$with_l1" --phases l1 --streams 4 --window 16 "$@"
"$bench" --target "127.0.0.1:$no_l1" --phases hit,miss --streams 4 --window 16 "$@"
