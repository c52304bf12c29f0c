#!/usr/bin/env bash
# tools/tracebench.sh [BUILD_DIR] - what tracing costs, with every request sampled, against
# tracing off in the same run:
#
#   inference  two instances of the same model, one exporting spans, one not, each driven
#              directly (llmbench --router none --direct), alternating; and, as a
#              control, a third instance without tracing against the second (the noise
#              floor the on / off ratio must be read against);
#   router     two whole suites on tiny models (router, cache with its own memcached, a
#              small and a large instance), one with the OTEL_* environment set in every
#              process, one without, driven alternately through their routers with the
#              cache bypassed and the small pool hinted (every request runs the model);
#   suite      the same two suites under llmbench's mixed run (lookups, stores, both
#              pools; its prompts repeat from one run to the next, so after the first
#              round nearly every request is a cache hit: the cheapest requests, where
#              tracing weighs most).
#
# The spans go to llmserve-spanbench --sink, which reads each export and answers 200 {}
# without decoding it, so that the receiver takes little of the two cores the services
# share (a Jaeger would run elsewhere).
# Prints each round's ratio (on / off) of requests/s and TTFT p50, and the medians, then
# what the exporters did (spans exported and dropped, from their metrics on a collector).
# Environment: ROUNDS (3), REQUESTS (300), STREAMS (8), MAX_TOKENS (16).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
ROUNDS=${ROUNDS:-3} REQUESTS=${REQUESTS:-300} STREAMS=${STREAMS:-8} MAX_TOKENS=${MAX_TOKENS:-16}
run=$(mktemp -d /tmp/tracebench.XXXXXX)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=tracebench
. tools/benchlib.sh

"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
"$B/tools/modelmaker/llmserve-modelmaker" --preset tiny --seed 2 --out "$run/l.bin" >/dev/null 2>&1
rx=$(bench_start receiver "$B/tools/spanbench/llmserve-spanbench" --sink)
col=$(bench_start collector "$B/services/metrics/llmserve-metrics" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0)
col_http=$(sed -n 's/^HTTP port=//p' "$run/collector.log")
rep=(--metrics "127.0.0.1:$col")
# "on" processes run with the OTEL_* environment (every request sampled: no parent, the
# default parentbased_always_on); "off" ones without any.
# (bench_start runs each in a subshell of its own: the export and unset stay there)
on() {
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$rx"
    "$@"
}
off() {
    unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    "$@"
}
inf() { # MODEL POOL ARGS...
    local m=$1 p=$2
    shift 2
    exec "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 --model "$run/$m.bin" \
        --tokenizer "$run/tok.bin" --pool "$p" --cpu-threads 1 "${rep[@]}" "$@"
}

i_ctl=$(bench_start inf-control off inf m small)
i_off=$(bench_start inf-off off inf m small)
i_on=$(bench_start inf-on on inf m small)

suite() { # on|off: starts a whole suite, prints its router's port and its small instance's
    local mode=$1 mc
    mc=$(bench_free_port)
    # (its output away from the command substitution, which would wait for it to close)
    memcached -l 127.0.0.1 -p "$mc" -U 0 -u "$(id -un)" -m 64 >/dev/null 2>&1 &
    echo $! >>"$run/pids"
    local c s l
    c=$(bench_start "cache-$mode" "$mode" "$B/services/cache/llmserve-cache" --listen 127.0.0.1:0 \
        --memcached "--SERVER=127.0.0.1:$mc" "${rep[@]}")
    s=$(bench_start "small-$mode" "$mode" inf m small)
    l=$(bench_start "large-$mode" "$mode" inf l large)
    local r
    r=$(bench_start "router-$mode" "$mode" "$B/services/router/llmserve-router" --listen 127.0.0.1:0 \
        --pool "small=127.0.0.1:$s" --pool "large=127.0.0.1:$l" --cache "127.0.0.1:$c" "${rep[@]}")
    echo "$r $s"
}
read -r r_on s_on <<<"$(suite on)"
read -r r_off s_off <<<"$(suite off)"

echo "== tracing on (every request sampled) / off, $ROUNDS rounds of $REQUESTS requests, $STREAMS streams, $MAX_TOKENS tokens"
W="tracing on / off"
bench_rounds inference "$W" none "$i_on" none "$i_off" "called directly"
bench_rounds "control (both off)" "$W" none "$i_ctl" none "$i_off" "called directly"
bench_rounds router "$W" "$r_on" "$s_on" "$r_off" "$s_off" "through the router"
bench_rounds suite "$W" "$r_on" - "$r_off" - "mixed load"

sleep 6 # the exporters' last batches (OTEL_BSP_SCHEDULE_DELAY 5 s) and the last reports
echo "== the exporters (llmserve_trace_spans_* on the collector)"
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "http://127.0.0.1:$col_http/metrics" | grep '^llmserve_trace_spans' | sed 's/^/  /' || true
