#!/usr/bin/env bash
# What TLS costs a client of the router, measured in one run: one inference instance,
# two routers in front of it (one plaintext, one serving TLS with a certificate made
# here), and llmbench sending the same load of simple prompts through each, alternating
# (--compare-rounds), cache bypassed.  Prints llmbench's report: TTFT, end to end and
# requests/s of the TLS router against the plaintext one.
#
#   bash tools/tlsbench.sh [BUILD_DIR] [llmbench flags...]
#
# Uses the quickstart's small demo model when it exists ($LLMSERVE_RUN_DIR, default
# /tmp/llmserve-quickstart), else makes one (stories15M shape) in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
for t in llmserve-router llmserve-inference llmserve-modelmaker llmbench; do
  [ -n "$(find "$build" -name "$t" -type f -perm -u+x 2>/dev/null | head -1)" ] || {
    echo "tlsbench: $t not built in $build (run: cmake --build $build)" >&2
    exit 1
  }
done
bin() { find "$build" -name "$1" -type f -perm -u+x | head -1; }

tmp=$(mktemp -d /tmp/llmserve-tlsbench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

run=${LLMSERVE_RUN_DIR:-/tmp/llmserve-quickstart}
model=$run/small.bin
tok=$run/tok.bin
if [ ! -f "$model" ] || [ ! -f "$tok" ]; then
  model=$tmp/small.bin
  tok=$tmp/tok.bin
  "$(bin llmserve-modelmaker)" --preset stories15M --seed 1 --out "$model" --tokenizer-out "$tok" \
    2>/dev/null
fi

bash tools/make-certs.sh "$tmp" --days 1

# start NAME ARGS...: runs it in the background and sets $port once it is SERVING.
start() {
  local name=$1
  shift
  LLMSERVE_LOG_LEVEL=warn "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q '^SERVING$' "$tmp/$name.out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$tmp/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  port=$(sed -n 's/^LISTENING port=//p' "$tmp/$name.out")
}

start inference "$(bin llmserve-inference)" --listen 127.0.0.1:0 --model "$model" \
  --tokenizer "$tok" --pool small
inst=$port
start plain "$(bin llmserve-router)" --listen 127.0.0.1:0 --pool "small=127.0.0.1:$inst" --tiers ""
plain=$port
start tls "$(bin llmserve-router)" --listen 127.0.0.1:0 --pool "small=127.0.0.1:$inst" --tiers "" \
  --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key"
tls=$port

"$(bin llmbench)" --router "127.0.0.1:$plain" --tls-router "localhost:$tls" --tls-ca "$tmp/ca.pem" \
  --requests 0 --no-progress "$@"
