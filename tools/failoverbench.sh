#!/usr/bin/env bash
# tools/failoverbench.sh [BUILD_DIR] - what a client sees when an inference instance dies
# under load (issue 16's mid-stream failover): a router over THREE instances of the same
# model in one pool (tiny model, a classifier of its own, one CPU thread each), llmbench
# with STREAMS (16) concurrent streams and REQUESTS (2000) requests of MAX_TOKENS (256)
# tokens, the cache bypassed by unique prompts, in two runs per round:
#
#   calm    nothing happens to the instances;
#   killed  one instance is killed with SIGKILL KILL_AFTER_S (2) seconds into the run,
#           in the middle of answers (it is started again before the next run).
#
# Prints llmbench's report of each run (completed requests, errors and the first one,
# TTFT, inter-token latency and end-to-end percentiles) and the router's failovers so far.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
ROUNDS=${ROUNDS:-2} REQUESTS=${REQUESTS:-2000} STREAMS=${STREAMS:-16} MAX_TOKENS=${MAX_TOKENS:-256}
KILL_AFTER_S=${KILL_AFTER_S:-2}
run=$(mktemp -d /tmp/failoverbench.XXXXXX)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=failoverbench
. tools/benchlib.sh

"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --no-shared-classifier --seed 1 \
    --out "$run/m.bin" --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
instance() { # N: starts instance N on a fixed port, prints nothing
    bench_start "inference-$1" "$B/services/inference/llmserve-inference" \
        --listen "127.0.0.1:${ports[$1]}" --model "$run/m.bin" --tokenizer "$run/tok.bin" \
        --pool small --model-name tiny --cpu-threads 1 >/dev/null
    echo "$(tail -1 "$run/pids")" >"$run/inference-$1.pid"
}
ports=("$(bench_free_port)" "$(bench_free_port)" "$(bench_free_port)")
for i in 0 1 2; do instance "$i"; done
router=$(bench_start router "$B/services/router/llmserve-router" --listen 127.0.0.1:0 \
    --pool "small=127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" --tiers "")

one() { # LABEL KILL(0|1)
    echo "== $1"
    local killer=
    if [ "$2" = 1 ]; then
        (sleep "$KILL_AFTER_S"; kill -9 "$(cat "$run/inference-1.pid")") &
        killer=$!
    fi
    "$B/tools/llmbench/llmbench" --router "127.0.0.1:$router" --streams "$STREAMS" \
        --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --mix simple:1,complex:0,repeat:0 \
        --no-progress | grep -v "^$" || true
    local n
    n=$(grep -c 'failover id=' "$run/router.log" || true)
    echo "  failovers (router log, whole run so far): $n"
    if [ -n "$killer" ]; then
        wait "$killer" || true
        sleep 0.5
        instance 1
        sleep 2 # the router's health checks see it serving again
    fi
}

for r in $(seq 1 "$ROUNDS"); do
    echo "-- round $r"
    one calm 0
    one killed 1
done
