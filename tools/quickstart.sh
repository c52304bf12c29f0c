#!/usr/bin/env bash
# The main job: installs what is missing, builds, makes a small and a large demo model with
# the model maker, starts memcached, the cache service, two inference services and the
# router on loopback, streams demo answers through the router with llmctl, and leaves the
# suite running.
#
#   bash tools/quickstart.sh          start (or restart) the suite and stream a demo answer
#   bash tools/quickstart.sh secure   the same with mutual TLS between the services, TLS and
#                                     an API key on the router (certificates made with
#                                     openssl into $LLMSERVE_RUN_DIR/tls)
#   bash tools/quickstart.sh consul   the same with Consul discovery: every service registers
#                                     with the agent at $CONSUL_HTTP_ADDR, or, when that is
#                                     not set, with the stand-in agent of the tests
#                                     (tests/consul/standin.py) on base+300; the router finds
#                                     the pools, the cache and the collector there.  A plain
#                                     start with CONSUL_HTTP_ADDR set does the same with that
#                                     agent.
#   bash tools/quickstart.sh traces   the same with every service exporting traces: to the
#                                     endpoint $OTEL_EXPORTER_OTLP_ENDPOINT names (a Jaeger,
#                                     say), or, when that is not set, to the stand-in OTLP
#                                     receiver of the tests (tests/otlp/receiver.py) on
#                                     base+400, and prints one request's trace.  A plain start
#                                     with OTEL_EXPORTER_OTLP_ENDPOINT set exports there too.
#   bash tools/quickstart.sh stop     stop everything it started
#   bash tools/quickstart.sh status   show what is running
#
# Models: LLMSERVE_SMALL_PRESET (default stories15M, fp32) and LLMSERVE_LARGE_PRESET
# (default stories110M, int8 Q8_0 unless LLMSERVE_LARGE_QUANTIZE=none).
# Everything lives under $LLMSERVE_RUN_DIR (default /tmp/llmserve-quickstart): models,
# logs, pid files.  Ports (loopback only): router 7000, inference small 7001 / large 7002,
# cache 7100, metrics collector 7200 (gRPC) and 9464 (HTTP: status page, /metrics),
# memcached 11311; override with LLMSERVE_PORT_BASE (router = base, small = base+1,
# large = base+2, cache = base+100, collector = base+200), LLMSERVE_METRICS_HTTP_PORT and
# LLMSERVE_MEMCACHED_PORT.  Every service reports to the collector.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${LLMSERVE_RUN_DIR:-/tmp/llmserve-quickstart}
BASE=${LLMSERVE_PORT_BASE:-7000}
ROUTER_PORT=$BASE
SMALL_PORT=$((BASE + 1))
LARGE_PORT=$((BASE + 2))
CACHE_PORT=$((BASE + 100))
METRICS_PORT=$((BASE + 200))
METRICS_HTTP_PORT=${LLMSERVE_METRICS_HTTP_PORT:-9464}
MC_PORT=${LLMSERVE_MEMCACHED_PORT:-11311}
SMALL_PRESET=${LLMSERVE_SMALL_PRESET:-stories15M}
LARGE_PRESET=${LLMSERVE_LARGE_PRESET:-stories110M}
# The large model is int8 (Q8_0) by default: on the CPU it decodes 2-3x faster than fp32
# and takes a quarter of the memory.  LLMSERVE_LARGE_QUANTIZE=none makes it fp32.
LARGE_QUANTIZE=${LLMSERVE_LARGE_QUANTIZE:-q8_0}
BUILD=${LLMSERVE_BUILD_DIR:-build}
SERVICES="router inference-large inference-small cache metrics memcached consul-standin otlp-receiver"

stop_suite() {
  local any=0
  for name in $SERVICES; do
    local f="$RUN/$name.pid"
    [ -f "$f" ] || continue
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "quickstart: $name (pid $pid) did not stop in 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      echo "quickstart: stopped $name (pid $pid)"
      any=1
    fi
    rm -f "$f"
  done
  [ "$any" = 1 ] || echo "quickstart: nothing was running"
}

status_suite() {
  for name in $SERVICES; do
    local f="$RUN/$name.pid"
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
      echo "running  $name (pid $(cat "$f"), log $RUN/$name.log)"
    else
      echo "stopped  $name"
    fi
  done
}

SECURE=0
CONSUL=0
[ -n "${CONSUL_HTTP_ADDR:-}" ] && CONSUL=1
TRACES=0
case "${1:-start}" in
  stop) stop_suite; exit 0 ;;
  status) status_suite; exit 0 ;;
  start) ;;
  secure) SECURE=1 ;;
  consul) CONSUL=1 ;;
  traces) TRACES=1 ;;
  *) echo "usage: bash tools/quickstart.sh [start|secure|consul|traces|stop|status]" >&2; exit 2 ;;
esac
CONSUL_PORT=$((BASE + 300))
OTLP_PORT=$((BASE + 400))

# make_tls DIR: certificates (tools/make-certs.sh: a CA, one server certificate for every
# service, the router's client certificate) and two API keys (one for any tenant, one
# bound to the tenant "demo").  Kept while valid for a day more.
make_tls() {
  local d=$1
  if [ -f "$d/server.pem" ] && openssl x509 -checkend 86400 -noout -in "$d/server.pem" >/dev/null 2>&1 &&
     [ -f "$d/api-keys" ]; then
    return 0
  fi
  bash tools/make-certs.sh "$d" --days 30
  (
    umask 077
    {
      echo "# llmserve quickstart API keys: KEY [TENANT]"
      openssl rand -hex 24
      echo "$(openssl rand -hex 24) demo"
    } >"$d/api-keys"
  )
}

bash tools/install-deps.sh
bash tools/build.sh "$BUILD"

mkdir -p "$RUN"
[ -n "$(ls "$RUN"/*.pid 2>/dev/null)" ] && { echo "== stopping the previous run"; stop_suite; }

echo "== demo models (random weights: the text is noise, the serving path is real)"
mm="$BUILD/tools/modelmaker/llmserve-modelmaker"
[ "$RUN/small.bin" -nt "$mm" ] || "$mm" --preset "$SMALL_PRESET" --seed 1 --out "$RUN/small.bin" \
  --tokenizer-out "$RUN/tok.bin" 2>>"$RUN/modelmaker.log"
case "$LARGE_QUANTIZE" in
  none | q8_0) ;;
  *) echo "LLMSERVE_LARGE_QUANTIZE must be none or q8_0, not '$LARGE_QUANTIZE'" >&2; exit 2 ;;
esac
large="$RUN/large-$LARGE_QUANTIZE.bin"
[ "$large" -nt "$mm" ] || "$mm" --preset "$LARGE_PRESET" --seed 2 --quantize "$LARGE_QUANTIZE" \
  --out "$large" 2>>"$RUN/modelmaker.log"
ls -l "$RUN"/small.bin "$large" | awk '{print "   " $5 " bytes  " $9}'

# start NAME COMMAND...: runs it detached (it outlives this script), logs to $RUN/NAME.log.
start() {
  local name=$1
  shift
  setsid nohup "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# wait_listening NAME: the service is ready (after "LISTENING port=N" it printed "SERVING").
wait_listening() {
  local name=$1
  for _ in $(seq 1 600); do
    grep -q "^SERVING$" "$RUN/$name.log" 2>/dev/null && return 0
    kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "quickstart: $name did not start; its log ($RUN/$name.log) ends with:" >&2
  tail -n 20 "$RUN/$name.log" >&2
  stop_suite
  exit 1
}

TLS_DIR="$RUN/tls"
server_tls=()
up_tls=()
router_tls=()
ctl_tls=()
if [ "$SECURE" = 1 ]; then
  echo "== certificates and API keys in $TLS_DIR"
  make_tls "$TLS_DIR"
  server_tls=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
              --tls-client-ca "$TLS_DIR/ca.pem")
  up_tls=(--upstream-tls-ca "$TLS_DIR/ca.pem" --upstream-tls-cert "$TLS_DIR/client.pem"
          --upstream-tls-key "$TLS_DIR/client.key")
  router_tls=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
              --upstream-tls-ca "$TLS_DIR/ca.pem" --upstream-tls-cert "$TLS_DIR/client.pem"
              --upstream-tls-key "$TLS_DIR/client.key" --api-keys "$TLS_DIR/api-keys")
  ctl_tls=(--tls-ca "$TLS_DIR/ca.pem")
  API_KEY=$(grep -v '^#' "$TLS_DIR/api-keys" | awk 'NF == 1 {print $1; exit}')
  DEMO_KEY=$(grep -v '^#' "$TLS_DIR/api-keys" | awk '$2 == "demo" {print $1; exit}')
  export LLMSERVE_API_KEY=$API_KEY
fi

echo "== starting the suite on loopback"
consul_on=()
if [ "$CONSUL" = 1 ]; then
  if [ -z "${CONSUL_HTTP_ADDR:-}" ]; then
    start consul-standin /usr/bin/python3 tests/consul/standin.py --listen "127.0.0.1:$CONSUL_PORT"
    wait_listening consul-standin
    export CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT"
    echo "   Consul: the stand-in agent at $CONSUL_HTTP_ADDR (no CONSUL_HTTP_ADDR was given)"
  else
    echo "   Consul: the agent at $CONSUL_HTTP_ADDR"
  fi
  # Checks every 2 s, so that the demo's instances pass at once.
  consul_on=(--consul on --consul-check-interval-ms 2000)
fi
RECEIVER=0
if [ "$TRACES" = 1 ]; then
  if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ]; then
    start otlp-receiver /usr/bin/python3 tests/otlp/receiver.py --listen "127.0.0.1:$OTLP_PORT"
    wait_listening otlp-receiver
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
    RECEIVER=1
    echo "   traces: the stand-in OTLP receiver at $OTEL_EXPORTER_OTLP_ENDPOINT"
  fi
  # Spans leave every 200 ms instead of every 5 s, so that the demo's trace is in at once.
  export OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-200}
fi
[ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ] &&
  echo "   traces: every service exports to ${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-$OTEL_EXPORTER_OTLP_ENDPOINT}"
mc_user=()
[ "$(id -u)" = 0 ] && mc_user=(-u root)
start memcached /usr/bin/memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 "${mc_user[@]}"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$MC_PORT") 2>/dev/null && break; sleep 0.1; done
start metrics "$BUILD/services/metrics/llmserve-metrics" --listen "127.0.0.1:$METRICS_PORT" \
  --http-listen "127.0.0.1:$METRICS_HTTP_PORT" "${server_tls[@]}" "${consul_on[@]}"
wait_listening metrics
report=(--metrics "127.0.0.1:$METRICS_PORT")
# With Consul every service finds the collector, the router the pools and the cache, there.
[ "$CONSUL" = 1 ] && report=(--metrics consul "${consul_on[@]}")
start cache "$BUILD/services/cache/llmserve-cache" --listen "127.0.0.1:$CACHE_PORT" \
  --memcached "--SERVER=127.0.0.1:$MC_PORT" "${server_tls[@]}" "${up_tls[@]}" "${report[@]}"
start inference-small "$BUILD/services/inference/llmserve-inference" \
  --listen "127.0.0.1:$SMALL_PORT" --model "$RUN/small.bin" --tokenizer "$RUN/tok.bin" \
  --pool small --model-name "$SMALL_PRESET-demo" --model-version v1 "${server_tls[@]}" \
  "${up_tls[@]}" "${report[@]}"
start inference-large "$BUILD/services/inference/llmserve-inference" \
  --listen "127.0.0.1:$LARGE_PORT" --model "$large" --tokenizer "$RUN/tok.bin" \
  --pool large --model-name "$LARGE_PRESET-demo" --model-version v1 "${server_tls[@]}" \
  "${up_tls[@]}" "${report[@]}"
wait_listening cache
wait_listening inference-small
wait_listening inference-large
routes=(--pool "small=127.0.0.1:$SMALL_PORT" --pool "large=127.0.0.1:$LARGE_PORT"
        --cache "127.0.0.1:$CACHE_PORT")
[ "$CONSUL" = 1 ] && routes=(--discovery consul)
start router "$BUILD/services/router/llmserve-router" --listen "127.0.0.1:$ROUTER_PORT" \
  "${routes[@]}" "${router_tls[@]}" "${report[@]}"
wait_listening router
echo "   memcached 127.0.0.1:$MC_PORT, cache 127.0.0.1:$CACHE_PORT, inference small" \
  "127.0.0.1:$SMALL_PORT and large 127.0.0.1:$LARGE_PORT, router 127.0.0.1:$ROUTER_PORT," \
  "metrics collector 127.0.0.1:$METRICS_PORT (HTTP $METRICS_HTTP_PORT)"

ctl="$BUILD/tools/llmctl/llmctl"
echo
echo "== a simple prompt: the router scores it low and sends it to the small pool"
"$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 48 --temperature 0.9 --seed 7 "Once upon a time, a little robot"
echo
echo "== the same prompt again: answered from the cache, same text"
"$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 48 --temperature 0.9 --seed 7 "Once upon a time, a little robot"
echo
echo "== a harder prompt (code, reasoning): the large pool"
"$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 24 --temperature 0.9 --seed 7 \
  "Explain step by step why this C loop is slow, prove the bound, and compare it with a fixed version: \`for (i = 0; i < n; i++) { s += a[i] * b[i]; }\`"
if [ "$TRACES" = 1 ]; then
  echo
  echo "== one request's trace: router, cache and inference spans under one trace id"
  trace_id=$("$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 16 --json \
    "Tell me about the trace of this request" | sed -n 's/.*"trace_id":"\([0-9a-f]*\)".*/\1/p')
  echo "   trace id $trace_id"
  if [ "$RECEIVER" = 1 ] && [ -n "$trace_id" ]; then
    sleep 1 # the services' next batches (every 200 ms)
    /usr/bin/python3 -c '
import json, sys, urllib.request
d = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
def show(n, depth):
    a = n["attributes"]
    ms = (n["end"] - n["start"]) / 1e6
    keys = ("llmserve.pool", "llmserve.cache.result", "llmserve.cache.tier", "gen_ai.usage.output_tokens")
    extra = " ".join("%s=%s" % (k.split(".")[-1], a[k]) for k in keys if k in a)
    print("   %s%-34s %-18s %8.2f ms  %s" % ("  " * depth, n["name"], n["service"], ms, extra))
    for c in n.get("children", []):
        show(c, depth + 1)
for r in d["roots"] + d["orphans"]:
    show(r, 0)' "http://127.0.0.1:$OTLP_PORT/_receiver/trace/$trace_id"
  else
    echo "   (look it up in Jaeger: http://localhost:16686/trace/$trace_id)"
  fi
fi
if [ "$SECURE" = 1 ]; then
  echo
  echo "== without an API key the router refuses the call (UNAUTHENTICATED), and says so"
  LLMSERVE_API_KEY= "$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 8 "Hello" || true
  echo
  echo "== plaintext against the TLS port fails cleanly"
  LLMSERVE_API_KEY= "$ctl" --router "127.0.0.1:$ROUTER_PORT" --timeout-ms 2000 --max-tokens 8 "Hello" || true
  echo
  echo "== a key bound to the tenant \"demo\": its answers are cached apart from everyone else's"
  LLMSERVE_API_KEY=$DEMO_KEY "$ctl" "${ctl_tls[@]}" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 48 \
    --temperature 0.9 --seed 7 "Once upon a time, a little robot"
  echo
  echo "The suite is running with mutual TLS between the services, TLS and API keys on the"
  echo "router (certificates and keys in $TLS_DIR; logs and pid files in $RUN). Try:"
  echo "   export LLMSERVE_API_KEY=$API_KEY"
  echo "   $ctl --tls-ca $TLS_DIR/ca.pem --router 127.0.0.1:$ROUTER_PORT \"your prompt\""
  echo "   $BUILD/tools/llmbench/llmbench --tls-ca $TLS_DIR/ca.pem --router 127.0.0.1:$ROUTER_PORT"
  echo "From any gRPC client: TLS to 127.0.0.1:$ROUTER_PORT trusting $TLS_DIR/ca.pem, and the"
  echo "metadata \"authorization: Bearer \$LLMSERVE_API_KEY\" on each call (health checks need none)."
  echo "Edit $TLS_DIR/api-keys and send SIGHUP to the router (pid $(cat "$RUN/router.pid")) to"
  echo "change the keys without a restart; certificates reload the same way."
else
  echo
  echo "The suite is still running (logs and pid files in $RUN). Try:"
  echo "   $ctl --router 127.0.0.1:$ROUTER_PORT \"your prompt\""
  echo "   $ctl --router 127.0.0.1:$ROUTER_PORT --json --pool large \"your prompt\""
  echo "   $BUILD/tools/llmbench/llmbench --router 127.0.0.1:$ROUTER_PORT --direct 127.0.0.1:$SMALL_PORT --metrics 127.0.0.1:$METRICS_PORT"
  echo "The same suite with mutual TLS and API keys:  bash tools/quickstart.sh secure"
fi
echo "Live status page:  http://127.0.0.1:$METRICS_HTTP_PORT/   (Prometheus metrics:" \
  "http://127.0.0.1:$METRICS_HTTP_PORT/metrics; deploy/prometheus/prometheus.yml scrapes it)"
echo "Stop it with:  bash tools/quickstart.sh stop"
