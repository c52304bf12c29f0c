#!/usr/bin/env bash
# tools/metricsbench.sh [BUILD_DIR] - what reporting to the metrics collector costs, with
# reporting on and off in the same run:
#
#   inference  two instances of the same model, one with --metrics, one without, each
#              driven directly (llmbench --router none --direct), alternating; and, as
#              a control, a third instance without --metrics against the second (two
#              instances differ a little even when both are the same: that is the
#              noise floor the on / off ratio must be read against);
#   router     two routers on the same cache and instances, one with --metrics, one
#              without, alternating (cache bypassed: every request reaches the model).
#
# Prints each round's ratio (on / off) of requests/s and TTFT p50, and the medians.  Then
# the collector's ingestion rate: llmserve-ingestbench's Report streams sending as fast
# as they are acked to a collector pinned to one core (taskset), samples per second.  Environment: ROUNDS (3), REQUESTS (300),
# STREAMS (8), MAX_TOKENS (16).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
ROUNDS=${ROUNDS:-3} REQUESTS=${REQUESTS:-300} STREAMS=${STREAMS:-8} MAX_TOKENS=${MAX_TOKENS:-16}
run=$(mktemp -d /tmp/metricsbench.XXXXXX)
# every process started goes into $run/pids (bench_start runs in a command substitution's
# subshell, so a shell array would not see them)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=metricsbench
. tools/benchlib.sh

"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
mc_port=$(bench_free_port)
memcached -l 127.0.0.1 -p "$mc_port" -U 0 -u "$(id -un)" -m 64 &
echo $! >>"$run/pids"
col=$(bench_start collector "$B/services/metrics/llmserve-metrics" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0)
rep=(--metrics "127.0.0.1:$col")
inf() { exec "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 --model "$run/m.bin" \
    --tokenizer "$run/tok.bin" --pool small --cpu-threads 1 "$@"; }
# The control pair (both without reporting) shows how far two identical instances differ.
i_ctl=$(bench_start inf-control inf)
i_off=$(bench_start inf-off inf)
i_on=$(bench_start inf-on inf "${rep[@]}")
cache=$(bench_start cache "$B/services/cache/llmserve-cache" --listen 127.0.0.1:0 \
    --memcached "--SERVER=127.0.0.1:$mc_port" "${rep[@]}")
rt() { exec "$B/services/router/llmserve-router" --listen 127.0.0.1:0 --pool "small=127.0.0.1:$i_on" \
    --pool "large=127.0.0.1:$i_off" --cache "127.0.0.1:$cache" "$@"; }  # hinted small: large unused
r_on=$(bench_start router-on rt "${rep[@]}")
r_off=$(bench_start router-off rt)

echo "== reporting on / off, $ROUNDS rounds of $REQUESTS requests, $STREAMS streams, $MAX_TOKENS tokens"
W="reporting on / off"
bench_rounds inference "$W" none "$i_on" none "$i_off" "called directly"
bench_rounds "control (both off)" "$W" none "$i_ctl" none "$i_off" "called directly"
bench_rounds router "$W" "$r_on" "$i_on" "$r_off" "$i_on" "through the router"

echo "== collector ingestion on one core (a collector of its own, pinned with taskset)"
ing=$(bench_start collector-1core taskset -c 0 "$B/services/metrics/llmserve-metrics" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --rpc-threads 1)
taskset -c 1 "$B/tools/ingestbench/llmserve-ingestbench" --target "127.0.0.1:$ing" --streams 4 \
    --seconds 5 | sed 's/^/  /'
