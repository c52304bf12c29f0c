#!/usr/bin/env bash
# tools/admitbench.sh [BUILD_DIR] [BEFORE_ROUTER] - a burst of 4x a pool's capacity through
# the router (issue 18): one inference instance of the tiny model holding 8 requests at
# once (--max-batch 4 --max-queue 4), llmbench with 32 concurrent streams (STREAMS) and
# 400 requests (REQUESTS) of 32 tokens, through
#
#   before  BEFORE_ROUTER, a router binary built from an earlier commit (skipped if not
#           given): what a burst got before the router queued;
#   after   BUILD_DIR's router with its defaults (queue of 512 per pool);
#   small   BUILD_DIR's router with --queue-max 8 (SMALL_QUEUE): the excess refused with
#           RESOURCE_EXHAUSTED and a retry hint.
#
# Each router runs ROUNDS times (2), alternating, on the same instance; prints llmbench's
# report of each run (completed requests, errors and the first one, TTFT p50/p95/p99).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
BEFORE=${2:-}
ROUNDS=${ROUNDS:-2} REQUESTS=${REQUESTS:-400} STREAMS=${STREAMS:-32} MAX_TOKENS=${MAX_TOKENS:-32}
SMALL_QUEUE=${SMALL_QUEUE:-8}
run=$(mktemp -d /tmp/admitbench.XXXXXX)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=admitbench
. tools/benchlib.sh

"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
inf=$(bench_start inference "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 \
    --model "$run/m.bin" --tokenizer "$run/tok.bin" --pool small --model-name tiny \
    --cpu-threads 1 --max-batch 4 --max-queue 4)

one() { # LABEL ROUTER-BINARY EXTRA-FLAGS...
    local label=$1 bin=$2
    shift 2
    local port
    port=$(bench_start "router-$label" "$bin" --listen 127.0.0.1:0 --pool "small=127.0.0.1:$inf" \
        --tiers "" "$@")
    echo "== $label ($bin $*)"
    "$B/tools/llmbench/llmbench" --router "127.0.0.1:$port" --streams "$STREAMS" \
        --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --mix simple:1,complex:0,repeat:0 \
        --no-progress | sed -n '/^  TTFT/p;/^  throughput/p;/first error/p' || true
    kill "$(tail -1 "$run/pids")" 2>/dev/null || true
    sleep 0.3
}

for r in $(seq 1 "$ROUNDS"); do
    echo "-- round $r"
    [ -n "$BEFORE" ] && one before "$BEFORE"
    one after "$B/services/router/llmserve-router"
    one small "$B/services/router/llmserve-router" --queue-max "$SMALL_QUEUE"
done
