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
# every process started goes into $run/pids (start runs in a command substitution's
# subshell, so a shell array would not see them)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT

start() { # NAME ARGS...: starts it, waits for SERVING, prints its port
    local name=$1
    shift
    "$@" >"$run/$name.log" 2>&1 &
    echo $! >>"$run/pids"
    for _ in $(seq 1 300); do
        grep -q '^SERVING$' "$run/$name.log" && { sed -n 's/^LISTENING port=//p' "$run/$name.log"; return; }
        sleep 0.1
    done
    echo "metricsbench: $name did not start:" >&2
    tail -5 "$run/$name.log" >&2
    exit 1
}

"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
mc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
memcached -l 127.0.0.1 -p "$mc_port" -U 0 -u "$(id -un)" -m 64 &
echo $! >>"$run/pids"
col=$(start collector "$B/services/metrics/llmserve-metrics" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0)
rep=(--metrics "127.0.0.1:$col")
inf() { exec "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 --model "$run/m.bin" \
    --tokenizer "$run/tok.bin" --pool small --cpu-threads 1 "$@"; }
# The control pair (both without reporting) shows how far two identical instances differ.
i_ctl=$(start inf-control inf)
i_off=$(start inf-off inf)
i_on=$(start inf-on inf "${rep[@]}")
cache=$(start cache "$B/services/cache/llmserve-cache" --listen 127.0.0.1:0 \
    --memcached "--SERVER=127.0.0.1:$mc_port" "${rep[@]}")
rt() { exec "$B/services/router/llmserve-router" --listen 127.0.0.1:0 --pool "small=127.0.0.1:$i_on" \
    --pool "large=127.0.0.1:$i_off" --cache "127.0.0.1:$cache" "$@"; }  # hinted small: large unused
r_on=$(start router-on rt "${rep[@]}")
r_off=$(start router-off rt)

bench() { # ROUTER-ADDR|none DIRECT-ADDR|-: prints "req/s ttft_p50_ms"
    local args=(--no-progress --streams "$STREAMS" --max-tokens "$MAX_TOKENS")
    if [ "$1" = none ]; then
        args+=(--router none --direct "127.0.0.1:$2" --direct-requests "$REQUESTS")
    else
        # the router's own comparison run: cache bypassed, the pool hinted
        args+=(--router "127.0.0.1:$1" --direct "127.0.0.1:$i_on" --direct-requests "$REQUESTS" --requests 0)
    fi
    "$B/tools/llmbench/llmbench" "${args[@]}" | awk -v want="$3" '
        /^== / {sec = ($0 ~ want)} sec && /^  TTFT/ {t = $3} sec && /^  throughput/ {r = $4}
        END {print r, t}'
}

ratios() { # LABEL: reads "on_rps on_ttft off_rps off_ttft" lines, prints per round and medians
    python3 -c '
import statistics, sys
label = sys.argv[1]
rps, ttft = [], []
for i, l in enumerate(sys.stdin):
    a, b, c, d = map(float, l.split())
    rps.append(a / c); ttft.append(b / d)
    print("  %s round %d: requests/s x%.3f, TTFT p50 x%.3f (on %.1f req/s %.2f ms, off %.1f req/s %.2f ms)"
          % (label, i + 1, rps[-1], ttft[-1], a, b, c, d))
print("  %s median: requests/s x%.3f, TTFT p50 x%.3f (reporting on / off)"
      % (label, statistics.median(rps), statistics.median(ttft)))' "$1"
}

echo "== reporting on / off, $ROUNDS rounds of $REQUESTS requests, $STREAMS streams, $MAX_TOKENS tokens"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        on=$(bench none "$i_on" "called directly"); off=$(bench none "$i_off" "called directly")
    else
        off=$(bench none "$i_off" "called directly"); on=$(bench none "$i_on" "called directly")
    fi
    echo "$on $off"
done | ratios inference
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        on=$(bench none "$i_ctl" "called directly"); off=$(bench none "$i_off" "called directly")
    else
        off=$(bench none "$i_off" "called directly"); on=$(bench none "$i_ctl" "called directly")
    fi
    echo "$on $off"
done | ratios "control (both off)"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        on=$(bench "$r_on" - "through the router"); off=$(bench "$r_off" - "through the router")
    else
        off=$(bench "$r_off" - "through the router"); on=$(bench "$r_on" - "through the router")
    fi
    echo "$on $off"
done | ratios router

echo "== collector ingestion on one core (a collector of its own, pinned with taskset)"
ing=$(start collector-1core taskset -c 0 "$B/services/metrics/llmserve-metrics" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --rpc-threads 1)
taskset -c 1 "$B/tools/ingestbench/llmserve-ingestbench" --target "127.0.0.1:$ing" --streams 4 \
    --seconds 5 | sed 's/^/  /'
