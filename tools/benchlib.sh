# tools/benchlib.sh - what metricsbench.sh and tracebench.sh share: starting the suite's
# processes and comparing a feature on and off in alternating rounds of llmbench.
# Sourced; the caller sets B (build dir), run (a scratch dir, whose pids file the
# caller's EXIT trap kills), BENCH (its name, for messages), ROUNDS, REQUESTS, STREAMS,
# MAX_TOKENS.

bench_start() { # NAME CMD ARGS...: starts it, waits for SERVING, prints its port
    local name=$1
    shift
    "$@" >"$run/$name.log" 2>&1 &
    echo $! >>"$run/pids"
    for _ in $(seq 1 300); do
        grep -q '^SERVING$' "$run/$name.log" && { sed -n 's/^LISTENING port=//p' "$run/$name.log"; return; }
        sleep 0.1
    done
    echo "$BENCH: $name did not start:" >&2
    tail -5 "$run/$name.log" >&2
    exit 1
}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ROUTER-PORT|none INSTANCE-PORT|- SECTION: one llmbench run, printing "req/s ttft_p50_ms"
# of SECTION ("called directly": the instance alone; "through the router": the router's
# comparison run, cache bypassed, the pool hinted, with INSTANCE-PORT as its direct side;
# "mixed load", INSTANCE-PORT -: llmbench's mixed run through the router, cache and pools
# included).
bench_run() {
    local args=(--no-progress --streams "$STREAMS" --max-tokens "$MAX_TOKENS")
    if [ "$1" = none ]; then
        args+=(--router none --direct "127.0.0.1:$2" --direct-requests "$REQUESTS")
    elif [ "$2" = - ]; then
        args+=(--router "127.0.0.1:$1" --requests "$REQUESTS")
    else
        args+=(--router "127.0.0.1:$1" --direct "127.0.0.1:$2" --direct-requests "$REQUESTS" --requests 0)
    fi
    "$B/tools/llmbench/llmbench" "${args[@]}" | awk -v want="$3" '
        /^== / {sec = ($0 ~ want)} sec && /^  TTFT/ {t = $3} sec && /^  throughput/ {r = $4}
        END {print r, t}'
}

# LABEL WHAT: reads "on_rps on_ttft off_rps off_ttft" lines, prints each round's ratios and
# the medians (WHAT names the pair, e.g. "reporting on / off").
bench_ratios() {
    python3 -c '
import statistics, sys
label, what = sys.argv[1], sys.argv[2]
rps, ttft = [], []
for i, l in enumerate(sys.stdin):
    a, b, c, d = map(float, l.split())
    rps.append(a / c); ttft.append(b / d)
    print("  %s round %d: requests/s x%.3f, TTFT p50 x%.3f (on %.1f req/s %.2f ms, off %.1f req/s %.2f ms)"
          % (label, i + 1, rps[-1], ttft[-1], a, b, c, d))
print("  %s median: requests/s x%.3f, TTFT p50 x%.3f (%s)"
      % (label, statistics.median(rps), statistics.median(ttft), what))' "$1" "$2"
}

# LABEL WHAT ON-ROUTER ON-INSTANCE OFF-ROUTER OFF-INSTANCE SECTION: a warm-up run of each
# (not counted: first runs are slower, whichever side goes first), then ROUNDS
# alternating rounds (on first in odd rounds, off first in even ones), then their ratios.
bench_rounds() {
    local label=$1 what=$2 on_r=$3 on_i=$4 off_r=$5 off_i=$6 section=$7 on off
    bench_run "$on_r" "$on_i" "$section" >/dev/null
    bench_run "$off_r" "$off_i" "$section" >/dev/null
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then
            on=$(bench_run "$on_r" "$on_i" "$section"); off=$(bench_run "$off_r" "$off_i" "$section")
        else
            off=$(bench_run "$off_r" "$off_i" "$section"); on=$(bench_run "$on_r" "$on_i" "$section")
        fi
        echo "$on $off"
    done | bench_ratios "$label" "$what"
}
