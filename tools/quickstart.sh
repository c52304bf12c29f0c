#!/usr/bin/env bash
# The main job: installs what is missing, builds, makes a small and a large demo model with
# the model maker, starts memcached, the cache service, two inference services and the
# router on loopback, streams demo answers through the router with llmctl, and leaves the
# suite running.
#
#   bash tools/quickstart.sh          start (or restart) the suite and stream a demo answer
#   bash tools/quickstart.sh stop     stop everything it started
#   bash tools/quickstart.sh status   show what is running
#
# Everything lives under $LLMSERVE_RUN_DIR (default /tmp/llmserve-quickstart): models,
# logs, pid files.  Ports (loopback only): router 7000, inference small 7001 / large 7002,
# cache 7100, memcached 11311; override with LLMSERVE_PORT_BASE (router = base, small =
# base+1, large = base+2, cache = base+100) and LLMSERVE_MEMCACHED_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${LLMSERVE_RUN_DIR:-/tmp/llmserve-quickstart}
BASE=${LLMSERVE_PORT_BASE:-7000}
ROUTER_PORT=$BASE
SMALL_PORT=$((BASE + 1))
LARGE_PORT=$((BASE + 2))
CACHE_PORT=$((BASE + 100))
MC_PORT=${LLMSERVE_MEMCACHED_PORT:-11311}
SMALL_PRESET=${LLMSERVE_SMALL_PRESET:-stories15M}
LARGE_PRESET=${LLMSERVE_LARGE_PRESET:-stories110M}
BUILD=${LLMSERVE_BUILD_DIR:-build}
SERVICES="router inference-large inference-small cache memcached"

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

case "${1:-start}" in
  stop) stop_suite; exit 0 ;;
  status) status_suite; exit 0 ;;
  start) ;;
  *) echo "usage: bash tools/quickstart.sh [start|stop|status]" >&2; exit 2 ;;
esac

bash tools/install-deps.sh
cuda=OFF
[ -x /usr/local/cuda/bin/nvcc ] && cuda=ON
echo "== build (release, CUDA $cuda)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMSERVE_CUDA=$cuda >/dev/null
cmake --build "$BUILD" -j"${LLMSERVE_JOBS:-2}" --target llmserve-router llmserve-cache \
  llmserve-inference llmserve-modelmaker llmctl llmbench

mkdir -p "$RUN"
[ -n "$(ls "$RUN"/*.pid 2>/dev/null)" ] && { echo "== stopping the previous run"; stop_suite; }

echo "== demo models (random weights: the text is noise, the serving path is real)"
mm="$BUILD/tools/modelmaker/llmserve-modelmaker"
[ "$RUN/small.bin" -nt "$mm" ] || "$mm" --preset "$SMALL_PRESET" --seed 1 --out "$RUN/small.bin" \
  --tokenizer-out "$RUN/tok.bin" 2>>"$RUN/modelmaker.log"
[ "$RUN/large.bin" -nt "$mm" ] || "$mm" --preset "$LARGE_PRESET" --seed 2 --out "$RUN/large.bin" \
  2>>"$RUN/modelmaker.log"
ls -l "$RUN"/small.bin "$RUN"/large.bin | awk '{print "   " $5 " bytes  " $9}'

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

echo "== starting the suite on loopback"
mc_user=()
[ "$(id -u)" = 0 ] && mc_user=(-u root)
start memcached /usr/bin/memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 "${mc_user[@]}"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$MC_PORT") 2>/dev/null && break; sleep 0.1; done
start cache "$BUILD/services/cache/llmserve-cache" --listen "127.0.0.1:$CACHE_PORT" \
  --memcached "--SERVER=127.0.0.1:$MC_PORT"
start inference-small "$BUILD/services/inference/llmserve-inference" \
  --listen "127.0.0.1:$SMALL_PORT" --model "$RUN/small.bin" --tokenizer "$RUN/tok.bin" \
  --pool small --model-name "$SMALL_PRESET-demo" --model-version v1
start inference-large "$BUILD/services/inference/llmserve-inference" \
  --listen "127.0.0.1:$LARGE_PORT" --model "$RUN/large.bin" --tokenizer "$RUN/tok.bin" \
  --pool large --model-name "$LARGE_PRESET-demo" --model-version v1
wait_listening cache
wait_listening inference-small
wait_listening inference-large
start router "$BUILD/services/router/llmserve-router" --listen "127.0.0.1:$ROUTER_PORT" \
  --pool "small=127.0.0.1:$SMALL_PORT" --pool "large=127.0.0.1:$LARGE_PORT" \
  --cache "127.0.0.1:$CACHE_PORT"
wait_listening router
echo "   memcached 127.0.0.1:$MC_PORT, cache 127.0.0.1:$CACHE_PORT, inference small" \
  "127.0.0.1:$SMALL_PORT and large 127.0.0.1:$LARGE_PORT, router 127.0.0.1:$ROUTER_PORT"

ctl="$BUILD/tools/llmctl/llmctl"
echo
echo "== a simple prompt: the router scores it low and sends it to the small pool"
"$ctl" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 48 --temperature 0.9 --seed 7 "Once upon a time, a little robot"
echo
echo "== the same prompt again: answered from the cache, same text"
"$ctl" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 48 --temperature 0.9 --seed 7 "Once upon a time, a little robot"
echo
echo "== a harder prompt (code, reasoning): the large pool"
"$ctl" --router "127.0.0.1:$ROUTER_PORT" --max-tokens 24 --temperature 0.9 --seed 7 \
  "Explain step by step why this C loop is slow, prove the bound, and compare it with a fixed version: \`for (i = 0; i < n; i++) { s += a[i] * b[i]; }\`"
echo
echo "The suite is still running (logs and pid files in $RUN). Try:"
echo "   $ctl --router 127.0.0.1:$ROUTER_PORT \"your prompt\""
echo "   $ctl --router 127.0.0.1:$ROUTER_PORT --json --pool large \"your prompt\""
echo "   $BUILD/tools/llmbench/llmbench --router 127.0.0.1:$ROUTER_PORT --direct 127.0.0.1:$SMALL_PORT"
echo "Stop it with:  bash tools/quickstart.sh stop"
