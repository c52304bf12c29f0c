#!/usr/bin/env bash
# real_prometheus_test.sh - a real Prometheus (Debian's prometheus 2.42) scraping a
# running llmserve metrics collector with deploy/prometheus/prometheus.yml's scrape
# settings and a fast copy of deploy/prometheus/alerts.yml.
#
# By hand, against a collector that is already running (and optionally a router whose
# reports reach it):
#
#   bash tests/prometheus/real_prometheus_test.sh --collector 127.0.0.1:9464 \
#        [--router 127.0.0.1:7000] [--requests 40] [--port PORT] [--timeout 60] [--keep]
#
# It starts Prometheus on 127.0.0.1 (PORT, default a free one) with scrape_interval and
# evaluation_interval 1s, waits for /-/ready and the first scrape of the collector, and
# checks, printing PASS, FAIL or SKIP for each:
#   - the scrape of the collector succeeds (up{job="llmserve-metrics"} == 1);
#   - every alert rule loads and evaluates without error on the real series;
#   - the collector's `service` and `instance` labels survive the scrape
#     (honor_labels: no exported_instance, no llmserve_instance_up without service);
#   - with --router: the router is up in llmserve_instance_up, and after --requests
#     requests through it with llmbench (LLMSERVE_LLMBENCH_BIN, else llmbench on PATH,
#     else build/tools/llmbench/llmbench) llmserve_requests_total grows in Prometheus;
# then prints the alerts (pending and firing).  Exits 0 when no check failed.  With
# --keep Prometheus stays up and the script prints its URL and how to stop it.
#
# From another test (not run by ctest yet: it needs the collector and the services'
# reporting):
#
#   source tests/prometheus/real_prometheus_test.sh   # defines the rp_* functions only
#   rp_start 127.0.0.1:9464 || exit 1                 # sets RP_URL, RP_PID, RP_DIR
#   rp_query 'llmserve_instance_up'                   # one line a series: {labels} value
#   rp_wait 'sum(rate(llmserve_requests_total[10s])) > 0' 30 || echo "no traffic seen"
#   rp_wait_alert LlmserveTTFTHigh firing 60
#   rp_alerts                                         # name state {labels} value
#   rp_stop
#
# The fast rules are alerts.yml with every duration in minutes read as a number of
# seconds: `for: 5m` becomes `for: 5s`, `for: 1m` `for: 1s`; and every rate window
# `[Nm]` becomes `[2N s]` (`[5m]` -> `[10s]`: ten 1 s scrapes).  Thresholds and
# expressions are otherwise the same, and promtool checks the copy before Prometheus
# starts.  Nothing here fakes a result: every answer comes from the Prometheus it
# started, querying what it scraped from the collector.

RP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RP_DIR=
RP_PID=
RP_URL=
RP_KEEP_DIR=0

# The HTTP API client: python3's standard library, one subcommand a call.
_rp_py='
import json, sys, time, urllib.parse, urllib.request

def get(path, params=None):
    url = sys.argv[2] + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit("prometheus: %s: %s" % (path, body.get("error", body)))
    return body["data"]

def labels(m):
    return "{" + ",".join("%s=\"%s\"" % (k, v) for k, v in sorted(m.items())) + "}"

def query(expr):
    data = get("/api/v1/query", {"query": expr})
    if data["resultType"] == "scalar":
        return [({}, data["result"][1])]
    return [(s["metric"], s["value"][1]) for s in data["result"]]

cmd = sys.argv[1]
if cmd == "query":
    for m, v in query(sys.argv[3]):
        print(labels(m), v)
elif cmd == "value":
    for m, v in query(sys.argv[3])[:1]:
        print(v)
elif cmd == "query_json":
    print(json.dumps(get("/api/v1/query", {"query": sys.argv[3]})))
elif cmd == "wait":
    expr, deadline = sys.argv[3], time.monotonic() + float(sys.argv[4])
    while True:
        try:
            if query(expr):
                sys.exit(0)
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.5)
elif cmd == "alerts":
    for a in get("/api/v1/alerts")["alerts"]:
        m = dict(a["labels"])
        name = m.pop("alertname", "?")
        print(name, a["state"], labels(m), a.get("value", ""))
elif cmd == "wait_alert":
    name, state, deadline = sys.argv[3], sys.argv[4], time.monotonic() + float(sys.argv[5])
    while True:
        for a in get("/api/v1/alerts")["alerts"]:
            if a["labels"].get("alertname") == name and a["state"] == state:
                sys.exit(0)
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.5)
elif cmd == "targets":
    for t in get("/api/v1/targets")["activeTargets"]:
        print(t["scrapeUrl"], t["health"], t.get("lastError", "") or "-")
elif cmd == "rules":
    for g in get("/api/v1/rules")["groups"]:
        for r in g["rules"]:
            print(g["name"], r["name"], r["health"], r.get("lastError", "") or "-")
elif cmd == "ready":
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        try:
            with urllib.request.urlopen(sys.argv[2] + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    sys.exit(0)
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.2)
else:
    raise SystemExit("unknown command " + cmd)
'

_rp_api() {
    python3 -c "$_rp_py" "$1" "$RP_URL" "${@:2}"
}

# rp_query EXPR: the instant query's result, one line a series ("{labels} value").
rp_query() { _rp_api query "$1"; }
# rp_value EXPR: the value of the result's first series, nothing when it has none.
rp_value() { _rp_api value "$1"; }
# rp_query_json EXPR: the API's data object as JSON.
rp_query_json() { _rp_api query_json "$1"; }
# rp_wait EXPR SECONDS: returns 0 once EXPR has a result, 1 after SECONDS.
rp_wait() { _rp_api wait "$1" "$2"; }
# rp_alerts: one line an alert: "name state {labels} value".
rp_alerts() { _rp_api alerts; }
# rp_wait_alert NAME STATE SECONDS: returns 0 once NAME is in STATE (pending|firing).
rp_wait_alert() { _rp_api wait_alert "$1" "$2" "$3"; }
# rp_rules: one line a rule: "group name health last_error".
rp_rules() { _rp_api rules; }
# rp_targets: one line a scrape target: "url health last_error".
rp_targets() { _rp_api targets; }

# rp_fast_rules SRC DST: alerts.yml with short durations (see the top of this file).
rp_fast_rules() {
    python3 - "$1" "$2" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"^(\s*for:\s*)(\d+)m\s*$", lambda m: "%s%ss" % (m.group(1), m.group(2)),
              text, flags=re.M)
text = re.sub(r"\[(\d+)m\]", lambda m: "[%ds]" % (2 * int(m.group(1))), text)
open(sys.argv[2], "w").write(text)
EOF
}

# rp_start COLLECTOR [PORT]: starts Prometheus scraping http://COLLECTOR/metrics, waits
# until it is ready and has scraped the collector once (whatever the scrape's result:
# check up{job="llmserve-metrics"}).  Sets RP_DIR (its files and log), RP_PID, RP_URL.
# Returns 1, with the log's tail on stderr, when it fails.  RP_TIMEOUT (default 60 s)
# bounds each wait.
rp_start() {
    local collector=$1 port=${2:-} timeout=${RP_TIMEOUT:-60}
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        echo "real_prometheus: prometheus or promtool not found (tools/install-deps.sh)" >&2
        return 1
    fi
    if [ -z "$RP_DIR" ]; then
        RP_DIR=$(mktemp -d /tmp/llmserve-prometheus.XXXXXX)
    else
        RP_KEEP_DIR=1
        mkdir -p "$RP_DIR"
    fi
    [ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RP_URL="http://127.0.0.1:$port"

    rp_fast_rules "$RP_REPO/deploy/prometheus/alerts.yml" "$RP_DIR/alerts.yml"
    sed -e 's/^\(  scrape_interval:\).*/\1 1s/' -e 's/^\(  evaluation_interval:\).*/\1 1s/' \
        -e "s/\"localhost:9464\"/\"$collector\"/" \
        "$RP_REPO/deploy/prometheus/prometheus.yml" >"$RP_DIR/prometheus.yml"
    if ! grep -q "\"$collector\"" "$RP_DIR/prometheus.yml" ||
        ! grep -q 'scrape_interval: 1s' "$RP_DIR/prometheus.yml"; then
        echo "real_prometheus: deploy/prometheus/prometheus.yml no longer has the lines this script rewrites" >&2
        return 1
    fi
    promtool check config "$RP_DIR/prometheus.yml" >"$RP_DIR/promtool.log" 2>&1 || {
        cat "$RP_DIR/promtool.log" >&2
        return 1
    }

    prometheus --config.file="$RP_DIR/prometheus.yml" --storage.tsdb.path="$RP_DIR/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$RP_DIR/prometheus.log" 2>&1 &
    RP_PID=$!
    if ! _rp_api ready "$timeout"; then
        echo "real_prometheus: not ready at $RP_URL after ${timeout}s; log:" >&2
        tail -20 "$RP_DIR/prometheus.log" >&2
        rp_stop
        return 1
    fi
    if ! rp_wait 'up{job="llmserve-metrics"}' "$timeout"; then
        echo "real_prometheus: no scrape of $collector after ${timeout}s; log:" >&2
        tail -20 "$RP_DIR/prometheus.log" >&2
        rp_stop
        return 1
    fi
}

# rp_stop: stops the Prometheus rp_start started and removes its files (unless RP_DIR
# was given).  Safe to call twice.
rp_stop() {
    if [ -n "$RP_PID" ]; then
        kill "$RP_PID" 2>/dev/null
        wait "$RP_PID" 2>/dev/null
        RP_PID=
    fi
    if [ -n "$RP_DIR" ] && [ "$RP_KEEP_DIR" = 0 ]; then
        rm -rf "$RP_DIR"
        RP_DIR=
    fi
}

# ---- standalone ---------------------------------------------------------------------

_rp_failed=0
_rp_check() { # PASS|FAIL|SKIP message
    echo "$1  $2"
    [ "$1" = FAIL ] && _rp_failed=1
    return 0
}

_rp_llmbench() {
    local b
    for b in "${LLMSERVE_LLMBENCH_BIN:-}" "$(command -v llmbench)" "$RP_REPO/build/tools/llmbench/llmbench"; do
        [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
    done
    return 1
}

_rp_main() {
    local collector='' router='' port='' requests=40 keep=0
    while [ $# -gt 0 ]; do
        case $1 in
        --collector) collector=$2; shift 2 ;;
        --router) router=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --timeout) RP_TIMEOUT=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; return 0 ;;
        *) echo "real_prometheus: unknown argument $1 (--help)" >&2; return 2 ;;
        esac
    done
    [ -n "$collector" ] || { echo "real_prometheus: --collector HOST:PORT is required" >&2; return 2; }
    local timeout=${RP_TIMEOUT:-60}

    [ "$keep" = 1 ] || trap rp_stop EXIT
    rp_start "$collector" "$port" || return 1
    echo "prometheus at $RP_URL (pid $RP_PID, files in $RP_DIR), scraping http://$collector/metrics"

    if rp_wait 'up{job="llmserve-metrics"} == 1' 5; then
        _rp_check PASS "collector scraped (up == 1)"
    else
        _rp_check FAIL "collector not scraped: $(rp_targets | tr '\n' ' ')"
    fi

    # Two evaluations at 1 s, so every rule has run at least once on what was scraped.
    sleep 2.5
    local rules bad want
    rules=$(rp_rules)
    bad=$(echo "$rules" | awk '$3 != "ok"')
    want=$(grep -c '^ *- alert:' "$RP_REPO/deploy/prometheus/alerts.yml")
    if [ "$(echo "$rules" | grep -c '^llmserve ')" = "$want" ] && [ -z "$bad" ]; then
        _rp_check PASS "$want rules loaded and evaluate without error"
    else
        _rp_check FAIL "rules: $(echo "$rules" | tr '\n' ';')"
    fi

    if [ -n "$(rp_query 'llmserve_instance_up')" ]; then
        if [ -z "$(rp_query 'llmserve_instance_up{service=""} or {exported_instance!=""}')" ]; then
            _rp_check PASS "the collector's service and instance labels kept: $(rp_query 'llmserve_instance_up' | tr '\n' ' ')"
        else
            _rp_check FAIL "labels lost in the scrape: $(rp_query 'llmserve_instance_up{service=""} or {exported_instance!=""}' | head -5 | tr '\n' ' ')"
        fi
    else
        _rp_check SKIP "labels: no instance has reported to the collector (no llmserve_instance_up)"
    fi

    if [ -n "$router" ]; then
        if rp_wait 'llmserve_instance_up{service="router"} == 1' "$timeout"; then
            _rp_check PASS "router up: $(rp_query 'llmserve_instance_up{service="router"}' | tr '\n' ' ')"
        else
            _rp_check FAIL "no llmserve_instance_up{service=\"router\"} == 1 after ${timeout}s"
        fi
        local bench before sent='sum(llmserve_requests_total{service="router"})'
        if bench=$(_rp_llmbench); then
            # The router's requests counted before and after: they must grow by at least
            # what llmbench sent (more if someone else uses the router meanwhile).
            before=$(rp_value "$sent")
            if "$bench" --router "$router" --requests "$requests" --streams 4 --max-tokens 8 \
                --no-progress >"$RP_DIR/llmbench.log" 2>&1; then
                if rp_wait "$sent - ${before:-0} >= $requests" "$timeout"; then
                    _rp_check PASS "$requests requests through $router counted (${before:-0} before, $(rp_value "$sent") after)"
                    echo "      by pool, code, cache: $(rp_query 'sum by (pool, code, cache) (llmserve_requests_total{service="router"})' | tr '\n' ' ')"
                    echo "      TTFT p95 by pool (10s): $(rp_query 'histogram_quantile(0.95, sum by (le, pool) (rate(llmserve_ttft_seconds_bucket[10s])))' | tr '\n' ' ')"
                else
                    _rp_check FAIL "$requests requests through $router, but $sent went from ${before:-none} to $(rp_value "$sent" || true) within ${timeout}s"
                fi
            else
                _rp_check FAIL "llmbench against $router failed: $(tail -3 "$RP_DIR/llmbench.log" | tr '\n' ' ')"
            fi
        else
            _rp_check SKIP "traffic: no llmbench (set LLMSERVE_LLMBENCH_BIN)"
        fi
    fi

    echo "alerts (fast rules):"
    rp_alerts | sed 's/^/  /'
    if [ "$keep" = 1 ]; then
        echo "prometheus left running: $RP_URL, stop it with: kill $RP_PID; rm -rf $RP_DIR"
    fi
    return "$_rp_failed"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    _rp_main "$@"
    exit $?
fi
